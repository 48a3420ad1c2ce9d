//! Linux network namespaces for real-process tests: one namespace per node, each joined by a
//! veth pair to a bridge in the root namespace, so the test reaches every node at its own
//! address and nodes reach each other through the bridge. Needs root and iproute2
//! (`ci/install-test-deps.sh` installs it); [`unavailable`] says why a test must skip.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test
#![allow(dead_code)] // each test binary uses part of this module

use std::process::Command;

/// Why namespaces cannot be used here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not running as root".into());
    }
    if ip(&["netns", "list"]).is_err() {
        return Some("`ip netns` is not available".into());
    }
    None
}

/// Prints why a namespace test is skipped — or, under CI (`CI=true`), where the namespaces
/// must work, fails.
pub fn skip_or_fail(test: &str, reason: &str) {
    let message = format!(
        "{test} skipped: {reason} (it needs root and iproute2; ci/install-test-deps.sh installs iproute2)"
    );
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("{message} — not allowed under CI");
    }
    println!("{message}");
}

pub fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

pub fn in_ns(ns: &str, args: &[&str]) -> Result<(), String> {
    let mut full = vec!["netns", "exec", ns, "ip"];
    full.extend_from_slice(args);
    ip(&full)
}

/// The namespaces, veths and bridge of one test; removed on drop.
pub struct Network {
    tag: String,
    nodes: usize,
    /// The first three octets of the nodes' addresses (`10.231.0`): node i is `SUBNET.i`,
    /// the bridge in the root namespace `SUBNET.254`.
    pub subnet: String,
}

impl Network {
    pub fn name(&self, what: &str, i: usize) -> String {
        format!("{what}{}{i}", self.tag)
    }

    /// `nodes` namespaces on one bridge, named after `tag_prefix` and this process (so that
    /// concurrent test binaries do not collide). Whatever was created is removed on drop,
    /// including after a failure half-way.
    pub fn create(tag_prefix: &str, subnet: &str, nodes: usize) -> Result<Network, String> {
        let tag = format!("{tag_prefix}{}", std::process::id() % 10_000);
        let network = Network { tag, nodes, subnet: subnet.to_string() };
        let bridge = network.name("br", 0);
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{}.254/24", network.subnet), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 1..=nodes {
            let ns = network.name("ns", i);
            let host_end = network.name("vh", i);
            let node_end = network.name("vn", i);
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &host_end, "type", "veth", "peer", "name", &node_end])?;
            ip(&["link", "set", &node_end, "netns", &ns])?;
            ip(&["link", "set", &host_end, "master", &bridge])?;
            ip(&["link", "set", &host_end, "up"])?;
            in_ns(&ns, &["addr", "add", &format!("{}.{i}/24", network.subnet), "dev", &node_end])?;
            in_ns(&ns, &["link", "set", &node_end, "up"])?;
            in_ns(&ns, &["link", "set", "lo", "up"])?;
        }
        Ok(network)
    }

    /// Cuts (or heals) every node-to-node path between `side` and the other nodes.
    pub fn partition(&self, side: &[usize], cut: bool) -> Result<(), String> {
        let action = if cut { "add" } else { "del" };
        for a in 1..=self.nodes {
            for b in 1..=self.nodes {
                if side.contains(&a) != side.contains(&b) {
                    let target = format!("{}.{b}/32", self.subnet);
                    in_ns(&self.name("ns", a), &["route", action, "blackhole", &target])?;
                }
            }
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for i in 1..=self.nodes {
            let _ = ip(&["netns", "del", &self.name("ns", i)]);
            let _ = ip(&["link", "del", &self.name("vh", i)]);
        }
        let _ = ip(&["link", "del", &self.name("br", 0)]);
    }
}
