//! Same ports on every host, tested across real network stacks: four Linux network namespaces
//! (10.232.0.1 to 10.232.0.4, on a bridge the test creates and removes), one `conclave serve`
//! in each, every one listening on 2379 for clients and 2380 for peers — the ports etcd uses on
//! every host — told apart only by name and address. The cluster forms from `--initial-cluster`,
//! serves a workload through the client with all endpoints, survives its leader's SIGKILL and
//! restart, grows by a fourth member added by name and shrinks by one removed by name
//! (`support/named_cluster.rs`; `named_members.rs` runs the same life on loopback addresses).
//!
//! Needs root and iproute2 (`ci/install-test-deps.sh` installs it). Without them the test says
//! why it is skipped — except under CI (`CI=true`), where that is a failure.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::process::Command;

use support::named_cluster::{Hosts, run_named_cluster_life};
use support::netns::{self, Network};

const SUBNET: &str = "10.232.0";
const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;

struct Namespaces<'n>(&'n Network);

impl Hosts for Namespaces<'_> {
    fn address(&self, i: usize) -> String {
        format!("{}.{i}", self.0.subnet)
    }

    fn command(&self, i: usize, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.0.name("ns", i), program]);
        command
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
    run_named_cluster_life(&Namespaces(&network), &dir, CLIENT_PORT, PEER_PORT);
}
