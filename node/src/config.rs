//! `conclave serve` settings: command-line flags and an optional TOML file (flags win), resolved
//! into one validated [`NodeConfig`].
//!
//! Ids and ports. A member is named by its HTTP address (`[host]:port`, host 127.0.0.1 when
//! omitted), and its Raft node id is its HTTP port: `:8001` is node 8001. So every member of a
//! cluster needs a distinct HTTP port, even on different hosts. The peer (Raft) transport
//! listens on the HTTP port + 10000 unless a member entry says otherwise with `/PEER_PORT`
//! (`10.0.0.1:8001/9001`), or `--peer-port` sets this node's. A node started without --peers
//! is a cluster of one and listens for peers only once members are added (so a peer port out
//! of range, or taken, costs a one-node store nothing). The cluster id that peers check when
//! they connect is a hash of the sorted member list, so nodes started with different member
//! lists refuse each other; the data directory records it (see `member_identity.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use conclave_core::engine::EngineConfig;
use conclave_core::kv::KvLimits;
use conclave_core::raft::{ClusterConfig, LeaseConfig, NodeId, RaftConfig};
use serde::Deserialize;
use thiserror::Error;

/// Added to a member's HTTP port to get its peer-transport port, unless given explicitly.
pub const PEER_PORT_OFFSET: u16 = 10_000;
/// The HTTP port when neither a flag nor the file names one.
pub const DEFAULT_PORT: u16 = 8001;
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
/// The same struct reads the TOML file (keys are the flag names with `_`).
#[derive(Args, Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeOptions {
    /// HTTP port; it is also this node's id [default: 8001].
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to bind (HTTP and peer transport) [default: this node's host in --peers, else
    /// 127.0.0.1].
    #[arg(long)]
    pub host: Option<String>,
    /// Directory for the write-ahead log, hard state and snapshots [default: ./conclave-PORT].
    #[arg(long, visible_alias = "data-dir")]
    #[serde(alias = "data_dir")]
    pub working_dir: Option<PathBuf>,
    /// Every member of the cluster, this node included: `[host]:port[/peer_port]`, comma
    /// separated (`:8001,:8002,:8003`). Without it the node is a single-node cluster.
    #[arg(long, value_delimiter = ',')]
    pub peers: Option<Vec<String>>,
    /// This node's peer-transport port [default: port + 10000].
    #[arg(long)]
    pub peer_port: Option<u16>,
    /// A follower that hears no leader for a random time in [T, 2T) campaigns [default: 500].
    #[arg(long)]
    pub election_timeout_ms: Option<u64>,
    /// How often a leader sends heartbeats [default: 50].
    #[arg(long)]
    pub heartbeat_interval_ms: Option<u64>,
    /// Raft clock granularity; the timeouts must be multiples of it [default: 10].
    #[arg(long)]
    pub tick_ms: Option<u64>,
    /// fdatasync the log before acknowledging (`--fsync=false` trades durability on power
    /// loss for speed; a process crash still loses nothing) [default: true].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub fsync: Option<bool>,
    /// Serve `?consistency=lease` reads from the leader's lease without a round trip; safe
    /// only while clocks drift less than --max-clock-drift-ppm [default: false].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub lease_reads: Option<bool>,
    /// Bound on clock drift assumed by lease reads, parts per million [default: 10000].
    #[arg(long)]
    pub max_clock_drift_ppm: Option<u32>,
    /// Take a snapshot of the state machine (and compact the log) every this many applied
    /// entries [default: 50000].
    #[arg(long)]
    pub snapshot_every_entries: Option<u64>,
    /// Entries kept behind a snapshot for followers that are slightly behind [default: 5000].
    #[arg(long)]
    pub retained_log_entries: Option<u64>,
    /// Join an existing cluster instead of starting a new one: the node starts with no
    /// configuration of its own and waits for the leader to replicate the cluster's to it
    /// (add it first with `conclave members add-learner`). It learns the cluster's id from the
    /// other members listed in --peers. Keep this flag on every restart [default: false].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub join: Option<bool>,
    /// Forward writes to the leader instead of answering 307 with its address [default: false].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub forward_to_leader: Option<bool>,
    /// Longest key in bytes [default: 4096]. Every member must use the same limits.
    #[arg(long)]
    pub max_key_bytes: Option<u64>,
    /// Largest value in bytes [default: 1048576].
    #[arg(long)]
    pub max_value_bytes: Option<u64>,
    /// Open HTTP connections at most; a connection beyond them is answered 503 (with
    /// Retry-After) and closed [default: 4096].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// A connection that sends no complete request head for this long is closed [default:
    /// 30000].
    #[arg(long)]
    pub idle_timeout_ms: Option<u64>,
    /// A request body must arrive within this long of its head, or the request gets 408 and
    /// the connection is closed [default: 10000].
    #[arg(long)]
    pub body_timeout_ms: Option<u64>,
    /// A request not answered in this time gets 504 [default: 5000].
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// On SIGTERM, in-flight requests get this long to finish [default: 10000].
    #[arg(long)]
    pub shutdown_timeout_ms: Option<u64>,
    /// Change events kept in memory so that a watch can start from a past revision
    /// [default: 10000].
    #[arg(long)]
    pub watch_history_events: Option<usize>,
    /// Concurrent watch streams at most [default: 1024].
    #[arg(long)]
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

    /// Each field from `self` (the flags) if set, else from `file`.
    pub fn over(self, file: ServeOptions) -> ServeOptions {
        ServeOptions {
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

/// One member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    pub host: String,
    pub http_port: u16,
    /// `None` only for a node started without --peers whose port + 10000 is out of range:
    /// it has no peer port until one is given with --peer-port.
    pub peer_port: Option<u16>,
}

impl Member {
    pub fn http_address(&self) -> String {
        format!("{}:{}", self.host, self.http_port)
    }

    pub fn peer_address(&self) -> Option<String> {
        self.peer_port.map(|port| format!("{}:{}", self.host, port))
    }
}

/// The peer port of a member whose entry does not give one.
pub fn derived_peer_port(http_port: u16) -> Result<u16, ConfigError> {
    http_port.checked_add(PEER_PORT_OFFSET).ok_or(ConfigError::PeerPortOverflow { port: http_port })
}

/// Parses `[host]:port[/peer_port]`.
pub fn parse_member(entry: &str) -> Result<Member, ConfigError> {
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
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    let peer_port = match peer_port {
        Some(port) => port,
        None => derived_peer_port(http_port)?,
    };
    Ok(Member {
        id: NodeId(http_port as u64),
        host: host.to_string(),
        http_port,
        peer_port: Some(peer_port),
    })
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

/// The resolved, validated settings of one node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: NodeId,
    /// Address the HTTP server and the peer transport bind.
    pub bind_host: String,
    pub http_port: u16,
    /// `None`: no peer port (see [`Member::peer_port`]).
    pub peer_port: Option<u16>,
    /// Every member, this node included.
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
    pub kv_limits: KvLimits,
    pub http: HttpLimits,
    pub watch_history_events: usize,
    /// Peers refuse connections carrying another cluster id.
    pub cluster_id: u64,
}

fn positive(value: u64, name: &str) -> Result<u64, ConfigError> {
    if value == 0 {
        return Err(ConfigError::Invalid(format!("{name} must be positive")));
    }
    Ok(value)
}

impl NodeConfig {
    pub fn resolve(options: ServeOptions) -> Result<NodeConfig, ConfigError> {
        let port = options.port.unwrap_or(DEFAULT_PORT);
        if port == 0 {
            return Err(ConfigError::Invalid("--port must be 1-65535".into()));
        }
        let mut members = BTreeMap::new();
        match &options.peers {
            Some(entries) if !entries.is_empty() => {
                for entry in entries.iter().filter(|entry| !entry.trim().is_empty()) {
                    let member = parse_member(entry)?;
                    let port = member.http_port;
                    if members.insert(member.id, member).is_some() {
                        return Err(ConfigError::DuplicateMember { port });
                    }
                }
            }
            _ => {
                let host = options.host.clone().unwrap_or_else(|| "127.0.0.1".into());
                // A cluster of one needs a peer port only to grow; without one it still serves.
                let peer_port = options.peer_port.or_else(|| derived_peer_port(port).ok());
                let member = Member { id: NodeId(port as u64), host, http_port: port, peer_port };
                members.insert(member.id, member);
            }
        }
        let node_id = NodeId(port as u64);
        let Some(me) = members.get_mut(&node_id) else {
            let peers = options.peers.unwrap_or_default().join(",");
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
        let peer_port = me.peer_port;
        let bind_host = options.host.clone().unwrap_or_else(|| me.host.clone());

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
        let cluster_id = cluster_id(&members);
        Ok(NodeConfig {
            node_id,
            bind_host,
            http_port: port,
            peer_port,
            working_dir: options
                .working_dir
                .unwrap_or_else(|| PathBuf::from(format!("conclave-{port}"))),
            members,
            tick_ms,
            election_timeout_ms,
            heartbeat_interval_ms,
            fsync: options.fsync.unwrap_or(true),
            lease_drift_ppm,
            forward_to_leader: options.forward_to_leader.unwrap_or(false),
            join: options.join.unwrap_or(false),
            snapshot_every_entries: positive(
                options.snapshot_every_entries.unwrap_or(50_000),
                "--snapshot-every-entries",
            )?,
            retained_log_entries: options.retained_log_entries.unwrap_or(5_000),
            kv_limits,
            http,
            watch_history_events,
            cluster_id,
        })
    }

    pub fn http_bind_address(&self) -> String {
        format!("{}:{}", self.bind_host, self.http_port)
    }

    /// Where the peer transport listens; `None` without a peer port.
    pub fn peer_bind_address(&self) -> Option<String> {
        self.peer_port.map(|port| format!("{}:{}", self.bind_host, port))
    }

    /// Whether the peer port must be listening from the start: the node has peers, or is
    /// joining a cluster. A cluster of one binds it only once members are added.
    pub fn listens_for_peers_at_start(&self) -> bool {
        self.join || self.members.len() > 1
    }

    /// Where each member's peer transport listens.
    pub fn peer_addresses(&self) -> BTreeMap<NodeId, String> {
        self.members.iter().filter_map(|(id, member)| Some((*id, member.peer_address()?))).collect()
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

    /// The HTTP addresses of the other members (to discover the cluster's id when joining).
    pub fn other_http_addresses(&self) -> Vec<String> {
        self.members
            .values()
            .filter(|member| member.id != self.node_id)
            .map(Member::http_address)
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

    /// The HTTP address of a member, for redirects and forwarding.
    pub fn http_address_of(&self, id: NodeId) -> Option<String> {
        self.members.get(&id).map(Member::http_address)
    }
}

/// A member's id from `8004`, `:8004` or `host:8004[/peer_port]` (ids are HTTP ports).
pub fn parse_member_id(text: &str) -> Result<NodeId, String> {
    let text = text.trim();
    if let Ok(id) = text.parse::<u64>() {
        return Ok(NodeId(id));
    }
    parse_member(text).map(|member| member.id).map_err(|error| error.to_string())
}

/// The HTTP address of a member known only from the cluster configuration in the log (one
/// added after this node started): a member's id is its HTTP port, and it serves HTTP on the
/// host of its peer address.
pub fn http_address_from_peer_address(id: NodeId, peer_address: &str) -> Option<String> {
    let (host, _peer_port) = peer_address.rsplit_once(':')?;
    let http_port = u16::try_from(id.0).ok().filter(|port| *port != 0)?;
    Some(format!("{host}:{http_port}"))
}

/// FNV-1a over the sorted member list: equal lists give equal ids on every node.
fn cluster_id(members: &BTreeMap<NodeId, Member>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for member in members.values() {
        let peer_port = member.peer_port.unwrap_or(0);
        let text = format!("{}={}/{};", member.id.0, member.http_address(), peer_port);
        for byte in text.bytes() {
            hash ^= byte as u64;
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
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
    fn a_later_members_http_address_comes_from_its_id_and_peer_host() {
        assert_eq!(
            http_address_from_peer_address(NodeId(8004), "10.0.0.4:9004").as_deref(),
            Some("10.0.0.4:8004")
        );
        assert_eq!(
            http_address_from_peer_address(NodeId(8004), "[::1]:9004").as_deref(),
            Some("[::1]:8004")
        );
        assert_eq!(http_address_from_peer_address(NodeId(70_000), "h:9004"), None);
        assert_eq!(http_address_from_peer_address(NodeId(8004), "no-port"), None);
    }

    #[test]
    fn members_are_named_by_port_with_a_derived_peer_port() {
        let member = parse_member(":8001").expect("valid");
        assert_eq!(member.id, NodeId(8001));
        assert_eq!(member.http_address(), "127.0.0.1:8001");
        assert_eq!(member.peer_address().as_deref(), Some("127.0.0.1:18001"));
        let member = parse_member("10.0.0.2:8002/9002").expect("valid");
        assert_eq!(member.peer_address().as_deref(), Some("10.0.0.2:9002"));
        assert!(matches!(parse_member(":60000"), Err(ConfigError::PeerPortOverflow { .. })));
        assert!(parse_member("8001").is_err());
        assert!(parse_member(":x").is_err());
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
        assert_eq!(config.peer_port, None);
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
}
