//! The client commands of `conclave`: `put`, `get`, `del`, `cas`, `txn`, `watch`, `status`,
//! `members`. They find the leader from any endpoint, retry through failovers with a session
//! (a retried write applies once), print plain output or `--json`, and exit non-zero with one
//! line on stderr when something fails (the codes are in [`EXIT_CODES_HELP`]).

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Args, Subcommand};
use futures::StreamExt;

mod output;

pub use self::output::WriteOut;
use self::output::print_rows;
use conclave_client::api::{
    CompareJson, KeyValueJson, RangeJson, ShardsJson, TxnOpJson, TxnRequestJson, WatchEventJson,
    encode_value,
};
use conclave_client::{
    Client, ClientError, ClientOptions, Consistency, PositionedEvent, Precondition, RangePage,
    WatchStart,
};

pub const EXIT_CODES_HELP: &str = "Exit codes of the client commands: 0 success, 1 bad usage or \
local error (no node asked), 2 key not found, 3 condition failed (cas, --if-absent, \
--if-revision), 4 cluster unavailable or outcome unknown (status: any endpoint down; backup: \
the node unreachable), 5 request refused by the node (bad input, limits), 6 unreadable answer.";

/// Flags every client command and `backup` take (and only they: `serve`, `dev`, `bench` and `check` have
/// none of them); each also from a `CONCLAVE_*` environment variable, as etcdctl's from
/// `ETCDCTL_*`. `global` carries them down to `members add` and `leader transfer`.
#[derive(Debug, Clone, Args)]
pub struct ClientFlags {
    /// Members to talk to, comma-separated (`:8001,:8002` or `host:port`); any one is enough.
    #[arg(
        long,
        alias = "endpoint",
        env = "CONCLAVE_ENDPOINTS",
        default_value = "127.0.0.1:8001",
        global = true
    )]
    pub endpoints: String,
    /// Print JSON instead of plain text (as `-w json`).
    #[arg(long, env = "CONCLAVE_JSON", global = true)]
    pub json: bool,
    /// The output format: `simple` (one line per item), `json` or `table` (each command has
    /// its own default: a table for `status`, `members list` and `shards`).
    #[arg(short = 'w', long, value_enum, env = "CONCLAVE_WRITE_OUT", global = true)]
    pub write_out: Option<WriteOut>,
    /// Give up after this many seconds, retries included (`backup`: of silence from the node).
    #[arg(long, env = "CONCLAVE_TIMEOUT_SECS", default_value_t = 15, global = true)]
    pub timeout_secs: u64,
    /// Give up sooner, after this many seconds, when no endpoint accepts a connection.
    #[arg(long, env = "CONCLAVE_DIAL_TIMEOUT_SECS", default_value_t = 5, global = true)]
    pub dial_timeout_secs: u64,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Set a key (the value from the argument, or `-` to read it from stdin, bytes exact).
    Put {
        /// The key (any UTF-8 text).
        key: String,
        /// The value, or `-` to read it from stdin (bytes exact).
        value: String,
        /// Expire the key after this long (`30s`, `500ms`, `2m`).
        #[arg(long)]
        ttl: Option<String>,
        /// Only create: fail (exit 3) if the key exists.
        #[arg(long, conflicts_with = "if_revision")]
        if_absent: bool,
        /// Only if the key's modification revision is this (exit 3 otherwise).
        #[arg(long)]
        if_revision: Option<u64>,
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// Print a key's value exactly (no newline added), or with `--prefix` the keys under it.
    Get {
        /// The key (or, with --prefix, the prefix; empty for every key).
        #[arg(default_value = "")]
        key: String,
        #[arg(long, value_enum, default_value_t = Consistency::Linearizable)]
        consistency: Consistency,
        /// List the keys starting with KEY, page by page (any number of keys).
        #[arg(long)]
        prefix: bool,
        /// With --prefix: at most this many keys (0 = every key).
        #[arg(long, default_value_t = 0)]
        limit: u64,
        /// With --prefix: print only the keys.
        #[arg(long, requires = "prefix", conflicts_with = "count_only")]
        keys_only: bool,
        /// With --prefix: print only how many keys there are.
        #[arg(long, requires = "prefix")]
        count_only: bool,
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// Delete a key (exit 2 if it did not exist), or with `--prefix` every key under it.
    Del {
        /// The key to delete (or, with --prefix, the prefix; empty for every key).
        key: String,
        /// Only if the key's modification revision is this (exit 3 otherwise).
        #[arg(long, conflicts_with = "prefix")]
        if_revision: Option<u64>,
        /// Delete every key starting with KEY (one log entry per shard) and print how many.
        #[arg(long)]
        prefix: bool,
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// Compare-and-swap: set KEY to NEW only if its value is EXPECTED (exit 3 otherwise).
    Cas {
        /// The key to change.
        key: String,
        /// The value the key must hold now.
        expected: String,
        /// The value to set.
        new: String,
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// Run a transaction from a JSON file (or `-` for stdin), as `POST /txn` takes it.
    ///
    /// Example: {"compare":[{"key":"a","target":"value","op":"=","value":"1"}],
    ///  "success":[{"put":{"key":"a","value":"2"}}],"failure":[{"get":{"key":"a"}}]}
    Txn {
        /// The JSON file, or `-` for stdin.
        file: PathBuf,
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// Print changes of keys under a prefix as they happen, until interrupted.
    Watch {
        /// Watch the keys starting with this (empty: every key).
        #[arg(default_value = "")]
        prefix: String,
        /// Start from this revision (past events the node still holds are replayed).
        #[arg(long)]
        from_revision: Option<u64>,
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// Each endpoint's view: version, data size, role, term, leader, last, commit and applied
    /// index (exit 4 if an endpoint does not answer).
    Status {
        /// Every member of the cluster, as the endpoints' leader lists them, instead of the
        /// endpoints alone.
        #[arg(long)]
        cluster: bool,
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// This client's version and each endpoint's (exit 4 if an endpoint does not answer).
    Version {
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// The shard map: each shard's slots, replicas, leader, term, applied index and lag (a
    /// single-group cluster shows one shard that owns every slot).
    Shards {
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// List or change the cluster's members.
    Members {
        #[command(subcommand)]
        command: MembersCommand,
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// Leadership: `conclave leader transfer --to ID`.
    Leader {
        #[command(subcommand)]
        command: LeaderCommand,
        #[command(flatten)]
        flags: ClientFlags,
    },
}

impl ClientFlags {
    /// The output format asked for (`--json` is `-w json`), else the command's `default`.
    pub fn format(&self, default: WriteOut) -> WriteOut {
        match (self.json, self.write_out) {
            (true, _) => WriteOut::Json,
            (false, asked) => asked.unwrap_or(default),
        }
    }
}

impl ClientCommand {
    /// The client flags given with the command.
    pub fn flags(&self) -> &ClientFlags {
        match self {
            ClientCommand::Put { flags, .. }
            | ClientCommand::Get { flags, .. }
            | ClientCommand::Del { flags, .. }
            | ClientCommand::Cas { flags, .. }
            | ClientCommand::Txn { flags, .. }
            | ClientCommand::Watch { flags, .. }
            | ClientCommand::Status { flags, .. }
            | ClientCommand::Version { flags }
            | ClientCommand::Shards { flags }
            | ClientCommand::Members { flags, .. }
            | ClientCommand::Leader { flags, .. } => flags,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// Members with their role (voter or learner) and replication lag.
    List,
    /// Add a voter: first as a learner, then promoted once it has caught up. MEMBER is
    /// `[host]:port[/peer_port]` as in --peers, or `name=peer-url` as in --initial-cluster;
    /// start it with `conclave serve --join`.
    Add {
        /// The new member: `[host]:port[/peer_port]` or `name=peer-url`.
        member: String,
        /// A named member's advertised client URL (it also publishes it itself once running).
        #[arg(long)]
        client_url: Option<String>,
    },
    /// Add a non-voting member that receives the log and snapshots.
    AddLearner {
        /// The new member: `[host]:port[/peer_port]` or `name=peer-url`.
        member: String,
        /// A named member's advertised client URL.
        #[arg(long)]
        client_url: Option<String>,
    },
    /// Make a caught-up learner a voter (MEMBER: its id, name or --peers entry).
    Promote {
        /// The learner: its id, name or --peers entry.
        member: String,
    },
    /// Remove a member (the leader too: it steps down once the change commits). MEMBER: its
    /// id, name or --peers entry.
    Remove {
        /// The member: its id, name or --peers entry.
        member: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum LeaderCommand {
    /// Hand leadership to a caught-up voter without waiting for an election timeout.
    Transfer {
        /// The target: a named member's name, a port-named member's `:port` as in --peers
        /// (`[host]:port[/peer_port]` also works), or the bare id.
        #[arg(long)]
        to: String,
        /// In a sharded cluster: the shard whose leadership moves (the meta group, shard 0,
        /// without it). The cluster keeps leaderships even by itself (`--balance-leaders`), so a
        /// hand-made imbalance is undone within seconds.
        #[arg(long)]
        shard: Option<u32>,
    },
}

/// `--to`'s member: an id or a `--peers` entry as is, a name by the cluster's member list.
async fn resolve_member(client: &Client, text: &str) -> Result<u64, ClientError> {
    if let Ok(id) = crate::config::parse_member_id(text) {
        return Ok(id.0);
    }
    let members = client.members().await?;
    let named = members.members.iter().find(|member| member.name.as_deref() == Some(text));
    named.map(|member| member.id).ok_or_else(|| ClientError::Rejected {
        status: 404,
        message: format!("no member is named {text:?}"),
    })
}

fn client(flags: &ClientFlags) -> Result<Client, ClientError> {
    let endpoints: Vec<String> =
        flags.endpoints.split(',').filter(|e| !e.trim().is_empty()).map(str::to_string).collect();
    Client::new(
        &endpoints,
        ClientOptions {
            call_deadline: Duration::from_secs(flags.timeout_secs.max(1)),
            dial_timeout: Duration::from_secs(flags.dial_timeout_secs.max(1)),
            ..ClientOptions::default()
        },
    )
}

/// `watch`: the changes under `prefix`, printed as they come, until interrupted. A stream that
/// breaks (its node died or stopped) is resumed on another endpoint right after the last
/// change printed, so no change is lost or printed twice; a resume the cluster's history can no
/// longer serve ends the command with the reason (410: the changes since are gone).
async fn watch(
    client: &Client,
    flags: &ClientFlags,
    prefix: &str,
    from_revision: Option<u64>,
) -> anyhow::Result<()> {
    let mut start = match from_revision {
        Some(revision) => WatchStart::Revision(revision),
        None => {
            // "From now" as a revision, so that a stream that breaks before its first change
            // still resumes at the right place (a sharded cluster's revisions are per shard:
            // there, the stream's first event names its place).
            let now = client.range(prefix, 1, Consistency::Linearizable).await?;
            match client.is_sharded().await {
                true => WatchStart::Now,
                false => WatchStart::Revision(now.revision + 1),
            }
        }
    };
    loop {
        let mut events = Box::pin(client.watch_from(prefix, &start).await?);
        let broken = loop {
            // A node sends a keep-alive comment every 15 s: a stream silent for much longer
            // is a connection whose other end is gone without a word (a host that lost power).
            let Ok(next) = tokio::time::timeout(WATCH_SILENCE_LIMIT, events.next()).await else {
                break format!("nothing received for {} s", WATCH_SILENCE_LIMIT.as_secs());
            };
            match next {
                None => break "the node ended the stream".to_string(),
                Some(Ok(PositionedEvent { id, change })) => {
                    if let Some(event) = change {
                        print_watch_event(flags, &event)?;
                    }
                    start = WatchStart::After(id);
                }
                Some(Err(ClientError::Unavailable { errors, .. })) => break errors,
                // An `error` event ends a stream the node gave up (it is shutting down, the
                // watcher fell behind): resume after the last change; if the history no
                // longer holds it, reopening says so (410) and the command ends there.
                Some(Err(ClientError::Rejected { status: 200, message })) => break message,
                Some(Err(error)) => return Err(error.into()),
            }
        };
        let from = match &start {
            WatchStart::After(id) => format!("after event {id}"),
            WatchStart::Revision(revision) => format!("from revision {revision}"),
            WatchStart::Now => "from now: changes made before the stream reopens are not seen, \
                                 as none had been delivered to resume after"
                .to_string(),
        };
        eprintln!("conclave: the watch stream broke ({broken}); resuming {from}");
        tokio::time::sleep(WATCH_RESUME_PAUSE).await;
    }
}

/// A pause before a broken watch is reopened: a node that ends streams at once is not hammered.
const WATCH_RESUME_PAUSE: Duration = Duration::from_millis(200);
/// A watch stream silent for this long is taken for broken: three of the nodes' 15 s
/// keep-alives missed.
const WATCH_SILENCE_LIMIT: Duration = Duration::from_secs(45);

fn print_watch_event(flags: &ClientFlags, event: &WatchEventJson) -> anyhow::Result<()> {
    if flags.json {
        return print_json(event);
    }
    let value = event
        .value
        .clone()
        .or_else(|| event.value_base64.as_ref().map(|b| format!("(base64) {b}")));
    match value {
        Some(value) => {
            println!("{} {} {} = {}", event.mod_revision, event.kind, event.key, value)
        }
        None => println!("{} {} {}", event.mod_revision, event.kind, event.key),
    }
    // Each change is out before the next is awaited: a pipe reader sees it at once.
    std::io::stdout().flush()?;
    Ok(())
}

/// The HTTP endpoints of every member, as the cluster's leader lists them (`status --cluster`).
async fn member_endpoints(client: &Client) -> Result<Vec<String>, ClientError> {
    let members = client.members().await?;
    let addresses = members.members.iter().filter_map(|member| member.http_address.as_deref());
    addresses.map(conclave_client::endpoint::base_url).collect()
}

/// `bytes` for a person: `512 B`, `1.5 KiB`, `20.0 MiB`, `3.2 GiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut size = bytes as f64 / 1024.0;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    format!("{size:.1} {}", UNITS[unit])
}

/// How `get --prefix` prints.
#[derive(Clone, Copy)]
struct Listing {
    format: WriteOut,
    keys_only: bool,
    count_only: bool,
}

/// `get --prefix`: every key under `prefix` (at most `limit`, 0 = all), fetched page by page
/// (each page continues after the last key of the one before) and printed as it arrives;
/// `--json` prints one object with every key at the end, as a single page would be.
async fn list(
    client: &Client,
    prefix: &str,
    consistency: Consistency,
    limit: u64,
    printing: Listing,
) -> anyhow::Result<()> {
    let mut listed = RangeJson { revision: 0, more: false, kvs: Vec::new() };
    let mut count = 0u64;
    let mut start_after: Option<String> = None;
    loop {
        // Pages as large as the server allows (its maximum is its own setting); the last one
        // is cut to the limit here.
        let page = RangePage {
            prefix,
            start_after: start_after.as_deref(),
            limit: 0,
            keys_only: printing.keys_only || printing.count_only,
            consistency,
        };
        let mut page = client.range_page(&page).await?;
        if limit != 0 && count + page.kvs.len() as u64 > limit {
            page.kvs.truncate((limit - count) as usize);
            page.more = true;
        }
        count += page.kvs.len() as u64;
        listed.revision = listed.revision.max(page.revision);
        start_after = page.kvs.last().map(|kv| kv.key.clone());
        let done = !page.more || start_after.is_none() || (limit != 0 && count >= limit);
        listed.more = page.more && limit != 0 && count >= limit;
        if !printing.count_only {
            match printing.format {
                // One JSON object, or one table, once every page is in.
                WriteOut::Json | WriteOut::Table => listed.kvs.extend(page.kvs),
                WriteOut::Simple => {
                    for kv in &page.kvs {
                        print_listed(kv, printing.keys_only);
                    }
                }
            }
        }
        if done {
            break;
        }
    }
    match (printing.count_only, printing.format) {
        (true, WriteOut::Json) => {
            print_json(&serde_json::json!({ "count": count, "more": listed.more }))?
        }
        (true, _) => println!("{count}"),
        (false, WriteOut::Json) => print_json(&listed)?,
        (false, WriteOut::Table) => {
            let rows: Vec<Vec<String>> = listed
                .kvs
                .iter()
                .map(|kv| {
                    let mut row = vec![kv.key.clone()];
                    if !printing.keys_only {
                        row.push(shown_value(kv));
                    }
                    row.push(kv.mod_revision.to_string());
                    row
                })
                .collect();
            let header: &[&str] = match printing.keys_only {
                true => &["KEY", "MOD REVISION"],
                false => &["KEY", "VALUE", "MOD REVISION"],
            };
            print_rows(WriteOut::Table, header, &rows);
        }
        (false, WriteOut::Simple) => {}
    }
    if listed.more && printing.format != WriteOut::Json {
        eprintln!("(more keys; raise --limit)");
    }
    Ok(())
}

fn print_listed(kv: &KeyValueJson, keys_only: bool) {
    if keys_only {
        println!("{}", kv.key);
        return;
    }
    println!("{}\t{}", kv.key, shown_value(kv));
}

/// A listed value as text: itself, or `(base64) …` when it is not UTF-8.
fn shown_value(kv: &KeyValueJson) -> String {
    kv.value
        .clone()
        .unwrap_or_else(|| format!("(base64) {}", kv.value_base64.clone().unwrap_or_default()))
}

fn read_value(value: &str) -> anyhow::Result<Bytes> {
    if value == "-" {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).context("reading the value from stdin")?;
        Ok(Bytes::from(bytes))
    } else {
        Ok(Bytes::copy_from_slice(value.as_bytes()))
    }
}

fn print_config(flags: &ClientFlags, config: &serde_json::Value) -> anyhow::Result<()> {
    if flags.json {
        print_json(config)
    } else {
        println!("voters: {}  learners: {}", config["voters"], config["learners"]);
        Ok(())
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// `Unavailable` (exit 4) naming every endpoint of `answers` that did not answer, if any did not.
fn all_answered<T>(
    flags: &ClientFlags,
    answers: &[(String, Result<T, ClientError>)],
) -> Result<(), ClientError> {
    let down: Vec<String> = answers
        .iter()
        .filter_map(|(base, answer)| answer.as_ref().err().map(|error| format!("{base}: {error}")))
        .collect();
    if down.is_empty() {
        return Ok(());
    }
    Err(ClientError::Unavailable {
        tried: flags.endpoints.clone(),
        errors: format!(
            "{} of {} endpoints did not answer ({})",
            down.len(),
            answers.len(),
            down.join("; ")
        ),
    })
}

/// The process exit code for a client error (the table is `EXIT_CODES_HELP`).
fn exit_code_of(error: &ClientError) -> u8 {
    match error {
        ClientError::NotFound => 2,
        ClientError::ConditionFailed { .. } => 3,
        ClientError::Unavailable { .. } | ClientError::Unknown(_) => 4,
        ClientError::Rejected { .. } => 5,
        // No node was contacted: a local error, as a usage error is.
        ClientError::BadEndpoint { .. } => 1,
        ClientError::BadAnswer(_) => 6,
    }
}

/// Runs a client command; returns the process exit code.
pub async fn run(command: ClientCommand) -> ExitCode {
    let mut flags = command.flags().clone();
    flags.json |= flags.write_out == Some(WriteOut::Json);
    match execute(&flags, command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = error.downcast_ref::<ClientError>().map_or(1, exit_code_of);
            if flags.json {
                let _ = print_json(
                    &serde_json::json!({ "error": format!("{error:#}"), "exit_code": code }),
                );
            }
            eprintln!("conclave: {error:#}");
            ExitCode::from(code)
        }
    }
}

async fn execute(flags: &ClientFlags, command: ClientCommand) -> anyhow::Result<()> {
    let client = client(flags)?;
    match command {
        ClientCommand::Put { key, value, ttl, if_absent, if_revision, .. } => {
            let precondition = match (if_absent, if_revision) {
                (true, _) => Precondition::Absent,
                (false, Some(revision)) => Precondition::RevisionIs(revision),
                (false, None) => Precondition::None,
            };
            let value = read_value(&value)?;
            let revision = client.put(&key, value, ttl.as_deref(), precondition).await?;
            if flags.json {
                print_json(&serde_json::json!({ "key": key, "mod_revision": revision }))?;
            } else {
                println!("OK (revision {revision})");
            }
        }
        ClientCommand::Get {
            key, consistency, prefix: true, limit, keys_only, count_only, ..
        } => {
            let format = flags.format(WriteOut::Simple);
            let printing = Listing { format, keys_only, count_only };
            list(&client, &key, consistency, limit, printing).await?;
        }
        ClientCommand::Get { key, consistency, prefix: false, .. } => {
            if key.is_empty() {
                // A usage error, found before any node is asked (exit 1).
                anyhow::bail!("get needs a KEY (or --prefix to list keys; '' lists every key)");
            }
            let Some(found) = client.get(&key, consistency).await? else {
                return Err(ClientError::NotFound.into());
            };
            let (value, value_base64) = encode_value(&found.value);
            match flags.format(WriteOut::Simple) {
                WriteOut::Json => print_json(&serde_json::json!({
                    "key": key, "value": value, "value_base64": value_base64,
                    "mod_revision": found.mod_revision,
                }))?,
                WriteOut::Table => {
                    let shown = value.unwrap_or_else(|| {
                        format!("(base64) {}", value_base64.unwrap_or_default())
                    });
                    let row = vec![key, shown, found.mod_revision.to_string()];
                    print_rows(WriteOut::Table, &["KEY", "VALUE", "MOD REVISION"], &[row]);
                }
                WriteOut::Simple => {
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(&found.value)?;
                    stdout.flush()?;
                }
            }
        }
        ClientCommand::Del { key, prefix: true, .. } => {
            let deleted = client.delete_prefix(&key).await?;
            if flags.json {
                print_json(&serde_json::json!({ "prefix": key, "deleted": deleted }))?;
            } else {
                println!("deleted {deleted} keys");
            }
        }
        ClientCommand::Del { key, if_revision, .. } => {
            let precondition = if_revision.map_or(Precondition::None, Precondition::RevisionIs);
            client.delete(&key, precondition).await?;
            if flags.json {
                print_json(&serde_json::json!({ "key": key, "deleted": true }))?;
            } else {
                println!("deleted");
            }
        }
        ClientCommand::Cas { key, expected, new, .. } => {
            let request = TxnRequestJson {
                compare: vec![CompareJson {
                    key: key.clone(),
                    target: "value".into(),
                    op: Some("=".into()),
                    value: Some(expected),
                    ..CompareJson::default()
                }],
                success: vec![TxnOpJson::Put {
                    key: key.clone(),
                    value: Some(new),
                    value_base64: None,
                    ttl: None,
                }],
                failure: vec![TxnOpJson::Get { key: key.clone() }],
            };
            let answer = client.txn(&request).await?;
            if flags.json {
                print_json(&answer)?;
            }
            if !answer.succeeded {
                return Err(ClientError::ConditionFailed { current_revision: None }.into());
            }
            if !flags.json {
                println!("OK (revision {})", answer.revision);
            }
        }
        ClientCommand::Txn { file, .. } => {
            let text = if file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text).context("reading the txn from stdin")?;
                text
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let request: TxnRequestJson = serde_json::from_str(&text)
                .context("the transaction is not valid JSON for /txn")?;
            let answer = client.txn(&request).await?;
            if flags.json {
                print_json(&answer)?;
            } else {
                println!(
                    "{} (revision {})",
                    if answer.succeeded { "succeeded" } else { "failed: ran the failure branch" },
                    answer.revision
                );
                for result in &answer.results {
                    println!("{}", serde_json::to_string(result)?);
                }
            }
        }
        ClientCommand::Watch { prefix, from_revision, .. } => {
            watch(&client, flags, &prefix, from_revision).await?;
        }
        ClientCommand::Status { cluster, .. } => {
            let endpoints = match cluster {
                false => client.endpoints().to_vec(),
                true => member_endpoints(&client).await?,
            };
            let mut rows = Vec::new();
            let mut versions = Vec::new();
            for base in &endpoints {
                rows.push((base.clone(), client.cluster_info_of(base).await));
                versions.push(client.version_of(base).await.ok().map(|answer| answer.version));
            }
            if flags.json {
                let json: Vec<serde_json::Value> = rows
                    .iter()
                    .zip(&versions)
                    .map(|((base, info), version)| match info {
                        Ok(info) => {
                            serde_json::json!({ "endpoint": base, "version": version, "info": info })
                        }
                        Err(error) => {
                            serde_json::json!({ "endpoint": base, "error": error.to_string() })
                        }
                    })
                    .collect();
                print_json(&json)?;
            } else {
                let or_dash = |id: Option<u64>| id.map_or("-".to_string(), |id| id.to_string());
                let table: Vec<Vec<String>> = rows
                    .iter()
                    .zip(&versions)
                    .map(|((base, info), version)| {
                        let endpoint = base.trim_start_matches("http://").to_string();
                        match info {
                            Ok(info) => vec![
                                endpoint,
                                info.id.to_string(),
                                version.clone().unwrap_or_else(|| "-".into()),
                                info.data_dir_bytes.map_or("-".into(), human_bytes),
                                info.role.clone(),
                                info.term.to_string(),
                                or_dash(info.leader),
                                info.last_index.to_string(),
                                info.commit_index.to_string(),
                                info.applied_index.to_string(),
                                String::new(),
                            ],
                            Err(error) => {
                                let mut row = vec![endpoint];
                                row.extend(std::iter::repeat_n("-".to_string(), 9));
                                row.push(format!("unreachable: {error}"));
                                row
                            }
                        }
                    })
                    .collect();
                let header = [
                    "ENDPOINT", "ID", "VERSION", "DATA", "ROLE", "TERM", "LEADER", "INDEX",
                    "COMMIT", "APPLIED", "ERRORS",
                ];
                print_rows(flags.format(WriteOut::Table), &header, &table);
            }
            // Every endpoint is shown; one that did not answer makes the exit code 4, so that
            // a script checking the cluster's members notices.
            all_answered(flags, &rows)?;
        }
        ClientCommand::Version { .. } => {
            let client_version = env!("CARGO_PKG_VERSION");
            let mut servers = Vec::new();
            for base in client.endpoints() {
                servers.push((base.clone(), client.version_of(base).await));
            }
            if flags.json {
                let servers: Vec<serde_json::Value> = servers
                    .iter()
                    .map(|(base, answer)| match answer {
                        Ok(server) => serde_json::json!({ "endpoint": base, "version": server.version, "id": server.id }),
                        Err(error) => serde_json::json!({ "endpoint": base, "error": error.to_string() }),
                    })
                    .collect();
                print_json(&serde_json::json!({ "client": client_version, "servers": servers }))?;
            } else if flags.format(WriteOut::Simple) == WriteOut::Table {
                let mut rows = vec![vec!["client".to_string(), "-".into(), client_version.into()]];
                rows.extend(servers.iter().map(|(base, answer)| {
                    let base = base.trim_start_matches("http://").to_string();
                    match answer {
                        Ok(server) => vec![base, server.id.to_string(), server.version.clone()],
                        Err(error) => vec![base, "-".into(), format!("unreachable: {error}")],
                    }
                }));
                print_rows(WriteOut::Table, &["ENDPOINT", "ID", "VERSION"], &rows);
            } else {
                println!("client {client_version}");
                for (base, answer) in &servers {
                    let base = base.trim_start_matches("http://");
                    match answer {
                        Ok(server) => println!("{base} (node {}): {}", server.id, server.version),
                        Err(error) => println!("{base}: unreachable: {error}"),
                    }
                }
            }
            all_answered(flags, &servers)?;
        }
        ClientCommand::Leader { command: LeaderCommand::Transfer { to, shard }, .. } => {
            let to = resolve_member(&client, &to).await?;
            client.transfer_leadership_of(shard, to).await?;
            if flags.json {
                print_json(&serde_json::json!({ "leader": to }))?;
            } else {
                println!("node {to} is the leader");
            }
        }
        ClientCommand::Members {
            command: MembersCommand::AddLearner { member, client_url },
            ..
        } => {
            let config = client
                .change_membership_with("add-learner", &member, client_url.as_deref())
                .await?;
            print_config(flags, &config)?;
        }
        ClientCommand::Members { command: MembersCommand::Promote { member }, .. } => {
            let config = client.change_membership("promote", &member).await?;
            print_config(flags, &config)?;
        }
        ClientCommand::Members { command: MembersCommand::Remove { member }, .. } => {
            let config = client.change_membership("remove", &member).await?;
            print_config(flags, &config)?;
        }
        ClientCommand::Members { command: MembersCommand::Add { member, client_url }, .. } => {
            client.change_membership_with("add-learner", &member, client_url.as_deref()).await?;
            // Promoted by its name (or id): `name=peer-url` names it by what precedes `=`.
            let member =
                member.split_once('=').map_or(member.as_str(), |(name, _)| name).to_string();
            if !flags.json {
                println!("added {member} as a learner; promoting it once it has caught up");
            }
            // The leader refuses to promote a learner that is behind: retry until it is not.
            let deadline =
                tokio::time::Instant::now() + Duration::from_secs(flags.timeout_secs.max(1) * 4);
            let config = loop {
                match client.change_membership("promote", &member).await {
                    Ok(config) => break config,
                    Err(ClientError::Rejected { status: 409, message })
                        if tokio::time::Instant::now() < deadline =>
                    {
                        tracing::debug!(%message, "not promoted yet");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(error) => return Err(error.into()),
                }
            };
            print_config(flags, &config)?;
        }
        ClientCommand::Shards { .. } => {
            let shards = client.shards().await?;
            if flags.json {
                print_json(&shards)?;
            } else {
                print_shards(flags.format(WriteOut::Table), &shards);
            }
        }
        ClientCommand::Members { command: MembersCommand::List, .. } => {
            let members = client.members().await?;
            if flags.json {
                print_json(&members)?;
            } else {
                let rows: Vec<Vec<String>> = members
                    .members
                    .iter()
                    .map(|member| {
                        vec![
                            member.id.to_string(),
                            member.name.clone().unwrap_or_else(|| "-".into()),
                            member.role.clone(),
                            if member.is_leader { "yes" } else { "" }.to_string(),
                            member.http_address.clone().unwrap_or_default(),
                            member.peer_address.clone().unwrap_or_default(),
                            member.lag.map_or("-".to_string(), |lag| lag.to_string()),
                        ]
                    })
                    .collect();
                let header = ["ID", "NAME", "ROLE", "LEADER", "HTTP", "PEER", "LAG"];
                print_rows(flags.format(WriteOut::Table), &header, &rows);
            }
        }
    }
    Ok(())
}

/// `conclave shards` as a table.
fn print_shards(format: WriteOut, shards: &ShardsJson) {
    println!("shard map epoch {}, {} slots", shards.epoch, shards.slot_count);
    let or_dash = |value: Option<u64>| value.map_or("-".to_string(), |value| value.to_string());
    let rows: Vec<Vec<String>> = shards
        .shards
        .iter()
        .map(|shard| {
            let replicas: Vec<String> = shard.replicas.iter().map(u64::to_string).collect();
            let mut slots = shard.slots.clone();
            if slots.len() > 20 {
                slots.truncate(17);
                slots.push_str("...");
            }
            vec![
                shard.shard.to_string(),
                slots,
                shard.slot_count.to_string(),
                replicas.join(" "),
                or_dash(shard.leader),
                or_dash(shard.term),
                or_dash(shard.applied_index),
                or_dash(shard.lag),
            ]
        })
        .collect();
    let header = ["SHARD", "SLOTS", "COUNT", "REPLICAS", "LEADER", "TERM", "APPLIED", "LAG"];
    print_rows(format, &header, &rows);
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(20 * 1024 * 1024), "20.0 MiB");
        assert_eq!(human_bytes(3 << 40), "3.0 TiB");
        assert_eq!(human_bytes(u64::MAX), "16777216.0 TiB");
    }
}
