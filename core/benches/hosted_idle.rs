//! What idle groups cost: three nodes, each hosting a replica of every one of N groups
//! (`Engine::hosting`), in one process on one thread, over the in-memory network and storage
//! seams and the real clock. Once every group has a leader and has gone quiet, it measures for
//! a while and prints the CPU the three engines used (percent of one core, from the thread's
//! scheduler statistics), the messages the nodes exchanged per second, and the process's
//! resident memory.
//!
//! `cargo bench -p conclave-core --bench hosted_idle` (1,000 groups, 10 s);
//! `HOSTED_IDLE_GROUPS` and `HOSTED_IDLE_SECS` change both.

// The engine tests' clock (on tokio's time, which runs in real time here); its runner is unused.
#[allow(dead_code)]
#[path = "../tests/integration/engine_support/mod.rs"]
mod engine_support;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use conclave_core::engine::{Engine, EngineConfig, EngineHandle, HostedGroupStart};
use conclave_core::raft::memory_cluster::DurableState;
use conclave_core::raft::{ClusterConfig, NodeId, Role};
use conclave_core::seams::storage::MemoryStorage;
use conclave_core::seams::transport::MemoryNetwork;
use conclave_core::shard::{HostConfig, ShardId};
use engine_support::TestClock;

const NODES: u64 = 3;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

/// CPU time this thread has run, in nanoseconds (Linux: `/proc/thread-self/schedstat`).
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Resident memory of the process, in bytes (Linux: `/proc/self/status`).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn start_node(
    id: NodeId,
    groups: u32,
    members: &ClusterConfig,
    network: &MemoryNetwork,
    clock: &TestClock,
) -> BTreeMap<ShardId, EngineHandle> {
    let config = EngineConfig::new(id);
    let host_config = HostConfig::for_raft(&config.raft);
    let mut starts = Vec::new();
    let mut writers = Vec::new();
    for shard in (0..groups).map(ShardId) {
        let durable: Rc<RefCell<DurableState>> = Rc::default();
        let restored = durable.borrow().restored(members);
        let (storage, writer) = MemoryStorage::new(durable, clock.clone(), 0);
        starts.push(HostedGroupStart { shard, restored, snapshot_data: None, storage });
        writers.push(writer);
    }
    let transport = network.join(id);
    let (engine, handles) =
        Engine::hosting(config, host_config, starts, transport, clock.clone(), id.0)
            .expect("engine");
    let writers = async move { futures::future::try_join_all(writers).await.map(|_| ()) };
    tokio::task::spawn_local(async move {
        let _ = engine.run(writers).await;
    });
    handles
}

fn main() {
    let groups = env_or("HOSTED_IDLE_GROUPS", 1_000) as u32;
    let measure_secs = env_or("HOSTED_IDLE_SECS", 10);
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let mut members = ClusterConfig::with_voters((1..=NODES).map(NodeId));
        members.addresses = (1..=NODES).map(|id| (NodeId(id), format!("n{id}"))).collect();
        let network = MemoryNetwork::default();
        // Tokio's clock, not paused here: real time.
        let clock = TestClock::starting_now();
        let nodes: Vec<BTreeMap<ShardId, EngineHandle>> = (1..=NODES)
            .map(|id| start_node(NodeId(id), groups, &members, &network, &clock))
            .collect();
        let started = Instant::now();
        loop {
            let led = (0..groups)
                .filter(|shard| {
                    nodes.iter().any(|handles| handles[&ShardId(*shard)].status().role == Role::Leader)
                })
                .count();
            if led == groups as usize {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "only {led} of {groups} groups elected a leader in 120 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let elected_s = started.elapsed().as_secs_f64();
        // Every leader quiesces after a few idle heartbeat intervals.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (cpu_before, messages_before, wall_before) =
            (thread_cpu_ns(), network.delivered(), Instant::now());
        tokio::time::sleep(Duration::from_secs(measure_secs)).await;
        let wall_ns = wall_before.elapsed().as_nanos() as f64;
        let messages = network.delivered() - messages_before;
        let cpu_percent = match (cpu_before, thread_cpu_ns()) {
            (Some(before), Some(after)) => format!("{:.2}", (after - before) as f64 / wall_ns * 100.0),
            _ => "unknown".to_string(),
        };
        let rss_mib =
            resident_bytes().map_or("unknown".to_string(), |bytes| format!("{:.1}", bytes as f64 / (1 << 20) as f64));
        println!(
            "hosted_idle: {NODES} nodes x {groups} groups: all led after {elected_s:.1} s; idle for {measure_secs} s: \
             {cpu_percent}% of one core for all {NODES} engines, {:.0} messages/s, {rss_mib} MiB resident (whole process)",
            messages as f64 / (wall_ns / 1e9)
        );
    });
}
