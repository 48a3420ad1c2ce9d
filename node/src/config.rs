//! `conclave serve` settings, resolved into one validated [`NodeConfig`]. Every setting comes
//! from a flag, a `CONCLAVE_*` environment variable (the flag's name in capitals with `_`:
//! `--election-timeout-ms` is `CONCLAVE_ELECTION_TIMEOUT_MS`), or a TOML file (`--config`, keys
//! are the flag names with `_`), in that order of precedence, then the default. Containers and
//! systemd units are configured through the environment; `conclave serve --print-config` shows
//! what is in force.
//!
//! Two ways to name members:
//!
//! - **By port** (`--port`, `--peers=:8001,:8002,:8003`), the shorthand for one machine and the
//!   challenge contract: a member is named by its HTTP address (`[host]:port`, host 127.0.0.1
//!   when omitted), its Raft node id is its HTTP port, and its peer transport listens on the
//!   HTTP port + 10000 unless the entry says otherwise with `/PEER_PORT`
//!   (`10.0.0.1:8001/9001`) or `--peer-port` sets this node's. The cluster id that peers check
//!   when they connect is a hash of the sorted member list. A node started without --peers is
//!   a cluster of one and listens for peers only once members are added.
//! - **By name** (`--initial-cluster name=peer-url,...`, as etcd's), for real hosts, where every
//!   member listens on the same ports and is told apart by name and address: ids come from
//!   names (`member_ids.rs`), the cluster id from `--initial-cluster-token`, and each member
//!   listens where told (`--listen-client`, `--listen-peer`) and advertises where it can be
//!   reached (`--advertise-client-url`, `--advertise-peer-url`). The log carries every member's
//!   advertised addresses (`member_record.rs`), so redirects, clients and membership changes
//!   use them, never a port computed from another.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use conclave_core::engine::EngineConfig;
use conclave_core::kv::KvLimits;
use conclave_core::raft::{ClusterConfig, LeaseConfig, NodeId, RaftConfig};
use conclave_core::shard::{ShardId, ShardMap, ShardMapError, SlotCount};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::member_ids;
use crate::member_record::{self, MemberRecord};

/// Added to a member's HTTP port to get its peer-transport port, unless given explicitly.
pub const PEER_PORT_OFFSET: u16 = 10_000;
/// The HTTP port when neither a flag nor the file names one.
pub const DEFAULT_PORT: u16 = 8001;
/// A named member's client port when --listen-client does not say: etcd's, the port clients of
/// a key-value store on a real host expect (the `:8001` shorthand is for one machine).
pub const NAMED_DEFAULT_CLIENT_PORT: u16 = 2379;
/// Largest config file read: a config is a few hundred bytes; anything huge is a mistake.
const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;

#[derive(Debug, Error)]
pub enum ConfigError {
    // Causes are in the messages, so they are not also `source`s (a chain would repeat them).
    #[error("cannot read config file {path}: {cause}")]
    ReadFile { path: PathBuf, cause: std::io::Error },
    #[error("config file {path} is larger than {MAX_CONFIG_FILE_BYTES} bytes")]
    FileTooLarge { path: PathBuf },
    #[error("config file {path}: {cause}")]
    ParseFile { path: PathBuf, cause: Box<toml::de::Error> },
    #[error("invalid member {entry:?} in --peers: {reason}")]
    BadMember { entry: String, reason: String },
    #[error(
        "port {port}: the peer port would be {port} + {PEER_PORT_OFFSET}, beyond 65535; give it explicitly (`:{port}/PEER_PORT` in --peers, or --peer-port)"
    )]
    PeerPortOverflow { port: u16 },
    #[error("--peers names port {port} twice (node ids are ports, so they must be distinct)")]
    DuplicateMember { port: u16 },
    #[error("this node's port {port} is not in --peers ({peers}); the list includes every member")]
    SelfNotMember { port: u16, peers: String },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

/// Every serve setting, each optional so that a flag can override the file field by field.
/// The same struct reads the TOML file (keys are the flag names with `_`) and prints the
/// effective settings (`--print-config`), `None`s left out.
#[derive(Args, Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServeOptions {
    /// This member's name, in a cluster formed with --initial-cluster [default: the host name].
    #[arg(long, env = "CONCLAVE_NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Every member of a new cluster as `name=peer-url`, comma separated
    /// (`a=10.0.0.1:2380,b=10.0.0.2:2380,c=10.0.0.3:2380`; `http://` may precede an address, and
    /// host names are resolved again at every connection). Members are then named, not numbered
    /// by port: use it instead of --port/--peers.
    #[arg(long, value_delimiter = ',', env = "CONCLAVE_INITIAL_CLUSTER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_cluster: Option<Vec<String>>,
    /// A name unique to this cluster (required with --initial-cluster): members of clusters
    /// with different tokens refuse each other, so two clusters can never merge.
    #[arg(long, env = "CONCLAVE_INITIAL_CLUSTER_TOKEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_cluster_token: Option<String>,
    /// Where to serve HTTP, `host:port` (with --initial-cluster) [default: 0.0.0.0:2379].
    #[arg(long, env = "CONCLAVE_LISTEN_CLIENT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_client: Option<String>,
    /// Where to listen for peers, `host:port` (with --initial-cluster) [default: 0.0.0.0 and
    /// the port of this member's peer URL].
    #[arg(long, env = "CONCLAVE_LISTEN_PEER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_peer: Option<String>,
    /// The URL clients and other members use to reach this member's HTTP API (with
    /// --initial-cluster) [default: the host of its peer URL, the port of --listen-client].
    #[arg(long, env = "CONCLAVE_ADVERTISE_CLIENT_URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_client_url: Option<String>,
    /// The URL other members reach this member's peer transport at (with --initial-cluster)
    /// [default: its entry in --initial-cluster, which it must equal if both are given].
    #[arg(long, env = "CONCLAVE_ADVERTISE_PEER_URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_peer_url: Option<String>,
    /// HTTP port; it is also this node's id [default: 8001].
    #[arg(long, env = "CONCLAVE_PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Address to bind (HTTP and peer transport) [default: this node's host in --peers, else
    /// 127.0.0.1].
    #[arg(long, env = "CONCLAVE_HOST")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Directory for the write-ahead log, hard state and snapshots [default: ./conclave-PORT].
    #[arg(long, visible_alias = "data-dir", env = "CONCLAVE_WORKING_DIR")]
    #[serde(alias = "data_dir")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<PathBuf>,
    /// Every member of the cluster, this node included: `[host]:port[/peer_port]`, comma
    /// separated (`:8001,:8002,:8003`). Without it the node is a single-node cluster.
    #[arg(long, value_delimiter = ',', env = "CONCLAVE_PEERS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<String>>,
    /// This node's peer-transport port [default: port + 10000].
    #[arg(long, env = "CONCLAVE_PEER_PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_port: Option<u16>,
    /// A follower that hears no leader for a random time in [T, 2T) campaigns [default: 500].
    #[arg(long, env = "CONCLAVE_ELECTION_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub election_timeout_ms: Option<u64>,
    /// How often a leader sends heartbeats [default: 50].
    #[arg(long, env = "CONCLAVE_HEARTBEAT_INTERVAL_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Raft clock granularity; the timeouts must be multiples of it [default: 10].
    #[arg(long, env = "CONCLAVE_TICK_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tick_ms: Option<u64>,
    /// fdatasync the log before acknowledging (`--fsync=false` trades durability on power
    /// loss for speed; a process crash still loses nothing) [default: true].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", env = "CONCLAVE_FSYNC")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fsync: Option<bool>,
    /// Serve `?consistency=lease` reads from the leader's lease without a round trip; safe
    /// only while clocks drift less than --max-clock-drift-ppm [default: false].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", env = "CONCLAVE_LEASE_READS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_reads: Option<bool>,
    /// Bound on clock drift assumed by lease reads, parts per million [default: 10000].
    #[arg(long, env = "CONCLAVE_MAX_CLOCK_DRIFT_PPM")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_clock_drift_ppm: Option<u32>,
    /// Take a snapshot of the state machine (and compact the log) every this many applied
    /// entries [default: 50000].
    #[arg(long, env = "CONCLAVE_SNAPSHOT_EVERY_ENTRIES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_every_entries: Option<u64>,
    /// Entries kept behind a snapshot for followers that are slightly behind [default: 5000].
    #[arg(long, env = "CONCLAVE_RETAINED_LOG_ENTRIES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retained_log_entries: Option<u64>,
    /// Join an existing cluster instead of starting a new one: the node starts with no
    /// configuration of its own and waits for the leader to replicate the cluster's to it
    /// (add it first with `conclave members add-learner`). It learns the cluster's id from the
    /// other members listed in --peers. Keep this flag on every restart [default: false].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", env = "CONCLAVE_JOIN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<bool>,
    /// Raft groups (shards) the keyspace is split into, fixed when the cluster is created. Each
    /// key belongs to one shard by the hash of its key or hash tag (the text inside the first
    /// `{…}`); shard 0 also holds the shard map. 1 is a single group with the whole keyspace
    /// [default: 1].
    #[arg(long, env = "CONCLAVE_SHARDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<u64>,
    /// Replicas of each shard when --shards is above 1 (every member, if the cluster has fewer);
    /// the meta group (shard 0) is replicated on up to five members [default: 3].
    #[arg(long, env = "CONCLAVE_REPLICATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<usize>,
    /// Slots the keys are hashed into when --shards is above 1: the unit a shard owns, fixed
    /// for the cluster's life [default: 1024].
    #[arg(long, env = "CONCLAVE_SLOTS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots: Option<u64>,
    /// With --shards above 1: keep shard leaderships spread evenly over the members, moving
    /// them by leadership transfer (the meta group's leader decides, one move at a time)
    /// [default: true].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", env = "CONCLAVE_BALANCE_LEADERS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance_leaders: Option<bool>,
    /// Forward writes to the leader instead of answering 307 with its address [default: false].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", env = "CONCLAVE_FORWARD_TO_LEADER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_to_leader: Option<bool>,
    /// Longest key in bytes [default: 4096]. Every member must use the same limits.
    #[arg(long, env = "CONCLAVE_MAX_KEY_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_key_bytes: Option<u64>,
    /// Largest value in bytes [default: 1048576].
    #[arg(long, env = "CONCLAVE_MAX_VALUE_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_value_bytes: Option<u64>,
    /// Open HTTP connections at most; a connection beyond them is answered 503 (with
    /// Retry-After) and closed [default: 4096].
    #[arg(long, env = "CONCLAVE_MAX_CONNECTIONS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// A connection that sends no complete request head for this long is closed [default:
    /// 30000].
    #[arg(long, env = "CONCLAVE_IDLE_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    /// A request body must arrive within this long of its head, or the request gets 408 and
    /// the connection is closed [default: 10000].
    #[arg(long, env = "CONCLAVE_BODY_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_timeout_ms: Option<u64>,
    /// A request not answered in this time gets 504 [default: 5000].
    #[arg(long, env = "CONCLAVE_REQUEST_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout_ms: Option<u64>,
    /// On SIGTERM, in-flight requests get this long to finish [default: 10000].
    #[arg(long, env = "CONCLAVE_SHUTDOWN_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout_ms: Option<u64>,
    /// Change events kept in memory so that a watch can start from a past revision
    /// [default: 10000].
    #[arg(long, env = "CONCLAVE_WATCH_HISTORY_EVENTS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch_history_events: Option<usize>,
    /// Concurrent watch streams at most [default: 1024].
    #[arg(long, env = "CONCLAVE_MAX_WATCHERS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_watchers: Option<usize>,
}

impl ServeOptions {
    /// Reads a TOML file of the same settings.
    pub fn from_file(path: &Path) -> Result<ServeOptions, ConfigError> {
        let read_error = |cause| ConfigError::ReadFile { path: path.to_path_buf(), cause };
        let size_bytes = std::fs::metadata(path).map_err(read_error)?.len();
        if size_bytes > MAX_CONFIG_FILE_BYTES {
            return Err(ConfigError::FileTooLarge { path: path.to_path_buf() });
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        toml::from_str(&text).map_err(|cause| ConfigError::ParseFile {
            path: path.to_path_buf(),
            cause: Box::new(cause),
        })
    }

    /// Each field from `self` (the flags, and the environment where no flag was given) if
    /// set, else from `file`.
    pub fn over(self, file: ServeOptions) -> ServeOptions {
        ServeOptions {
            name: self.name.or(file.name),
            initial_cluster: self.initial_cluster.or(file.initial_cluster),
            initial_cluster_token: self.initial_cluster_token.or(file.initial_cluster_token),
            listen_client: self.listen_client.or(file.listen_client),
            listen_peer: self.listen_peer.or(file.listen_peer),
            advertise_client_url: self.advertise_client_url.or(file.advertise_client_url),
            advertise_peer_url: self.advertise_peer_url.or(file.advertise_peer_url),
            port: self.port.or(file.port),
            host: self.host.or(file.host),
            working_dir: self.working_dir.or(file.working_dir),
            peers: self.peers.or(file.peers),
            peer_port: self.peer_port.or(file.peer_port),
            election_timeout_ms: self.election_timeout_ms.or(file.election_timeout_ms),
            heartbeat_interval_ms: self.heartbeat_interval_ms.or(file.heartbeat_interval_ms),
            tick_ms: self.tick_ms.or(file.tick_ms),
            fsync: self.fsync.or(file.fsync),
            lease_reads: self.lease_reads.or(file.lease_reads),
            max_clock_drift_ppm: self.max_clock_drift_ppm.or(file.max_clock_drift_ppm),
            forward_to_leader: self.forward_to_leader.or(file.forward_to_leader),
            balance_leaders: self.balance_leaders.or(file.balance_leaders),
            shards: self.shards.or(file.shards),
            replication: self.replication.or(file.replication),
            slots: self.slots.or(file.slots),
            join: self.join.or(file.join),
            snapshot_every_entries: self.snapshot_every_entries.or(file.snapshot_every_entries),
            retained_log_entries: self.retained_log_entries.or(file.retained_log_entries),
            max_key_bytes: self.max_key_bytes.or(file.max_key_bytes),
            max_value_bytes: self.max_value_bytes.or(file.max_value_bytes),
            max_connections: self.max_connections.or(file.max_connections),
            idle_timeout_ms: self.idle_timeout_ms.or(file.idle_timeout_ms),
            body_timeout_ms: self.body_timeout_ms.or(file.body_timeout_ms),
            request_timeout_ms: self.request_timeout_ms.or(file.request_timeout_ms),
            shutdown_timeout_ms: self.shutdown_timeout_ms.or(file.shutdown_timeout_ms),
            watch_history_events: self.watch_history_events.or(file.watch_history_events),
            max_watchers: self.max_watchers.or(file.max_watchers),
        }
    }
}

/// One member of the cluster, as this node's flags describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    /// Named members only (and a port-named node given --name).
    pub name: Option<String>,
    /// `host:port` of its peer transport. `None` only for a node started without --peers whose
    /// port + 10000 is out of range: it has no peer port until one is given with --peer-port.
    pub peer_address: Option<String>,
    /// `host:port` it serves HTTP on: known from the flags for port-named members and for this
    /// node; a named member's comes from the log, where it publishes it (`member_publish.rs`).
    pub client_address: Option<String>,
}

impl Member {
    /// What the configuration in the log says about this member (`member_record.rs`).
    pub fn record(&self) -> Option<String> {
        let record = MemberRecord {
            peer_address: self.peer_address.clone()?,
            client_address: self.client_address.clone(),
            name: self.name.clone(),
        };
        Some(record.encode())
    }
}

/// A member of a port-named cluster, as a `--peers` entry gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMember {
    pub id: NodeId,
    pub host: String,
    pub http_port: u16,
    pub peer_port: Option<u16>,
}

impl PortMember {
    pub fn http_address(&self) -> String {
        format!("{}:{}", self.host, self.http_port)
    }

    pub fn peer_address(&self) -> Option<String> {
        self.peer_port.map(|port| format!("{}:{}", self.host, port))
    }

    pub fn member(&self, name: Option<String>) -> Member {
        Member {
            id: self.id,
            name,
            peer_address: self.peer_address(),
            client_address: Some(self.http_address()),
        }
    }
}

/// The peer port of a member whose entry does not give one.
pub fn derived_peer_port(http_port: u16) -> Result<u16, ConfigError> {
    http_port.checked_add(PEER_PORT_OFFSET).ok_or(ConfigError::PeerPortOverflow { port: http_port })
}

/// Parses `[host]:port[/peer_port]`.
pub fn parse_member(entry: &str) -> Result<PortMember, ConfigError> {
    let bad =
        |reason: &str| ConfigError::BadMember { entry: entry.to_string(), reason: reason.into() };
    let entry = entry.trim();
    let (address, peer_port) = match entry.split_once('/') {
        Some((address, peer)) => {
            let peer_port: u16 = peer.parse().map_err(|_| bad("the peer port is not a number"))?;
            (address, Some(peer_port))
        }
        None => (entry, None),
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(|| bad("expected [host]:port"))?;
    let http_port: u16 = port.parse().map_err(|_| bad("the port is not a number 1-65535"))?;
    if http_port == 0 || peer_port == Some(0) {
        return Err(bad("port 0 cannot name a member"));
    }
    if host.chars().any(|c| c.is_whitespace() || c == '=') {
        return Err(bad("spaces and '=' cannot appear in a host"));
    }
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    let peer_port = match peer_port {
        Some(port) => port,
        None => derived_peer_port(http_port)?,
    };
    Ok(PortMember {
        id: NodeId(http_port as u64),
        host: host.to_string(),
        http_port,
        peer_port: Some(peer_port),
    })
}

/// A `--initial-cluster` entry, `name=peer-url`: the name and the peer address (`host:port`).
pub fn parse_named_member(entry: &str) -> Result<(String, String), ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid(format!("--initial-cluster: {reason}"));
    let (name, url) = entry
        .trim()
        .split_once('=')
        .ok_or_else(|| invalid(format!("{entry:?} is not name=peer-url")))?;
    member_record::check_name(name).map_err(invalid)?;
    let address =
        member_record::parse_address(url, &format!("the peer URL of {name}")).map_err(invalid)?;
    Ok((name.to_string(), address))
}

/// Network-facing limits of the HTTP server.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub idle_timeout_ms: u64,
    pub body_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub shutdown_timeout_ms: u64,
    pub max_watchers: usize,
}

/// How members are told apart (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Naming {
    /// By HTTP port (`--port`, `--peers`): the HTTP port is also the node id.
    Ports { http_port: u16 },
    /// By name (`--initial-cluster`), in the cluster of this token.
    Names { token: String },
}

/// How the keyspace of a cluster created with `--shards` above 1 is split. Every member must
/// be started with the same values; the data directory records them (`shard_layout.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sharding {
    pub shards: u64,
    pub replication: usize,
    pub slots: SlotCount,
}

impl Sharding {
    const DEFAULT_REPLICATION: usize = 3;

    /// `None` for a single group (`--shards 1`, the default), which keeps today's layout.
    fn resolve(options: &ServeOptions) -> Result<Option<Sharding>, ConfigError> {
        let shards = options.shards.unwrap_or(1);
        if shards == 0 || shards > u64::from(ShardMap::MAX_SHARDS) {
            return Err(ConfigError::Invalid(format!(
                "--shards must be between 1 and {} (given {shards})",
                ShardMap::MAX_SHARDS
            )));
        }
        let replication = options.replication.unwrap_or(Self::DEFAULT_REPLICATION);
        if replication == 0 || replication > ShardMap::MAX_REPLICAS {
            return Err(ConfigError::Invalid(format!(
                "--replication must be between 1 and {} (given {replication})",
                ShardMap::MAX_REPLICAS
            )));
        }
        let slots = SlotCount::new(options.slots.unwrap_or(u64::from(SlotCount::DEFAULT.get())))
            .map_err(|error| ConfigError::Invalid(format!("--slots: {error}")))?;
        if shards == 1 {
            return Ok(None);
        }
        if u64::from(slots.get()) < shards {
            return Err(ConfigError::Invalid(format!(
                "--slots ({}) must be at least --shards ({shards}): a shard owns at least one slot",
                slots.get()
            )));
        }
        Ok(Some(Sharding { shards, replication, slots }))
    }

    /// The shard map the cluster is created with: the same on every member given the same
    /// flags (see `ShardMap::bootstrap`).
    pub fn bootstrap_map(&self, members: &[NodeId]) -> Result<ShardMap, ShardMapError> {
        ShardMap::bootstrap(self.slots, self.shards, members, self.replication)
    }
}

/// The resolved, validated settings of one node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub naming: Naming,
    /// This member's name (for a port-named node, only if --name was given).
    pub name: Option<String>,
    /// Where the HTTP server binds, `host:port`.
    pub listen_client: String,
    /// Where the peer transport binds; `None`: no peer port (see [`Member::peer_address`]).
    pub listen_peer: Option<String>,
    /// How clients and the other members reach this node's HTTP API, `host:port`.
    pub advertised_client: String,
    /// Every member, this node included, as the flags describe them.
    pub members: BTreeMap<NodeId, Member>,
    /// Joining an existing cluster: no configuration of its own (see `--join`).
    pub join: bool,
    pub snapshot_every_entries: u64,
    pub retained_log_entries: u64,
    pub working_dir: PathBuf,
    pub tick_ms: u64,
    pub election_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub fsync: bool,
    /// `Some(max_clock_drift_ppm)` when lease reads are on.
    pub lease_drift_ppm: Option<u32>,
    pub forward_to_leader: bool,
    /// A sharded cluster's leaderships are kept even (`http/leader_balancer.rs`).
    pub balance_leaders: bool,
    pub kv_limits: KvLimits,
    pub http: HttpLimits,
    pub watch_history_events: usize,
    /// Peers refuse connections carrying another cluster id.
    pub cluster_id: u64,
    /// `Some` when the keyspace is split into more than one shard (`--shards`).
    pub sharding: Option<Sharding>,
    /// The settings this configuration was resolved from (for `--print-config`).
    pub options: ServeOptions,
}

fn positive(value: u64, name: &str) -> Result<u64, ConfigError> {
    if value == 0 {
        return Err(ConfigError::Invalid(format!("{name} must be positive")));
    }
    Ok(value)
}

/// Who this node is and where it listens: the part of a configuration that depends on how
/// members are named.
struct Identity {
    node_id: NodeId,
    naming: Naming,
    name: Option<String>,
    listen_client: String,
    listen_peer: Option<String>,
    advertised_client: String,
    members: BTreeMap<NodeId, Member>,
    cluster_id: u64,
    default_working_dir: PathBuf,
}

/// Flags that only a cluster formed with --initial-cluster has a use for.
fn named_only_flags(options: &ServeOptions) -> Vec<&'static str> {
    [
        (options.initial_cluster_token.is_some(), "--initial-cluster-token"),
        (options.listen_client.is_some(), "--listen-client"),
        (options.listen_peer.is_some(), "--listen-peer"),
        (options.advertise_client_url.is_some(), "--advertise-client-url"),
        (options.advertise_peer_url.is_some(), "--advertise-peer-url"),
    ]
    .into_iter()
    .filter_map(|(given, flag)| given.then_some(flag))
    .collect()
}

fn resolve_port_named(options: &ServeOptions) -> Result<Identity, ConfigError> {
    let named_only = named_only_flags(options);
    if !named_only.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "{} need(s) --initial-cluster; with --port and --peers, members are named by port \
             (use --host and --peer-port to place them)",
            named_only.join(", ")
        )));
    }
    if let Some(name) = &options.name {
        member_record::check_name(name).map_err(ConfigError::Invalid)?;
    }
    let port = options.port.unwrap_or(DEFAULT_PORT);
    if port == 0 {
        return Err(ConfigError::Invalid("--port must be 1-65535".into()));
    }
    let mut port_members = BTreeMap::new();
    match &options.peers {
        Some(entries) if !entries.is_empty() => {
            for entry in entries.iter().filter(|entry| !entry.trim().is_empty()) {
                let member = parse_member(entry)?;
                let port = member.http_port;
                if port_members.insert(member.id, member).is_some() {
                    return Err(ConfigError::DuplicateMember { port });
                }
            }
        }
        _ => {
            let host = options.host.clone().unwrap_or_else(|| "127.0.0.1".into());
            // A cluster of one needs a peer port only to grow; without one it still serves.
            let peer_port = options.peer_port.or_else(|| derived_peer_port(port).ok());
            let member = PortMember { id: NodeId(port as u64), host, http_port: port, peer_port };
            port_members.insert(member.id, member);
        }
    }
    let node_id = NodeId(port as u64);
    let Some(me) = port_members.get_mut(&node_id) else {
        let peers = options.peers.clone().unwrap_or_default().join(",");
        return Err(ConfigError::SelfNotMember { port, peers });
    };
    if let Some(peer_port) = options.peer_port {
        me.peer_port = Some(peer_port);
    }
    if me.peer_port == Some(me.http_port) {
        return Err(ConfigError::Invalid(format!(
            "the peer port of node {port} equals its HTTP port"
        )));
    }
    let bind_host = options.host.clone().unwrap_or_else(|| me.host.clone());
    let listen_peer = me.peer_port.map(|peer_port| format!("{bind_host}:{peer_port}"));
    let advertised_client = me.http_address();
    let cluster_id = port_cluster_id(&port_members);
    let members = port_members
        .values()
        .map(|member| {
            let name = if member.id == node_id { options.name.clone() } else { None };
            (member.id, member.member(name))
        })
        .collect();
    Ok(Identity {
        node_id,
        naming: Naming::Ports { http_port: port },
        name: options.name.clone(),
        listen_client: format!("{bind_host}:{port}"),
        listen_peer,
        advertised_client,
        members,
        cluster_id,
        default_working_dir: PathBuf::from(format!("conclave-{port}")),
    })
}

fn resolve_named(options: &ServeOptions, entries: &[String]) -> Result<Identity, ConfigError> {
    let invalid = |text: String| ConfigError::Invalid(text);
    let port_only = [
        (options.port.is_some(), "--port"),
        (options.peers.is_some(), "--peers"),
        (options.peer_port.is_some(), "--peer-port"),
        (options.host.is_some(), "--host"),
    ];
    let port_only: Vec<&str> =
        port_only.into_iter().filter_map(|(given, flag)| given.then_some(flag)).collect();
    if !port_only.is_empty() {
        return Err(invalid(format!(
            "{} cannot be combined with --initial-cluster (use --listen-client, --listen-peer \
             and the advertise URLs)",
            port_only.join(", ")
        )));
    }
    let token = options.initial_cluster_token.clone().filter(|token| !token.trim().is_empty());
    let Some(token) = token else {
        return Err(invalid(
            "--initial-cluster needs --initial-cluster-token: a name unique to this cluster, so \
             that members of two clusters never accept each other"
                .into(),
        ));
    };
    let cluster_id = member_ids::cluster_id_for_token(&token);
    let name = match &options.name {
        Some(name) => name.clone(),
        None => member_ids::host_name().map_err(|error| {
            invalid(format!("cannot default --name to the host name ({error}); give --name"))
        })?,
    };
    member_record::check_name(&name).map_err(invalid)?;
    let mut members: BTreeMap<NodeId, Member> = BTreeMap::new();
    for entry in entries.iter().filter(|entry| !entry.trim().is_empty()) {
        let (member_name, peer_address) = parse_named_member(entry)?;
        let id = member_ids::member_id_for_name(cluster_id, &member_name);
        let member = Member {
            id,
            name: Some(member_name.clone()),
            peer_address: Some(peer_address),
            client_address: None,
        };
        if let Some(earlier) = members.insert(id, member) {
            let earlier = earlier.name.unwrap_or_default();
            return Err(invalid(if earlier == member_name {
                format!("--initial-cluster names {member_name} twice")
            } else {
                format!("members {earlier} and {member_name} have the same id: rename one")
            }));
        }
    }
    let node_id = member_ids::member_id_for_name(cluster_id, &name);
    let listed: Vec<String> = members.values().filter_map(|m| m.name.clone()).collect();
    let Some(me) = members.get_mut(&node_id) else {
        return Err(invalid(format!(
            "this member, {name}, is not in --initial-cluster ({}); the list includes every \
             member, this one too (set --name if the host name is not the member's name)",
            listed.join(",")
        )));
    };
    let listed_peer = me.peer_address.clone().unwrap_or_default();
    let advertised_peer = match &options.advertise_peer_url {
        Some(url) => member_record::parse_address(url, "--advertise-peer-url").map_err(invalid)?,
        None => listed_peer.clone(),
    };
    if advertised_peer != listed_peer {
        return Err(invalid(format!(
            "--advertise-peer-url ({advertised_peer}) differs from this member's entry in \
             --initial-cluster ({listed_peer})"
        )));
    }
    let (peer_host, peer_port) = split_host_port(&advertised_peer);
    let listen_client = match &options.listen_client {
        Some(address) => {
            member_record::parse_address(address, "--listen-client").map_err(invalid)?
        }
        None => format!("0.0.0.0:{NAMED_DEFAULT_CLIENT_PORT}"),
    };
    let listen_peer = match &options.listen_peer {
        Some(address) => member_record::parse_address(address, "--listen-peer").map_err(invalid)?,
        // Every address of the peer URL's family (an IPv4 wildcard would not hear `[::1]`).
        None if peer_host.starts_with('[') => format!("[::]:{peer_port}"),
        None => format!("0.0.0.0:{peer_port}"),
    };
    let advertised_client = match &options.advertise_client_url {
        Some(url) => {
            member_record::parse_address(url, "--advertise-client-url").map_err(invalid)?
        }
        // Reached where its peers reach it, on the port it serves clients on.
        None => format!("{peer_host}:{}", split_host_port(&listen_client).1),
    };
    me.client_address = Some(advertised_client.clone());
    let own_record = me.record().unwrap_or_default();
    if own_record.len() > member_record::MAX_RECORD_BYTES {
        return Err(invalid(format!(
            "this member's name and advertised URLs take {} bytes, more than {}: use shorter names",
            own_record.len(),
            member_record::MAX_RECORD_BYTES
        )));
    }
    Ok(Identity {
        node_id,
        naming: Naming::Names { token },
        name: Some(name.clone()),
        listen_client,
        listen_peer: Some(listen_peer),
        advertised_client,
        members,
        cluster_id,
        default_working_dir: PathBuf::from(format!("conclave-{name}")),
    })
}

/// `host` and `port` of a checked `host:port`.
fn split_host_port(address: &str) -> (&str, &str) {
    address.rsplit_once(':').unwrap_or((address, ""))
}

impl NodeConfig {
    pub fn resolve(options: ServeOptions) -> Result<NodeConfig, ConfigError> {
        let identity = match &options.initial_cluster {
            Some(entries) if entries.iter().any(|entry| !entry.trim().is_empty()) => {
                resolve_named(&options, entries)?
            }
            _ => resolve_port_named(&options)?,
        };

        let tick_ms = positive(options.tick_ms.unwrap_or(10), "--tick-ms")?;
        let election_timeout_ms =
            positive(options.election_timeout_ms.unwrap_or(500), "--election-timeout-ms")?;
        let heartbeat_interval_ms =
            positive(options.heartbeat_interval_ms.unwrap_or(50), "--heartbeat-interval-ms")?;
        for (value, name) in [
            (election_timeout_ms, "--election-timeout-ms"),
            (heartbeat_interval_ms, "--heartbeat-interval-ms"),
        ] {
            if value % tick_ms != 0 {
                return Err(ConfigError::Invalid(format!(
                    "{name} ({value}) must be a multiple of --tick-ms ({tick_ms})"
                )));
            }
        }
        if heartbeat_interval_ms >= election_timeout_ms {
            return Err(ConfigError::Invalid(format!(
                "--heartbeat-interval-ms ({heartbeat_interval_ms}) must be shorter than --election-timeout-ms ({election_timeout_ms})"
            )));
        }
        if election_timeout_ms / tick_ms > u32::MAX as u64 {
            return Err(ConfigError::Invalid("--election-timeout-ms is too large".into()));
        }
        let defaults = KvLimits::default();
        let kv_limits = KvLimits {
            max_key_bytes: positive(
                options.max_key_bytes.unwrap_or(defaults.max_key_bytes),
                "--max-key-bytes",
            )?,
            max_value_bytes: positive(
                options.max_value_bytes.unwrap_or(defaults.max_value_bytes),
                "--max-value-bytes",
            )?,
            ..defaults
        };
        // A request carries one key and one value at least; keep room for a transaction's few.
        let kv_limits = KvLimits {
            max_request_bytes: kv_limits
                .max_request_bytes
                .max(2 * (kv_limits.max_value_bytes + kv_limits.max_key_bytes)),
            ..kv_limits
        };
        if kv_limits.max_value_bytes > 64 << 20 {
            return Err(ConfigError::Invalid("--max-value-bytes is at most 64 MiB".into()));
        }
        let lease_drift_ppm = if options.lease_reads.unwrap_or(false) {
            let ppm = options.max_clock_drift_ppm.unwrap_or(10_000);
            if ppm >= 500_000 {
                return Err(ConfigError::Invalid(
                    "--max-clock-drift-ppm must be below 500000".into(),
                ));
            }
            Some(ppm)
        } else {
            None
        };
        let http = HttpLimits {
            max_connections: positive(
                options.max_connections.unwrap_or(4096) as u64,
                "--max-connections",
            )? as usize,
            idle_timeout_ms: positive(
                options.idle_timeout_ms.unwrap_or(30_000),
                "--idle-timeout-ms",
            )?,
            body_timeout_ms: positive(
                options.body_timeout_ms.unwrap_or(10_000),
                "--body-timeout-ms",
            )?,
            request_timeout_ms: positive(
                options.request_timeout_ms.unwrap_or(5_000),
                "--request-timeout-ms",
            )?,
            shutdown_timeout_ms: options.shutdown_timeout_ms.unwrap_or(10_000),
            max_watchers: positive(options.max_watchers.unwrap_or(1024) as u64, "--max-watchers")?
                as usize,
        };
        let watch_history_events = positive(
            options.watch_history_events.unwrap_or(10_000) as u64,
            "--watch-history-events",
        )? as usize;
        let sharding = Sharding::resolve(&options)?;
        if sharding.is_some() && options.join.unwrap_or(false) {
            return Err(ConfigError::Invalid(
                "--join is not supported with --shards above 1 yet: a sharded cluster is \
                 created with all its members in --peers or --initial-cluster"
                    .into(),
            ));
        }
        let node = NodeConfig {
            node_id: identity.node_id,
            naming: identity.naming,
            name: identity.name,
            listen_client: identity.listen_client,
            listen_peer: identity.listen_peer,
            advertised_client: identity.advertised_client,
            working_dir: options.working_dir.clone().unwrap_or(identity.default_working_dir),
            members: identity.members,
            tick_ms,
            election_timeout_ms,
            heartbeat_interval_ms,
            fsync: options.fsync.unwrap_or(true),
            lease_drift_ppm,
            forward_to_leader: options.forward_to_leader.unwrap_or(false),
            balance_leaders: options.balance_leaders.unwrap_or(true),
            join: options.join.unwrap_or(false),
            snapshot_every_entries: positive(
                options.snapshot_every_entries.unwrap_or(50_000),
                "--snapshot-every-entries",
            )?,
            retained_log_entries: options.retained_log_entries.unwrap_or(5_000),
            kv_limits,
            http,
            watch_history_events,
            cluster_id: identity.cluster_id,
            sharding,
            options,
        };
        debug_assert!(node.members.contains_key(&node.node_id), "a node is one of its members");
        Ok(node)
    }

    /// Every setting in force, defaults filled in: what `--print-config` prints, and a config
    /// file that resolves to this very configuration.
    pub fn effective_options(&self) -> ServeOptions {
        let given = &self.options;
        let mut effective = ServeOptions {
            working_dir: Some(self.working_dir.clone()),
            join: Some(self.join),
            election_timeout_ms: Some(self.election_timeout_ms),
            heartbeat_interval_ms: Some(self.heartbeat_interval_ms),
            tick_ms: Some(self.tick_ms),
            fsync: Some(self.fsync),
            lease_reads: Some(self.lease_drift_ppm.is_some()),
            max_clock_drift_ppm: self.lease_drift_ppm.or(given.max_clock_drift_ppm),
            snapshot_every_entries: Some(self.snapshot_every_entries),
            retained_log_entries: Some(self.retained_log_entries),
            forward_to_leader: Some(self.forward_to_leader),
            balance_leaders: Some(self.balance_leaders),
            max_key_bytes: Some(self.kv_limits.max_key_bytes),
            max_value_bytes: Some(self.kv_limits.max_value_bytes),
            max_connections: Some(self.http.max_connections),
            idle_timeout_ms: Some(self.http.idle_timeout_ms),
            body_timeout_ms: Some(self.http.body_timeout_ms),
            request_timeout_ms: Some(self.http.request_timeout_ms),
            shutdown_timeout_ms: Some(self.http.shutdown_timeout_ms),
            watch_history_events: Some(self.watch_history_events),
            max_watchers: Some(self.http.max_watchers),
            shards: Some(self.sharding.as_ref().map_or(1, |sharding| sharding.shards)),
            replication: self.sharding.as_ref().map(|sharding| sharding.replication),
            slots: self.sharding.as_ref().map(|sharding| u64::from(sharding.slots.get())),
            name: self.name.clone(),
            ..ServeOptions::default()
        };
        match &self.naming {
            Naming::Ports { http_port } => {
                effective.port = Some(*http_port);
                effective.host = Some(split_host_port(&self.listen_client).0.to_string());
                effective.peers = given.peers.clone();
                effective.peer_port = self
                    .listen_peer
                    .as_deref()
                    .and_then(|address| split_host_port(address).1.parse().ok());
            }
            Naming::Names { token } => {
                effective.initial_cluster = given.initial_cluster.clone();
                effective.initial_cluster_token = Some(token.clone());
                effective.listen_client = Some(self.listen_client.clone());
                effective.listen_peer = self.listen_peer.clone();
                effective.advertise_client_url = Some(format!("http://{}", self.advertised_client));
                effective.advertise_peer_url = self.advertised_peer();
            }
        }
        effective
    }

    /// How this member's data directory is named under the working directory
    /// (`data_dir::member_dir`): a port-named member's id, a named member's name.
    pub fn data_dir_member(&self) -> String {
        match (&self.naming, &self.name) {
            (Naming::Names { .. }, Some(name)) => name.clone(),
            _ => self.node_id.0.to_string(),
        }
    }

    /// Where the HTTP server binds.
    pub fn http_bind_address(&self) -> String {
        self.listen_client.clone()
    }

    /// Where the peer transport binds; `None` without a peer port.
    pub fn peer_bind_address(&self) -> Option<String> {
        self.listen_peer.clone()
    }

    /// Where the other members reach this node's peer transport.
    pub fn advertised_peer(&self) -> Option<String> {
        self.members.get(&self.node_id).and_then(|member| member.peer_address.clone())
    }

    /// What this node wants the log to say about it: a named member's advertised addresses
    /// and name; a port-named member's peer address alone (see [`NodeConfig::peer_addresses`]).
    pub fn own_record(&self) -> Option<String> {
        let me = self.members.get(&self.node_id)?;
        match self.naming {
            Naming::Ports { .. } => me.peer_address.clone(),
            Naming::Names { .. } => me.record(),
        }
    }

    /// Whether the peer port must be listening from the start: the node has peers, or is
    /// joining a cluster. A cluster of one binds it only once members are added.
    pub fn listens_for_peers_at_start(&self) -> bool {
        self.join || self.members.len() > 1
    }

    /// Each member's record (`member_record.rs`): in a configuration the log starts from, for
    /// the transport to dial. A named member's client URL is not known yet (only its own, which
    /// it publishes once there is a leader), so no member's is written: every member starts
    /// from the same configuration. A port-named member's record is its peer address alone,
    /// byte for byte what earlier versions wrote: its client address follows from its id (its
    /// HTTP port) and its host, and the shorthand's log and hello stay exactly as they were.
    pub fn peer_addresses(&self) -> BTreeMap<NodeId, String> {
        self.members
            .iter()
            .filter_map(|(id, member)| {
                let record = match self.naming {
                    Naming::Ports { .. } => member.peer_address.clone()?,
                    Naming::Names { .. } => {
                        Member { client_address: None, ..member.clone() }.record()?
                    }
                };
                Some((*id, record))
            })
            .collect()
    }

    /// The configuration a brand-new cluster starts from (a snapshot carries its own).
    pub fn initial_cluster(&self) -> ClusterConfig {
        // A joining node knows where its peers are (to answer the leader) but is nobody's
        // voter: it cannot campaign until the leader's log or snapshot says otherwise.
        let mut config = if self.join {
            ClusterConfig::default()
        } else {
            ClusterConfig::with_voters(self.members.keys().copied())
        };
        config.addresses = self.peer_addresses();
        config
    }

    /// The shard map a sharded cluster is created with; `None` for a single group.
    pub fn bootstrap_map(&self) -> Option<Result<ShardMap, ShardMapError>> {
        let members: Vec<NodeId> = self.members.keys().copied().collect();
        self.sharding.as_ref().map(|sharding| sharding.bootstrap_map(&members))
    }

    /// The configuration a hosted group of a new sharded cluster starts from: its replicas in
    /// `map` as voters, and every member's address (a snapshot carries its own).
    pub fn initial_group_config(&self, map: &ShardMap, shard: ShardId) -> ClusterConfig {
        let replicas = map.shard(shard).map(|info| info.replicas.clone()).unwrap_or_default();
        let mut config = ClusterConfig::with_voters(replicas);
        config.addresses = self.peer_addresses();
        config
    }

    /// The HTTP addresses of the other members (to discover the cluster's id when joining).
    pub fn other_http_addresses(&self) -> Vec<String> {
        self.members
            .values()
            .filter(|member| member.id != self.node_id)
            .filter_map(|member| member.client_address.clone())
            .collect()
    }

    pub fn engine_config(&self) -> EngineConfig {
        let mut config = EngineConfig::new(self.node_id);
        let largest_entry_bytes =
            self.kv_limits.max_request_bytes + self.kv_limits.max_key_bytes + 64 * 1024;
        config.tick_ms = self.tick_ms;
        config.snapshot_every_entries = self.snapshot_every_entries;
        config.retained_log_entries = self.retained_log_entries;
        config.kv_limits = self.kv_limits.clone();
        config.raft = RaftConfig {
            election_timeout_ticks: (self.election_timeout_ms / self.tick_ms) as u32,
            heartbeat_interval_ticks: (self.heartbeat_interval_ms / self.tick_ms) as u32,
            lease_read: self
                .lease_drift_ppm
                .map(|max_clock_drift_ppm| LeaseConfig { max_clock_drift_ppm }),
            max_message_bytes: config.raft.max_message_bytes.max(largest_entry_bytes),
            ..config.raft
        };
        config
    }

    /// The HTTP address of a member for redirects and forwarding, given the record the
    /// configuration in force has for it (if any): what the member advertised; for this node,
    /// what it advertises now; for a port-named member (whose record is its peer address), its
    /// host and its id, which is its HTTP port.
    pub fn http_address_of(&self, id: NodeId, record: Option<&str>) -> Option<String> {
        if id == self.node_id {
            return Some(self.advertised_client.clone());
        }
        let record = record.map(MemberRecord::parse);
        if let Some(client) = record.as_ref().and_then(|record| record.client_address.clone()) {
            return Some(client);
        }
        if let Some(client) = self.members.get(&id).and_then(|m| m.client_address.clone()) {
            return Some(client);
        }
        let record = record?;
        if record.name.is_some() {
            return None;
        }
        let (host, _peer_port) = record.peer_address.rsplit_once(':')?;
        let http_port = u16::try_from(id.0).ok().filter(|port| *port != 0)?;
        Some(format!("{host}:{http_port}"))
    }

    /// A member's id from how an operator names it: the id itself, a port-named member's
    /// `:port` or `host:port[/peer_port]`, or a named member's name (an id is derived from the
    /// name and this cluster's id, so a name need not be a member yet).
    pub fn member_id_of(&self, text: &str) -> Result<NodeId, String> {
        let text = text.trim();
        if let Ok(id) = text.parse::<u64>() {
            return Ok(NodeId(id));
        }
        if member_record::check_name(text).is_ok() {
            return Ok(member_ids::member_id_for_name(self.cluster_id, text));
        }
        parse_member(text).map(|member| member.id).map_err(|error| error.to_string())
    }
}

/// A member's id from `8004`, `:8004` or `host:8004[/peer_port]` (port-named members).
pub fn parse_member_id(text: &str) -> Result<NodeId, String> {
    let text = text.trim();
    if let Ok(id) = text.parse::<u64>() {
        return Ok(NodeId(id));
    }
    parse_member(text).map(|member| member.id).map_err(|error| error.to_string())
}

/// FNV-1a over the sorted member list: equal lists give equal ids on every node.
fn port_cluster_id(members: &BTreeMap<NodeId, PortMember>) -> u64 {
    let mut hasher = conclave_core::hash::Fnv1a::default();
    for member in members.values() {
        let peer_port = member.peer_port.unwrap_or(0);
        hasher
            .write(format!("{}={}/{};", member.id.0, member.http_address(), peer_port).as_bytes());
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(peers: &str, port: u16) -> ServeOptions {
        ServeOptions {
            port: Some(port),
            peers: Some(peers.split(',').map(String::from).collect()),
            ..ServeOptions::default()
        }
    }

    #[test]
    fn a_member_is_named_by_its_id_or_like_in_peers() {
        assert_eq!(parse_member_id("8004"), Ok(NodeId(8004)));
        assert_eq!(parse_member_id(":8004"), Ok(NodeId(8004)));
        assert_eq!(parse_member_id("127.0.0.1:8004/9104"), Ok(NodeId(8004)));
        assert!(parse_member_id("eight").is_err());
    }

    #[test]
    fn a_members_http_address_is_what_it_advertised() {
        let config = NodeConfig::resolve(options(":8001,:8002", 8001)).expect("valid");
        // In the log, with its client URL.
        let record = "10.0.0.4:9004 client=http://10.0.0.4:7004";
        assert_eq!(
            config.http_address_of(NodeId(8004), Some(record)).as_deref(),
            Some("10.0.0.4:7004")
        );
        // This node: what it advertises. A port-named member: from --peers.
        assert_eq!(config.http_address_of(NodeId(8001), None).as_deref(), Some("127.0.0.1:8001"));
        assert_eq!(config.http_address_of(NodeId(8002), None).as_deref(), Some("127.0.0.1:8002"));
        // A record of an earlier version: its host, and its id as port.
        assert_eq!(
            config.http_address_of(NodeId(8004), Some("[::1]:9004")).as_deref(),
            Some("[::1]:8004")
        );
        assert_eq!(config.http_address_of(NodeId(70_000), Some("h:9004")), None);
        // A named member that has not published its client URL yet: unknown, not guessed.
        assert_eq!(config.http_address_of(NodeId(70_000), Some("h:2380 name=b")), None);
    }

    #[test]
    fn members_are_named_by_port_with_a_derived_peer_port() {
        let member = parse_member(":8001").expect("valid");
        assert_eq!(member.id, NodeId(8001));
        assert_eq!(member.http_address(), "127.0.0.1:8001");
        assert_eq!(member.member(None).client_address.as_deref(), Some("127.0.0.1:8001"));
        assert_eq!(member.peer_address().as_deref(), Some("127.0.0.1:18001"));
        let member = parse_member("10.0.0.2:8002/9002").expect("valid");
        assert_eq!(member.peer_address().as_deref(), Some("10.0.0.2:9002"));
        assert!(matches!(parse_member(":60000"), Err(ConfigError::PeerPortOverflow { .. })));
        assert!(parse_member("8001").is_err());
        assert!(parse_member(":x").is_err());
    }

    #[test]
    fn port_named_records_are_peer_addresses_as_before() {
        let config = NodeConfig::resolve(options(":8001,10.0.0.2:8002/9002", 8001)).expect("valid");
        let addresses = config.initial_cluster().addresses;
        let expected: BTreeMap<NodeId, String> = [
            (NodeId(8001), "127.0.0.1:18001".to_string()),
            (NodeId(8002), "10.0.0.2:9002".to_string()),
        ]
        .into();
        assert_eq!(addresses, expected);
        assert_eq!(config.own_record().as_deref(), Some("127.0.0.1:18001"));
        // So a port-named member never has anything to publish.
        assert_eq!(config.own_record().as_ref(), addresses.get(&config.node_id));
    }

    #[test]
    fn the_node_must_be_one_of_the_peers_and_ports_distinct() {
        assert!(NodeConfig::resolve(options(":8001,:8002,:8003", 8002)).is_ok());
        assert!(matches!(
            NodeConfig::resolve(options(":8001,:8002", 8005)),
            Err(ConfigError::SelfNotMember { .. })
        ));
        assert!(matches!(
            NodeConfig::resolve(options(":8001,10.0.0.1:8001", 8001)),
            Err(ConfigError::DuplicateMember { .. })
        ));
    }

    #[test]
    fn cluster_ids_depend_on_the_member_list_only() {
        let a = NodeConfig::resolve(options(":8001,:8002,:8003", 8001)).expect("valid");
        let b = NodeConfig::resolve(options(":8003,:8001,:8002", 8002)).expect("valid");
        let c = NodeConfig::resolve(options(":8001,:8002,:8004", 8001)).expect("valid");
        assert_eq!(a.cluster_id, b.cluster_id);
        assert_ne!(a.cluster_id, c.cluster_id);
    }

    #[test]
    fn flags_win_over_the_file() {
        let file = ServeOptions { port: Some(9000), tick_ms: Some(5), ..ServeOptions::default() };
        let flags = ServeOptions { port: Some(9100), ..ServeOptions::default() };
        let merged = flags.over(file);
        assert_eq!((merged.port, merged.tick_ms), (Some(9100), Some(5)));
        let parsed: ServeOptions =
            toml::from_str("port = 8001\npeers = [\":8001\", \":8002\"]\ndata_dir = \"d\"\n")
                .expect("valid toml");
        assert_eq!(parsed.working_dir, Some(PathBuf::from("d")));
        assert!(toml::from_str::<ServeOptions>("prot = 1").is_err());
    }

    #[test]
    fn a_cluster_of_one_needs_no_peer_port() {
        let single = ServeOptions { port: Some(60_000), ..ServeOptions::default() };
        let config = NodeConfig::resolve(single).expect("a single node on port 60000");
        assert_eq!(config.listen_peer, None);
        assert!(config.peer_addresses().is_empty());
        assert!(!config.listens_for_peers_at_start());
        let clustered = NodeConfig::resolve(options(":8001,:8002", 8001)).expect("valid");
        assert!(clustered.listens_for_peers_at_start());
        // In a member list every member needs one.
        assert!(NodeConfig::resolve(options(":60000,:8002", 8002)).is_err());
    }

    #[test]
    fn timeouts_are_validated_against_the_tick() {
        let mut bad = options(":8001", 8001);
        bad.election_timeout_ms = Some(505);
        assert!(NodeConfig::resolve(bad).is_err());
        let mut bad = options(":8001", 8001);
        bad.heartbeat_interval_ms = Some(600);
        assert!(NodeConfig::resolve(bad).is_err());
        let config = NodeConfig::resolve(options(":8001", 8001)).expect("valid");
        assert_eq!(config.engine_config().raft.election_timeout_ticks, 50);
    }

    fn named(name: &str, extra: impl FnOnce(&mut ServeOptions)) -> Result<NodeConfig, ConfigError> {
        let mut options = ServeOptions {
            name: Some(name.into()),
            initial_cluster: Some(vec![
                "a=10.0.0.1:2380".into(),
                "b=http://10.0.0.2:2380".into(),
                "c=node-c.example:2380".into(),
            ]),
            initial_cluster_token: Some("kv-prod".into()),
            ..ServeOptions::default()
        };
        extra(&mut options);
        NodeConfig::resolve(options)
    }

    #[test]
    fn named_members_share_ports_and_are_told_apart_by_name() {
        let a = named("a", |_| {}).expect("valid");
        let b = named("b", |o| o.listen_client = Some("0.0.0.0:2379".into())).expect("valid");
        assert_eq!(a.cluster_id, b.cluster_id);
        assert_eq!(a.cluster_id, member_ids::cluster_id_for_token("kv-prod"));
        assert_eq!(a.members.keys().collect::<Vec<_>>(), b.members.keys().collect::<Vec<_>>());
        assert_ne!(a.node_id, b.node_id);
        assert_eq!(a.node_id, member_ids::member_id_for_name(a.cluster_id, "a"));
        // Same ports on every host; each advertises its own host.
        assert_eq!(a.listen_peer.as_deref(), Some("0.0.0.0:2380"));
        assert_eq!(b.listen_peer.as_deref(), Some("0.0.0.0:2380"));
        assert_eq!(a.advertised_client, "10.0.0.1:2379");
        assert_eq!(a.listen_client, "0.0.0.0:2379");
        assert_eq!(b.advertised_client, "10.0.0.2:2379");
        assert_eq!(a.working_dir, PathBuf::from("conclave-a"));
        // Every member starts from the same configuration: peer addresses and names.
        assert_eq!(a.initial_cluster(), b.initial_cluster());
        let c_id = member_ids::member_id_for_name(a.cluster_id, "c");
        assert_eq!(
            a.initial_cluster().addresses.get(&c_id).map(String::as_str),
            Some("node-c.example:2380 name=c")
        );
        // What it will publish: its advertised client URL too.
        assert_eq!(
            a.own_record().as_deref(),
            Some("10.0.0.1:2380 client=http://10.0.0.1:2379 name=a")
        );
        assert_eq!(a.member_id_of("c"), Ok(c_id));
    }

    #[test]
    fn a_named_cluster_needs_a_token_a_listed_name_and_no_port_flags() {
        let error =
            |result: Result<NodeConfig, ConfigError>| result.expect_err("refused").to_string();
        assert!(error(named("a", |o| o.initial_cluster_token = None)).contains("token"));
        assert!(error(named("d", |_| {})).contains("not in --initial-cluster"));
        assert!(error(named("a", |o| o.port = Some(8001))).contains("--port"));
        assert!(
            error(named("a", |o| o.advertise_peer_url = Some("10.9.9.9:2380".into())))
                .contains("differs")
        );
        assert!(named("a", |o| o.advertise_peer_url = Some("http://10.0.0.1:2380".into())).is_ok());
        let v6 = named("a", |o| o.initial_cluster = Some(vec!["a=[fd00::1]:2380".into()]));
        assert_eq!(v6.expect("valid").listen_peer.as_deref(), Some("[::]:2380"));
        assert!(
            error(named("a", |o| {
                o.initial_cluster = Some(vec!["a=h:1".into(), "a=h:2".into()]);
            }))
            .contains("twice")
        );
        assert!(
            error(named("a", |o| o.initial_cluster = Some(vec!["a:h:1".into()])))
                .contains("name=peer-url")
        );
        // And the port shorthand refuses the named-only flags.
        let mut shorthand = options(":8001", 8001);
        shorthand.listen_client = Some("0.0.0.0:1".into());
        assert!(error(NodeConfig::resolve(shorthand)).contains("--initial-cluster"));
    }

    #[test]
    fn the_effective_settings_resolve_to_the_same_configuration() {
        for config in [
            named("b", |o| o.election_timeout_ms = Some(1000)).expect("valid"),
            NodeConfig::resolve(options(":8001,:8002,10.1.1.1:8003/9", 8002)).expect("valid"),
            NodeConfig::resolve(ServeOptions::default()).expect("valid"),
        ] {
            let effective = config.effective_options();
            let text = toml::to_string(&effective).expect("printable");
            let reread: ServeOptions = toml::from_str(&text).expect("readable as a config file");
            assert_eq!(reread, effective);
            let again = NodeConfig::resolve(reread).expect("valid again");
            assert_eq!(again.effective_options(), effective, "{text}");
            assert_eq!(
                (again.node_id, again.cluster_id, again.initial_cluster()),
                (config.node_id, config.cluster_id, config.initial_cluster())
            );
        }
    }
}
