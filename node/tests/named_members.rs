//! Named members on one machine: three (then four) `conclave serve` processes on 127.0.0.1 to
//! 127.0.0.4, every one on the same client port and the same peer port, the cluster formed
//! from `--initial-cluster` and grown and shrunk by name (`support/named_cluster.rs`). No
//! privileges needed; `netns_cluster.rs` runs the same life across network namespaces.
//! Also: `--print-config` and the precedence flags > environment > file > defaults.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::process::Command;

use support::named_cluster::{Loopback, run_named_cluster_life};
use support::{BINARY, free_ports, temp_dir};

#[test]
fn a_named_cluster_on_shared_ports_forms_serves_fails_over_grows_and_shrinks() {
    let ports = free_ports(2);
    let dir = temp_dir("named");
    run_named_cluster_life(&Loopback, &dir, ports[0], ports[1]);
}

fn print_config(args: &[&str], env: &[(&str, &str)]) -> toml::Table {
    let mut command = Command::new(BINARY);
    command.arg("serve").args(args).arg("--print-config");
    // Only what the test sets: an inherited CONCLAVE_* would change the answer.
    for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("CONCLAVE_")) {
        command.env_remove(key);
    }
    command.envs(env.iter().copied());
    let output = command.output().expect("run conclave serve --print-config");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "--print-config failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.parse().unwrap_or_else(|error| panic!("not TOML ({error}): {stdout}"))
}

#[test]
fn settings_come_from_flags_then_environment_then_file_then_defaults() {
    let dir = temp_dir("print-config");
    let file = dir.join("node.toml");
    std::fs::write(
        &file,
        "tick_ms = 5\nelection_timeout_ms = 600\nheartbeat_interval_ms = 60\nmax_watchers = 7\n",
    )
    .unwrap();
    let file_arg = format!("--config={}", file.display());
    let effective = print_config(
        &[&file_arg, "--port=9101", "--election-timeout-ms=700"],
        &[("CONCLAVE_ELECTION_TIMEOUT_MS", "800"), ("CONCLAVE_HEARTBEAT_INTERVAL_MS", "40")],
    );
    let int = |key: &str| effective[key].as_integer().unwrap_or_else(|| panic!("{key} missing"));
    assert_eq!(int("election_timeout_ms"), 700, "the flag wins over the environment and file");
    assert_eq!(int("heartbeat_interval_ms"), 40, "the environment wins over the file");
    assert_eq!(int("tick_ms"), 5, "the file wins over the default");
    assert_eq!(int("max_watchers"), 7);
    assert_eq!(int("request_timeout_ms"), 5000, "defaults are shown too");
    assert_eq!(int("port"), 9101);

    // The whole named-member setup from the environment alone (as containers do it), lists
    // included; the printout is a config file that gives the same settings.
    let env = [
        ("CONCLAVE_NAME", "b"),
        ("CONCLAVE_INITIAL_CLUSTER", "a=10.0.0.1:2380,b=10.0.0.2:2380,c=10.0.0.3:2380"),
        ("CONCLAVE_INITIAL_CLUSTER_TOKEN", "env-cluster"),
        ("CONCLAVE_LISTEN_CLIENT", "0.0.0.0:2379"),
    ];
    let effective = print_config(&[], &env);
    assert_eq!(effective["name"].as_str(), Some("b"));
    assert_eq!(effective["initial_cluster"].as_array().map(Vec::len), Some(3));
    assert_eq!(effective["advertise_client_url"].as_str(), Some("http://10.0.0.2:2379"));
    assert_eq!(effective["listen_peer"].as_str(), Some("0.0.0.0:2380"));
    let printed = dir.join("printed.toml");
    std::fs::write(&printed, toml::to_string(&effective).unwrap()).unwrap();
    let again = print_config(&[&format!("--config={}", printed.display())], &[]);
    assert_eq!(again, effective);
}

#[test]
fn a_backup_of_a_named_cluster_seeds_a_new_named_cluster() {
    use std::time::Duration;
    use support::named_cluster::NamedCluster;

    let ports = free_ports(2);
    let dir = temp_dir("named-backup");
    let mut old = NamedCluster {
        hosts: &Loopback,
        client_port: ports[0],
        peer_port: ports[1],
        token: format!("backed-up-{}", std::process::id()),
        dir: dir.join("old"),
        nodes: Vec::new(),
    };
    std::fs::create_dir_all(&old.dir).unwrap();
    let founders = [1, 2, 3];
    for host in founders {
        old.start(host, &founders, false);
    }
    old.leader(&founders, Duration::from_secs(30));
    for n in 0..10 {
        old.conclave(&founders, &["put", &format!("k{n}"), &format!("v{n}")]);
    }
    // The backup from a follower's advertised URL (any member serves one).
    let backup = dir.join("cluster.backup");
    let output = old.conclave(&[2], &["backup", "--out", backup.to_str().unwrap()]);
    println!("{}", String::from_utf8_lossy(&output.stdout).trim());

    // A new cluster of three other names on other hosts, each restored from the same file.
    let mut new = NamedCluster {
        hosts: &Loopback,
        client_port: ports[0],
        peer_port: ports[1],
        token: format!("restored-{}", std::process::id()),
        dir: dir.join("new"),
        nodes: Vec::new(),
    };
    std::fs::create_dir_all(&new.dir).unwrap();
    let hosts = [5, 6, 7];
    let initial_cluster: Vec<String> =
        hosts.iter().map(|i| format!("n{i}=127.0.0.{i}:{}", ports[1])).collect();
    for host in hosts {
        let restore = Command::new(BINARY)
            .args(["restore", "--from", backup.to_str().unwrap()])
            .arg(format!("--working-dir={}", new.dir.join(format!("n{host}")).display()))
            .arg(format!("--name=n{host}"))
            .arg(format!("--initial-cluster={}", initial_cluster.join(",")))
            .arg(format!("--initial-cluster-token={}", new.token))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&restore.stdout);
        assert!(
            restore.status.success(),
            "restore n{host}: {text}{}",
            String::from_utf8_lossy(&restore.stderr)
        );
        assert!(text.contains(&format!("--name n{host} --initial-cluster ")), "{text}");
    }
    for host in hosts {
        new.start(host, &hosts, false);
    }
    new.leader(&hosts, Duration::from_secs(30));
    new.wait_until_published(&hosts, Duration::from_secs(30));
    for n in 0..10 {
        let value = new.conclave(&hosts, &["get", &format!("k{n}")]);
        assert_eq!(String::from_utf8_lossy(&value.stdout), format!("v{n}"));
    }
    new.conclave(&hosts, &["put", "after-restore", "yes"]);
    // The two clusters share ports and data but not a token: neither knows the other's members.
    let names: Vec<String> = new.members(&hosts).into_iter().map(|m| m.0).collect();
    assert_eq!(names, ["n5", "n6", "n7"]);
}
