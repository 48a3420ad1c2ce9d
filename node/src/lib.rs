//! conclave-node: the parts of the `conclave` binary that touch the operating system, its HTTP
//! API and its CLI.
//!
//! - `config.rs` (flags and TOML, ids and ports), `serve.rs` (a node's lifecycle),
//!   `bound_socket.rs` (ports bound before they listen), `data_dir.rs` (a member's directory
//!   and its lock), `member_identity.rs` (whose directory it is), `member_ids.rs` (ids from
//!   names), `member_record.rs` (what the log says about a member), `member_publish.rs` (a
//!   member keeps its record current), `engine_thread.rs` (the
//!   engine on its own thread), `clock.rs`, `network.rs`, `fs.rs`, `storage.rs` (the engine's
//!   seams on the OS);
//! - `http/` (the API; its JSON shapes are `conclave_client::api`), `metrics.rs`;
//! - `cli/` (the client commands, on the `conclave-client` crate),
//!   `dev_cluster.rs` (`conclave dev`), `systemd_notify.rs` (readiness for systemd),
//!   `duration.rs` (the one duration grammar).

pub mod backup_restore;
pub mod bench;
pub mod bound_socket;
pub mod cli;
pub mod clock;
pub mod config;
pub mod data_dir;
pub mod dev_cluster;
pub mod duration;
pub mod engine_thread;
pub mod fs;
pub mod http;
pub mod local_groups;
pub mod member_identity;
pub mod member_ids;
pub mod member_publish;
pub mod member_record;
pub mod metrics;
pub mod metrics_exposition;
pub mod network;
pub mod process_metrics;
pub mod removal_watch;
pub mod serve;
pub mod shard_layout;
pub mod shard_map_keeper;
pub mod sharded_backup;
pub mod stop_signals;
pub mod storage;
pub mod systemd_notify;
#[cfg(test)]
mod test_dir;
