//! conclave-node: the parts of the `conclave` binary that touch the operating system.

pub mod fs;
