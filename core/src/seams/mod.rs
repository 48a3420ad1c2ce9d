//! The seams: every way the engine touches the outside world. Production implements them on the
//! OS (`node/`), the simulator on turmoil (`sim/`); in-memory versions for tests live beside each
//! trait.

pub mod clock;
pub mod consensus;
pub mod storage;
pub mod transport;

pub use clock::Clock;
pub use consensus::Consensus;
pub use storage::{Storage, StorageJob, StorageProgress};
pub use transport::Transport;
