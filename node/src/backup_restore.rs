//! `conclave backup` and `conclave restore`: take an online backup from a running node (over
//! its HTTP API, `GET /admin/backup`) into one file, and seed an empty data directory from such
//! a file — to rebuild a lost node, or to start a new cluster with the backed-up data.
//!
//! The file format and the restore itself are the storage engine's (`conclave_core::storage::
//! backup`), so a restored directory is exactly what the node's recovery expects.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use conclave_core::raft::{ClusterConfig, NodeId};
use conclave_core::storage::backup::{RestoreOptions, read_backup, restore_backup};
use conclave_core::storage::fs::FileSystem as _;
use conclave_core::storage::sharded_backup::{BackupContents, read_any_backup};

use conclave_client::endpoint;

use crate::cli::{ClientFlags, WriteOut};
use crate::config::{NodeConfig, ServeOptions, parse_member};
use crate::data_dir::{DataDir, LOCK_FILE_NAME, is_locked_by_another_process};
use crate::fs::OsFs;
use crate::member_identity::{self, MemberIdentity};
use crate::member_record::MemberRecord;
use crate::sharded_backup::{self, ShardedRestore};

/// The largest backup this tool reads.
const MAX_SNAPSHOT_BYTES: u64 = 8 * 1024 * 1024 * 1024;
/// Log segments of a restored directory start at the node's default size.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// `--endpoints`: the nodes to back up through, asked in order until one accepts a
    /// connection (any node will do: the backup is taken after a linearizable read); `--json`
    /// prints the summary as JSON; `--timeout-secs` is how long a node may send nothing before
    /// it is given up (there is no overall limit: a large backup takes as long as it takes).
    #[command(flatten)]
    pub client: ClientFlags,
    /// Where to write the backup file (written to a temporary name, synced, then renamed).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file (from `conclave backup`).
    #[arg(long)]
    pub from: PathBuf,
    /// The --working-dir the restored node will be started with; the member's own directory
    /// in it (`member-PORT`) must be missing or empty, and no node may be running on it.
    #[arg(long, alias = "data-dir")]
    pub working_dir: PathBuf,
    /// The member this directory is for (its HTTP port, as `conclave serve --port`); needed
    /// unless the cluster has a single member.
    #[arg(long)]
    pub port: Option<u16>,
    /// Start a *new* cluster with these members instead of the backed-up one's
    /// (e.g. `--peers=:9001,:9002,:9003`); restore every new member from the same file.
    #[arg(long, value_delimiter = ',', require_equals = true)]
    pub peers: Option<Vec<String>>,
    /// A named member: the member this directory is for (as `conclave serve --name`).
    #[arg(long)]
    pub name: Option<String>,
    /// A named member: start a *new* cluster with these members (`name=peer-url,...`) instead
    /// of the backed-up one's.
    #[arg(long, value_delimiter = ',', require_equals = true)]
    pub initial_cluster: Option<Vec<String>>,
    /// A named member: the token of the cluster it will run in (the backed-up cluster's token
    /// to rebuild one of its members; a new token for a new cluster).
    #[arg(long)]
    pub initial_cluster_token: Option<String>,
}

pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let out_dir = args.out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Some(holder) = is_locked_by_another_process(out_dir) {
        let holder = holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default();
        bail!(
            "{} is the data directory of a running node{holder}: write the backup elsewhere",
            out_dir.display()
        );
    }
    let endpoints: Vec<String> = args
        .client
        .endpoints
        .split(',')
        .filter(|endpoint| !endpoint.trim().is_empty())
        .map(endpoint::base_url)
        .collect::<Result<_, _>>()?;
    let timeouts = (
        Duration::from_secs(args.client.dial_timeout_secs.max(1)),
        Duration::from_secs(args.client.timeout_secs.max(1)),
    );
    let Some((last, earlier)) = endpoints.split_last() else {
        bail!("no endpoint given: name the nodes with --endpoints");
    };
    // A node that cannot be reached is skipped; any other failure is the backup's.
    let mut written = None;
    for base_url in earlier {
        match backup_through(base_url, &args.out, timeouts).await {
            Err(error) if is_unreachable(&error) => {
                eprintln!("{base_url}: {error:#}; trying the next endpoint");
            }
            result => {
                written = Some(result?);
                break;
            }
        }
    }
    let written = match written {
        Some(written) => written,
        None => backup_through(last, &args.out, timeouts).await?,
    };
    if args.client.format(WriteOut::Simple) == WriteOut::Json {
        println!("{}", serde_json::to_string(&written)?);
    } else {
        println!("{}", written.summary);
    }
    Ok(())
}

/// What `conclave backup` wrote, for its summary line (or `--json`).
#[derive(Debug, serde::Serialize)]
pub struct BackupWritten {
    pub file: PathBuf,
    pub bytes: u64,
    /// Each shard's part: its log index and term (a single-group backup has shard 0 alone).
    pub shards: Vec<BackupPartJson>,
    /// A sharded backup's shard map epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard_map_epoch: Option<u64>,
    #[serde(skip)]
    pub summary: String,
}

#[derive(Debug, serde::Serialize)]
pub struct BackupPartJson {
    pub shard: u32,
    pub index: u64,
    pub term: u64,
}

/// Whether `error` says a node could not be reached (no connection could be made). A node that
/// was reached and then failed is not skipped for the next: its failure is the backup's.
pub fn is_unreachable(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.downcast_ref::<reqwest::Error>().is_some_and(reqwest::Error::is_connect))
}

/// The body of `response`, given up if the node sends nothing for `silence` once it has
/// started (the answer's headers come only after the node has taken the snapshot, which takes
/// as long as it takes).
pub async fn body_within(
    response: reqwest::Response,
    silence: Duration,
) -> anyhow::Result<Vec<u8>> {
    use futures::StreamExt as _;
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    loop {
        match tokio::time::timeout(silence, chunks.next()).await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk?),
            Ok(None) => return Ok(body),
            Err(_) => bail!("the node sent nothing for {} s", silence.as_secs()),
        }
    }
}

/// A backup taken through the node at `base_url`, written to `out` and read back.
async fn backup_through(
    base_url: &str,
    out: &Path,
    (dial_timeout, silence_timeout): (Duration, Duration),
) -> anyhow::Result<BackupWritten> {
    let client = reqwest::Client::builder()
        .connect_timeout(dial_timeout)
        .build()
        .context("cannot build the HTTP client")?;
    if let Some((map, replication)) = sharded_backup::shard_map_of(&client, base_url).await? {
        let silence = silence_timeout;
        return sharded_backup::backup(&client, base_url, &map, replication, out, silence).await;
    }
    let url = format!("{base_url}/admin/backup");
    let response = client.get(&url).send().await.with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("{url} answered {status}: {}", body.trim());
    }
    let bytes = body_within(response, silence_timeout)
        .await
        .with_context(|| format!("reading the backup from {url}"))?;
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let temp = out.with_extension("partial");
    let fs = OsFs;
    let byte_count = bytes.len() as u64;
    write_synced(&fs, &temp, bytes).await?;
    fs.rename(&temp, out)
        .await
        .with_context(|| format!("renaming {} to {}", temp.display(), out.display()))?;
    fs.sync_dir(&dir).await.with_context(|| format!("syncing {}", dir.display()))?;
    // Read it back: a backup that does not verify is worse than none.
    let (meta, _) = read_backup(&fs, out, MAX_SNAPSHOT_BYTES)
        .await
        .with_context(|| format!("verifying {}", out.display()))?;
    let summary = format!(
        "backup written to {}: {} bytes, state at log index {} (term {}), members {:?}",
        out.display(),
        byte_count,
        meta.last_index,
        meta.last_term,
        meta.config.members().iter().map(|id| id.0).collect::<Vec<_>>()
    );
    Ok(BackupWritten {
        file: out.to_path_buf(),
        bytes: byte_count,
        shards: vec![BackupPartJson { shard: 0, index: meta.last_index, term: meta.last_term }],
        shard_map_epoch: None,
        summary,
    })
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
    let contents = read_any_backup(&OsFs, &args.from, sharded_backup::MAX_BACKUP_FILE_BYTES)
        .await
        .with_context(|| format!("reading {}", args.from.display()))?;
    let backed_up_members: Vec<(NodeId, MemberRecord)> = match &contents {
        BackupContents::SingleGroup { meta, .. } => meta
            .config
            .addresses
            .iter()
            .filter(|(id, _)| meta.config.members().contains(*id))
            .map(|(id, record)| (*id, MemberRecord::parse(record)))
            .collect(),
        BackupContents::Sharded { shards, .. } => sharded_backup::backed_up_members(shards),
    };
    let named = args.initial_cluster.is_some()
        || args.name.is_some()
        || (args.peers.is_none() && backed_up_members.iter().any(|(_, r)| r.name.is_some()));
    let (options, new_cluster, start_flags) = if named {
        named_options(&args, &backed_up_members)?
    } else {
        port_named_options(&args, &backed_up_members)?
    };
    if let BackupContents::Sharded { meta, shards } = contents {
        let restore = ShardedRestore {
            options,
            new_cluster,
            start_flags,
            working_dir: &args.working_dir,
            from: &args.from,
        };
        println!("{}", sharded_backup::restore(restore, meta, shards).await?);
        return Ok(());
    }
    // Exactly what `conclave serve` with these flags resolves, cluster id included.
    let node = NodeConfig::resolve(options).context("the restored member")?;
    let config = new_cluster.then(|| {
        let mut config = ClusterConfig::with_voters(node.members.keys().copied());
        config.addresses = node.peer_addresses();
        config
    });
    let data_dir = DataDir::open(&args.working_dir, &node.data_dir_member())?;
    let options = RestoreOptions {
        config,
        segment_bytes: SEGMENT_BYTES,
        max_snapshot_bytes: MAX_SNAPSHOT_BYTES,
        foreign_entries: vec![LOCK_FILE_NAME.to_string()],
    };
    let meta =
        restore_backup(&OsFs, &args.from, data_dir.path(), &options).await.with_context(|| {
            format!("restoring {} into {}", args.from.display(), data_dir.path().display())
        })?;
    let identity = MemberIdentity {
        node_id: node.node_id.0,
        cluster_id: Some(node.cluster_id),
        name: node.name.clone(),
    };
    member_identity::write(data_dir.path(), &identity)?;
    println!(
        "restored {} into {}: state at log index {} (term {}), members {:?}; start the node with:\n  conclave serve {start_flags} --working-dir {}",
        args.from.display(),
        data_dir.path().display(),
        meta.last_index,
        meta.last_term,
        meta.config.members().iter().map(|id| id.0).collect::<Vec<_>>(),
        args.working_dir.display()
    );
    Ok(())
}

/// Serve settings, whether a new cluster is started, and the flags that start the member, for
/// a port-named member: the new cluster's `--peers`, or the backed-up one's members as
/// `--peers` entries (`host:id/peer_port`), which give the same cluster id it had.
fn port_named_options(
    args: &RestoreArgs,
    backed_up: &[(NodeId, MemberRecord)],
) -> anyhow::Result<(ServeOptions, bool, String)> {
    let peers: Vec<String> = match &args.peers {
        Some(peers) => peers.clone(),
        None => backed_up
            .iter()
            .map(|(id, record)| match record.peer_address.rsplit_once(':') {
                Some((host, peer_port)) => format!("{host}:{}/{peer_port}", id.0),
                None => format!(":{}", id.0),
            })
            .collect(),
    };
    let port = match (args.port, peers.as_slice()) {
        (Some(port), _) => port,
        (None, [only]) => parse_member(only).map_err(|error| anyhow!("{error}"))?.http_port,
        (None, _) => bail!(
            "the cluster has {} members: say which one this directory is for with --port",
            peers.len()
        ),
    };
    let options = ServeOptions {
        port: Some(port),
        peers: Some(peers.clone()),
        working_dir: Some(args.working_dir.clone()),
        ..ServeOptions::default()
    };
    let peers_flag =
        if peers.len() > 1 { format!(" --peers={}", peers.join(",")) } else { String::new() };
    Ok((options, args.peers.is_some(), format!("--port {port}{peers_flag}")))
}

/// The same for a named member: the new cluster's `--initial-cluster`, or the backed-up one's
/// members by name and peer address (the ids follow from the names and the token).
fn named_options(
    args: &RestoreArgs,
    backed_up: &[(NodeId, MemberRecord)],
) -> anyhow::Result<(ServeOptions, bool, String)> {
    let Some(name) = args.name.clone() else {
        bail!("a named member is restored with --name (which member this directory is for)");
    };
    let Some(token) = args.initial_cluster_token.clone() else {
        bail!(
            "a named member is restored with --initial-cluster-token: the backed-up cluster's to \
             rebuild one of its members, a new one for a new cluster"
        );
    };
    let initial_cluster: Vec<String> = match &args.initial_cluster {
        Some(entries) => entries.clone(),
        None => backed_up
            .iter()
            .map(|(id, record)| match &record.name {
                Some(name) => Ok(format!("{name}={}", record.peer_address)),
                None => Err(anyhow!("member {} of the backup has no name", id.0)),
            })
            .collect::<anyhow::Result<_>>()?,
    };
    let options = ServeOptions {
        name: Some(name.clone()),
        initial_cluster: Some(initial_cluster.clone()),
        initial_cluster_token: Some(token.clone()),
        working_dir: Some(args.working_dir.clone()),
        ..ServeOptions::default()
    };
    let flags = format!(
        "--name {name} --initial-cluster {} --initial-cluster-token {token}",
        initial_cluster.join(",")
    );
    Ok((options, args.initial_cluster.is_some(), flags))
}
