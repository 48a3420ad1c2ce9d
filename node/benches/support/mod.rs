//! What the disk benchmarks share.

use std::path::PathBuf;

/// A fresh directory for a run named `name`, under `CONCLAVE_BENCH_DIR` or the system's
/// temporary directory (it must be a real disk: on tmpfs a sync costs nothing).
pub fn bench_dir(name: &str) -> PathBuf {
    let base =
        std::env::var_os("CONCLAVE_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = base.join(format!("conclave-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
