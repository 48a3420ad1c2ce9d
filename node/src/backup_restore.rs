//! `conclave backup` and `conclave restore`: take an online backup from a running node (over
//! its HTTP API, `GET /admin/backup`) into one file, and seed an empty data directory from such
//! a file — to rebuild a lost node, or to start a new cluster with the backed-up data.
//!
//! The file format and the restore itself are the storage engine's (`conclave_core::storage::
//! backup`), so a restored directory is exactly what the node's recovery expects.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use conclave_core::raft::ClusterConfig;
use conclave_core::storage::backup::{RestoreOptions, read_backup, restore_backup};
use conclave_core::storage::fs::FileSystem as _;

use crate::config::parse_member;
use crate::fs::OsFs;

/// The largest backup this tool reads.
const MAX_SNAPSHOT_BYTES: u64 = 8 * 1024 * 1024 * 1024;
/// Log segments of a restored directory start at the node's default size.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The node to back up, as host:port or :port (the leader has the freshest state).
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub endpoint: String,
    /// Where to write the backup file (written to a temporary name, synced, then renamed).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file (from `conclave backup`).
    #[arg(long)]
    pub from: PathBuf,
    /// The data directory to seed; it must be missing or empty.
    #[arg(long, alias = "data-dir")]
    pub working_dir: PathBuf,
    /// Start a *new* cluster with these members instead of the backed-up one's
    /// (e.g. `--peers=:9001,:9002,:9003`); restore every new member from the same file.
    #[arg(long, value_delimiter = ',', require_equals = true)]
    pub peers: Option<Vec<String>>,
}

fn endpoint_url(endpoint: &str) -> String {
    let address = if endpoint.starts_with(':') {
        format!("127.0.0.1{endpoint}")
    } else {
        endpoint.to_string()
    };
    if address.starts_with("http://") || address.starts_with("https://") {
        address
    } else {
        format!("http://{address}")
    }
}

pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let url = format!("{}/admin/backup", endpoint_url(&args.endpoint));
    let response = reqwest::get(&url).await.with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("{url} answered {status}: {}", body.trim());
    }
    let bytes = response.bytes().await.with_context(|| format!("reading the backup from {url}"))?;
    let out = args.out.clone();
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let temp = out.with_extension("partial");
    let fs = OsFs;
    write_synced(&fs, &temp, bytes.to_vec()).await?;
    fs.rename(&temp, &out)
        .await
        .with_context(|| format!("renaming {} to {}", temp.display(), out.display()))?;
    fs.sync_dir(&dir).await.with_context(|| format!("syncing {}", dir.display()))?;
    // Read it back: a backup that does not verify is worse than none.
    let (meta, _) = read_backup(&fs, &out, MAX_SNAPSHOT_BYTES)
        .await
        .with_context(|| format!("verifying {}", out.display()))?;
    println!(
        "backup written to {}: {} bytes, state at log index {} (term {}), members {:?}",
        out.display(),
        bytes.len(),
        meta.last_index,
        meta.last_term,
        meta.config.members().iter().map(|id| id.0).collect::<Vec<_>>()
    );
    Ok(())
}

async fn write_synced(fs: &OsFs, path: &Path, bytes: Vec<u8>) -> anyhow::Result<()> {
    use conclave_core::storage::fs::{FsFile as _, OpenMode};
    let _ = fs.remove_file(path).await;
    let file = fs
        .open(path, OpenMode::CreateNew)
        .await
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all_at(0, bytes).await.with_context(|| format!("writing {}", path.display()))?;
    file.sync_all().await.with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let config = match &args.peers {
        None => None,
        Some(peers) => {
            let mut config = ClusterConfig::default();
            for peer in peers {
                let member = parse_member(peer).map_err(|error| anyhow!("--peers: {error}"))?;
                config.voters.insert(member.id);
                config.addresses.insert(member.id, member.peer_address());
            }
            if config.voters.is_empty() {
                bail!("--peers names no member");
            }
            Some(config)
        }
    };
    let options = RestoreOptions {
        config,
        segment_bytes: SEGMENT_BYTES,
        max_snapshot_bytes: MAX_SNAPSHOT_BYTES,
    };
    if let Some(parent) = args.working_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let meta = restore_backup(&OsFs, &args.from, &args.working_dir, &options).await.with_context(
        || format!("restoring {} into {}", args.from.display(), args.working_dir.display()),
    )?;
    println!(
        "restored {} into {}: state at log index {} (term {}), members {:?}; start the node with `conclave serve --working-dir {}`",
        args.from.display(),
        args.working_dir.display(),
        meta.last_index,
        meta.last_term,
        meta.config.members().iter().map(|id| id.0).collect::<Vec<_>>(),
        args.working_dir.display()
    );
    Ok(())
}
