//! Same ports on every host, tested across real network stacks: four Linux network namespaces
//! (10.232.0.1 to 10.232.0.4, on a bridge the test creates and removes), one `conclave serve`
//! in each, every one listening on 2379 for clients and 2380 for peers — the ports etcd uses on
//! every host — told apart only by name and address. The cluster forms from `--initial-cluster`,
//! serves a workload through the client with all endpoints, survives its leader's SIGKILL and
//! restart, grows by a fourth member added by name and shrinks by one removed by name
//! (`support/named_cluster.rs`; `named_members.rs` runs the same life on loopback addresses).
//!
//! A second test gives members host names only the namespaces resolve (`/etc/netns/NS/hosts`,
//! which `ip netns exec` puts in place of `/etc/hosts`), then moves one member to a new address
//! — a rescheduled pod — and requires the others to find it under its name there.
//!
//! Needs root and iproute2 (`ci/install-test-deps.sh` installs it). Without them the test says
//! why it is skipped — except under CI (`CI=true`), where that is a failure.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::named_cluster::{Hosts, NamedCluster, run_named_cluster_life};
use support::netns::{self, Network};
use support::{http, wait_for};

const SUBNET: &str = "10.232.0";
const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;

struct Namespaces<'n> {
    network: &'n Network,
    /// Hosts that moved to another address than `SUBNET.i`.
    moved: RefCell<BTreeMap<usize, String>>,
    /// Peer URLs name members `nI.conclave.test` instead of giving their address.
    by_name: bool,
}

impl<'n> Namespaces<'n> {
    fn new(network: &'n Network, by_name: bool) -> Namespaces<'n> {
        Namespaces { network, moved: RefCell::new(BTreeMap::new()), by_name }
    }
}

impl Hosts for Namespaces<'_> {
    fn address(&self, i: usize) -> String {
        let moved = self.moved.borrow().get(&i).cloned();
        moved.unwrap_or_else(|| format!("{}.{i}", self.network.subnet))
    }

    fn peer_host(&self, i: usize) -> String {
        if self.by_name { format!("n{i}.conclave.test") } else { self.address(i) }
    }

    fn command(&self, i: usize, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.network.name("ns", i), program]);
        command
    }
}

/// `/etc/netns/NS/hosts` of every namespace, removed on drop.
struct HostsFiles {
    paths: Vec<PathBuf>,
}

impl HostsFiles {
    fn create(network: &Network, count: usize) -> HostsFiles {
        let paths = (1..=count)
            .map(|i| {
                let dir = PathBuf::from("/etc/netns").join(network.name("ns", i));
                std::fs::create_dir_all(&dir).unwrap();
                dir.join("hosts")
            })
            .collect();
        HostsFiles { paths }
    }

    /// Writes the same names into every namespace's file. In place (same inode): `ip netns
    /// exec` bind-mounted the file into running processes, which must see the change.
    fn write(&self, hosts: &Namespaces<'_>, count: usize) {
        let mut text = String::from("127.0.0.1 localhost\n");
        for i in 1..=count {
            text.push_str(&format!("{} {}\n", hosts.address(i), hosts.peer_host(i)));
        }
        for path in &self.paths {
            std::fs::write(path, &text).unwrap();
        }
    }
}

impl Drop for HostsFiles {
    fn drop(&mut self) {
        for path in &self.paths {
            let _ = std::fs::remove_file(path);
            if let Some(dir) = path.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

#[test]
fn named_members_on_four_hosts_share_ports_and_survive_failover_and_membership_changes() {
    let skip = |reason: &str| netns::skip_or_fail("namespace cluster test", reason);
    if let Some(reason) = netns::unavailable() {
        return skip(&reason);
    }
    let network = match Network::create("k", SUBNET, 4) {
        Ok(network) => network,
        Err(error) => return skip(&format!("cannot build the namespaces: {error}")),
    };
    let dir = support::temp_dir("netns-named");
    run_named_cluster_life(&Namespaces::new(&network, false), &dir, CLIENT_PORT, PEER_PORT);
}

#[test]
fn a_member_that_moves_to_a_new_address_is_found_again_by_its_name() {
    let skip = |reason: &str| netns::skip_or_fail("namespace DNS test", reason);
    if let Some(reason) = netns::unavailable() {
        return skip(&reason);
    }
    let network = match Network::create("d", "10.233.0", 3) {
        Ok(network) => network,
        Err(error) => return skip(&format!("cannot build the namespaces: {error}")),
    };
    let hosts = Namespaces::new(&network, true);
    let files = HostsFiles::create(&network, 3);
    files.write(&hosts, 3);
    let mut cluster = NamedCluster {
        hosts: &hosts,
        client_port: CLIENT_PORT,
        peer_port: PEER_PORT,
        token: format!("dns-{}", std::process::id()),
        dir: support::temp_dir("netns-dns"),
        nodes: Vec::new(),
    };
    let all = [1, 2, 3];
    for host in all {
        cluster.start(host, &all, false);
    }
    cluster.leader(&all, Duration::from_secs(30));
    cluster.wait_until_published(&all, Duration::from_secs(30));
    for n in 0..10 {
        cluster.conclave(&all, &["put", &format!("before-{n}"), "1"]);
    }

    // n1 is rescheduled: it dies, its host takes another address, the names follow.
    cluster.node(1).kill9();
    let device = network.name("vn", 1);
    let (old, new) = (hosts.address(1), format!("{}.11", network.subnet));
    // The old address goes first: deleting a primary address also deletes the secondaries
    // of its subnet.
    netns::in_ns(&network.name("ns", 1), &["addr", "del", &format!("{old}/24"), "dev", &device])
        .unwrap();
    netns::in_ns(&network.name("ns", 1), &["addr", "add", &format!("{new}/24"), "dev", &device])
        .unwrap();
    hosts.moved.borrow_mut().insert(1, new.clone());
    files.write(&hosts, 3);
    cluster.restart_at_current_address(1);
    let others = [2, 3];
    for n in 0..10 {
        cluster.conclave(&others, &["put", &format!("after-{n}"), "2"]);
    }
    // The leader reaches n1 only by dialling n1.conclave.test again: it must find the new address.
    let leader = cluster.leader(&all, Duration::from_secs(30));
    let commit = cluster.info(leader).unwrap()["commit_index"].as_u64().unwrap();
    wait_for("n1 to catch up at its new address", Duration::from_secs(30), || {
        (cluster.info(1)?["applied_index"].as_u64()? >= commit).then_some(())
    });
    for n in 0..10 {
        let url = format!("http://{new}:{CLIENT_PORT}/kv/after-{n}?consistency=stale");
        assert_eq!(http().get(url).send().unwrap().text().unwrap(), "2");
    }
    // And it published its new client URL: every member redirects there when it leads.
    cluster.wait_until_published(&all, Duration::from_secs(30));
    println!("n1 moved from {old} to {new}; found again by name, caught up to index {commit}");
}
