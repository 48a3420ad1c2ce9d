//! `conclave backup` and `conclave restore` of a sharded cluster.
//!
//! A backup asks each shard's leader (as one node's `/cluster/shards` names it; through that
//! node, which routes the request, when the leader is unknown or does not answer) for the
//! shard's backup (`GET /admin/backup?shard=N`), one shard after another, and writes them, with the map and the replication
//! factor, into one file (`conclave_core::storage::sharded_backup`). Each shard's part holds
//! every write that shard acknowledged before its part was asked for.
//!
//! A restore seeds one member's data directory: the shards the cluster's map places on the
//! member (the map `conclave serve` computes from the same flags, which the restore prints),
//! each from its shard's snapshot, in a shared log staged under `shards.restoring` and renamed
//! into place once complete, so that a restore cut short is refused at start rather than taken
//! for a member with missing shards. For a *new* cluster (other members), every group's
//! configuration becomes its replicas in the new map and the meta group's state holds the new
//! map, which therefore names the new members; the slots each shard owns must be the same.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use conclave_client::api::{REPLICATION_HEADER, ShardsJson};
use conclave_core::kv::KvStateMachine;
use conclave_core::raft::NodeId;
use conclave_core::shard::{ShardId, ShardMap};
use conclave_core::storage::backup::BackupSource;
use conclave_core::storage::sharded_backup::{
    BackupContents, ShardBackups, ShardedBackupMeta, read_any_backup, restore_shared_log,
    write_sharded_backup,
};

use crate::backup_restore::{BackupPartJson, BackupWritten, body_within};
use crate::config::{NodeConfig, ServeOptions};
use crate::data_dir::LOCK_FILE_NAME;
use crate::fs::OsFs;
use crate::member_identity::{self, MemberIdentity};
use crate::member_record::MemberRecord;
use crate::shard_layout::{self, RESTORING_DIR_NAME, ShardLayout};

/// The largest state a backup holds (its shards' parts together).
pub const MAX_BACKUP_BYTES: u64 = 8 * 1024 * 1024 * 1024;
/// The largest backup file read: the state plus room for the headers, metadata and map.
pub const MAX_BACKUP_FILE_BYTES: u64 = MAX_BACKUP_BYTES + 16 * 1024 * 1024;
/// Log segments of a restored shared log start at the node's default size.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// The shard map `base_url` follows, or `None` when it is a single group's node.
pub async fn shard_map_of(
    client: &reqwest::Client,
    base_url: &str,
) -> anyhow::Result<Option<(ShardMap, Option<u32>)>> {
    let url = format!("{base_url}/cluster/shard-map");
    let response = client.get(&url).send().await.with_context(|| format!("cannot reach {url}"))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        bail!("{url} answered {status}: {}", body.trim());
    }
    let replication = response
        .headers()
        .get(REPLICATION_HEADER)
        .and_then(|value| value.to_str().ok()?.parse::<u32>().ok());
    let body = response.bytes().await.with_context(|| format!("reading {url}"))?;
    let map: ShardMap =
        serde_json::from_slice(&body).with_context(|| format!("{url} answered no shard map"))?;
    map.validate().with_context(|| format!("the map {url} answered"))?;
    Ok(Some((map, replication)))
}

/// Backs up every shard of `map` through the node at `base_url` into `out`.
pub async fn backup(
    client: &reqwest::Client,
    base_url: &str,
    map: &ShardMap,
    replication: Option<u32>,
    out: &Path,
    silence: Duration,
) -> anyhow::Result<BackupWritten> {
    // A node older than the replication header: the map's own count (the same unless the
    // cluster has fewer members than --replication).
    let replication = replication.unwrap_or_else(|| {
        let counts = map.shards().filter(|(shard, _)| *shard != ShardId::META);
        counts.map(|(_, info)| info.replicas.len() as u32).max().unwrap_or(1)
    });
    let shard_count = map.shards().count();
    let leaders = leader_addresses(client, base_url).await;
    let mut parts = Vec::with_capacity(shard_count);
    let mut total_bytes = 0u64;
    for (done, (shard, _)) in map.shards().enumerate() {
        let bytes = shard_backup(client, base_url, leaders.get(&shard), shard, silence).await?;
        total_bytes += bytes.len() as u64;
        if total_bytes > MAX_BACKUP_BYTES {
            bail!("the backup would exceed {MAX_BACKUP_BYTES} bytes");
        }
        eprintln!("{shard}: {} bytes ({}/{shard_count})", bytes.len(), done + 1);
        parts.push((shard, bytes));
    }
    let created_wall_ms =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let source = BackupSource {
        created_wall_ms,
        description: format!("{shard_count} shards through {base_url}"),
    };
    write_sharded_backup(&OsFs, out, map, replication, &source, &parts)
        .await
        .with_context(|| format!("writing {}", out.display()))?;
    drop(parts);
    // Read it back: a backup that does not verify is worse than none.
    let contents = read_any_backup(&OsFs, out, MAX_BACKUP_FILE_BYTES)
        .await
        .with_context(|| format!("verifying {}", out.display()))?;
    let BackupContents::Sharded { shards, .. } = contents else {
        bail!("{} does not read back as a sharded backup", out.display());
    };
    let indexes: Vec<String> = shards
        .iter()
        .map(|(shard, (meta, _))| format!("{}@{}", shard.0, meta.last_index))
        .collect();
    let summary = format!(
        "backup written to {}: {total_bytes} bytes of {shard_count} shards (shard map epoch {}, \
         {} slots, replication {replication}), each at log index {}",
        out.display(),
        map.epoch(),
        map.slot_count().get(),
        indexes.join(" ")
    );
    Ok(BackupWritten {
        file: out.to_path_buf(),
        bytes: total_bytes,
        shards: shards
            .iter()
            .map(|(shard, (meta, _))| BackupPartJson {
                shard: shard.0,
                index: meta.last_index,
                term: meta.last_term,
            })
            .collect(),
        shard_map_epoch: Some(map.epoch()),
        summary,
    })
}

/// Each shard's leader's HTTP address, by `/cluster/shards` of the node at `base_url` (empty if
/// it does not answer: every shard then goes through that node).
async fn leader_addresses(client: &reqwest::Client, base_url: &str) -> BTreeMap<ShardId, String> {
    let url = format!("{base_url}/cluster/shards");
    let Ok(response) = client.get(&url).send().await else { return BTreeMap::new() };
    let Ok(body) = response.bytes().await else { return BTreeMap::new() };
    let Ok(view) = serde_json::from_slice::<ShardsJson>(&body) else { return BTreeMap::new() };
    view.shards
        .iter()
        .filter_map(|shard| {
            let address = view.addresses.get(&shard.leader?)?;
            Some((ShardId(shard.shard), format!("http://{address}")))
        })
        .collect()
}

/// One shard's backup file: asked of its leader directly when known (its bytes then cross the
/// network once, and no node relays them), else of the node at `base_url`, which routes it.
async fn shard_backup(
    client: &reqwest::Client,
    base_url: &str,
    leader: Option<&String>,
    shard: ShardId,
    silence: Duration,
) -> anyhow::Result<Vec<u8>> {
    let path = format!("/admin/backup?shard={}", shard.0);
    if let Some(leader) = leader.filter(|leader| leader.as_str() != base_url) {
        match fetch_part(client, &format!("{leader}{path}"), silence).await {
            Ok(bytes) => return Ok(bytes),
            Err(error) => eprintln!("{shard}: {error:#}; asking {base_url} instead"),
        }
    }
    fetch_part(client, &format!("{base_url}{path}"), silence).await
}

async fn fetch_part(
    client: &reqwest::Client,
    url: &str,
    silence: Duration,
) -> anyhow::Result<Vec<u8>> {
    let response = client.get(url).send().await.with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("{url} answered {status}: {}", body.trim());
    }
    body_within(response, silence).await.with_context(|| format!("reading {url}"))
}

/// The members of the backed-up cluster: every replica of any shard, with its record.
pub fn backed_up_members(shards: &ShardBackups) -> Vec<(NodeId, MemberRecord)> {
    let mut members = BTreeMap::new();
    for (meta, _) in shards.values() {
        for (id, record) in &meta.config.addresses {
            if meta.config.members().contains(id) {
                members.entry(*id).or_insert_with(|| MemberRecord::parse(record));
            }
        }
    }
    members.into_iter().collect()
}

/// What `restore` of a sharded backup needs from the command line, resolved by the caller
/// exactly as for a single group.
pub struct ShardedRestore<'a> {
    pub options: ServeOptions,
    pub new_cluster: bool,
    pub start_flags: String,
    pub working_dir: &'a Path,
    pub from: &'a Path,
}

/// Restores the shards `restore`'s member hosts from a sharded backup.
pub async fn restore(
    restore: ShardedRestore<'_>,
    meta: ShardedBackupMeta,
    shards: ShardBackups,
) -> anyhow::Result<String> {
    let ShardedRestore { mut options, new_cluster, start_flags, working_dir, from } = restore;
    let backed_up_map = &meta.map;
    options.shards = Some(backed_up_map.shards().count() as u64);
    options.replication = Some(meta.replication as usize);
    options.slots = Some(u64::from(backed_up_map.slot_count().get()));
    let node = NodeConfig::resolve(options).context("the restored member")?;
    let Some(sharding) = node.sharding.clone() else {
        bail!(
            "the backup holds {} shards, but the member resolved to a single group",
            shards.len()
        );
    };
    let map = node
        .bootstrap_map()
        .ok_or_else(|| anyhow!("the restored member is not sharded"))?
        .context("cannot compute the cluster's shard map")?;
    check_same_shards(backed_up_map, &map, new_cluster)?;
    let hosted: Vec<ShardId> = map.shards_on(node.node_id).collect();
    if hosted.is_empty() {
        bail!(
            "the shard map places no replica on node {}: nothing to restore here",
            node.node_id.0
        );
    }
    let mut snapshots = BTreeMap::new();
    for shard in &hosted {
        let (_, snapshot) =
            shards.get(shard).ok_or_else(|| anyhow!("the backup has no part for {shard}"))?;
        let mut snapshot = snapshot.clone();
        if new_cluster {
            snapshot.meta.config = node.initial_group_config(&map, *shard);
            if *shard == ShardId::META {
                // The backed-up map names the old members: the new cluster routes by its own.
                let mut state = KvStateMachine::restore(&snapshot.data)
                    .map_err(|error| anyhow!("the meta shard's state does not decode: {error}"))?;
                state.replace_shard_map_for_restore(Some(map.clone()));
                snapshot.data = state.snapshot();
            }
        }
        snapshots.insert(*shard, snapshot);
    }
    let data_dir = crate::data_dir::DataDir::open(working_dir, &node.data_dir_member())?;
    let member_dir = data_dir.path().to_path_buf();
    let present: Vec<String> = std::fs::read_dir(&member_dir)
        .with_context(|| format!("listing {}", member_dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.file_name().to_string_lossy().into()))
        .filter(|name: &String| name != LOCK_FILE_NAME)
        .collect();
    if !present.is_empty() {
        bail!(
            "{} is not empty ({}); restore only into an empty or missing data directory",
            member_dir.display(),
            present.join(", ")
        );
    }
    let staging = member_dir.join(RESTORING_DIR_NAME);
    restore_shared_log(&OsFs, &staging, &snapshots, SEGMENT_BYTES, MAX_BACKUP_BYTES)
        .await
        .with_context(|| format!("restoring {} into {}", from.display(), staging.display()))?;
    // The layout and identity go in before the rename, which comes last: until then the
    // staging directory makes a start refused, so no start can pass other flags' checks.
    shard_layout::record(&member_dir, &ShardLayout::from(&sharding))?;
    let identity = MemberIdentity {
        node_id: node.node_id.0,
        cluster_id: Some(node.cluster_id),
        name: node.name.clone(),
    };
    member_identity::write(&member_dir, &identity)?;
    let log_dir = shard_layout::shared_log_dir(&member_dir);
    std::fs::rename(&staging, &log_dir)
        .with_context(|| format!("renaming {} to {}", staging.display(), log_dir.display()))?;
    std::fs::File::open(&member_dir)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("syncing {}", member_dir.display()))?;
    let restored: Vec<String> = snapshots
        .iter()
        .map(|(shard, snapshot)| format!("{}@{}", shard.0, snapshot.meta.last_index))
        .collect();
    let summary = format!(
        "restored {} into {}: shards (at log index) {}; start the node with:\n  conclave serve \
         {start_flags} --shards {} --replication {} --slots {} --working-dir {}",
        from.display(),
        member_dir.display(),
        restored.join(" "),
        sharding.shards,
        sharding.replication,
        sharding.slots.get(),
        working_dir.display()
    );
    Ok(summary)
}

/// The map the restored member starts from must give every slot to the shard the backup took
/// it from; and, rebuilding a member of the backed-up cluster, place the replicas as the
/// backed-up map did.
fn check_same_shards(
    backed_up: &ShardMap,
    target: &ShardMap,
    new_cluster: bool,
) -> anyhow::Result<()> {
    let shards_of = |map: &ShardMap| map.shards().map(|(shard, _)| shard).collect::<BTreeSet<_>>();
    if shards_of(backed_up) != shards_of(target) || backed_up.slot_count() != target.slot_count() {
        bail!("the backup's shards and slots differ from the map the restored member starts from");
    }
    for (shard, _) in backed_up.shards() {
        if !backed_up.slots_of(shard).eq(target.slots_of(shard)) {
            bail!(
                "{shard} owned other slots when the backup was taken than a new cluster's map \
                 gives it; this backup cannot be restored by this version"
            );
        }
        if !new_cluster && backed_up.shard(shard) != target.shard(shard) {
            bail!(
                "{shard}'s replicas in the backup differ from the map the member starts from: \
                 restore into a new cluster (--peers or --initial-cluster) instead"
            );
        }
    }
    Ok(())
}
