//! The deployment files of `deploy/` and the repository root, checked as their tools read them:
//!
//! - the Kubernetes manifests against the Kubernetes schemas (`kubernetes-validate`, installed
//!   by `ci/install-test-deps.sh` into a venv);
//! - what the manifests, `compose.yaml` and the `Dockerfile` tell the node, as the node reads
//!   it: each pod's and each service's environment (and the StatefulSet's start script, run
//!   under the pod's host name) through `conclave serve --print-config`; the image's
//!   `HEALTHCHECK` command against a running node;
//! - the systemd unit with `systemd-analyze verify`, and its example environment file as the
//!   node reads it (`conclave serve --print-config` with exactly those variables);
//! - the container image built from `Dockerfile` and the three-node cluster of `compose.yaml`
//!   answering a PUT and a GET, with podman, where a container runtime can run and reach its
//!   base images; otherwise the test prints why that part is skipped.
//!
//! A missing tool is a skip with its reason, except under CI (`CI=true`), where the tools the
//! CI script installs must be there.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use support::{BINARY, Node, free_ports, from_venv, http, skip, temp_dir, wait_for};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The documents of a YAML file as JSON, read by PyYAML from the CI venv (kubernetes-validate
/// brings it): the node has no YAML parser of its own, and should not get one for a test.
fn yaml_documents(path: &Path) -> Option<Vec<Value>> {
    let python = from_venv("python")?;
    let script =
        "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
    let output = Command::new(python).args(["-c", script]).arg(path).output().ok()?;
    assert!(output.status.success(), "reading {}: {}", path.display(), output_text(&output));
    Some(serde_json::from_slice(&output.stdout).expect("JSON from PyYAML"))
}

/// `conclave serve --print-config` under exactly `env` (no inherited CONCLAVE_*), through
/// `wrapper` (a command line whose last word is the script or program to run) if given.
fn print_config_with(env: &[(String, String)], command: Option<Command>) -> toml::Table {
    let mut command = command.unwrap_or_else(|| {
        let mut command = Command::new(BINARY);
        command.args(["serve", "--print-config"]);
        command
    });
    for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("CONCLAVE_")) {
        command.env_remove(key);
    }
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let output = command.output().expect("run conclave serve --print-config");
    assert!(output.status.success(), "the node refuses these settings:\n{}", output_text(&output));
    String::from_utf8_lossy(&output.stdout).parse().expect("--print-config prints TOML")
}

fn kubernetes_validate() -> Option<PathBuf> {
    let in_venv = from_venv("kubernetes-validate");
    in_venv.or_else(|| {
        Command::new("kubernetes-validate")
            .arg("--version")
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|_| PathBuf::from("kubernetes-validate"))
    })
}

#[test]
fn the_kubernetes_manifests_match_the_kubernetes_schemas() {
    let Some(validator) = kubernetes_validate() else {
        return skip(
            "Kubernetes manifest validation",
            "kubernetes-validate is not installed (ci/install-test-deps.sh installs it)",
            true,
        );
    };
    let manifests: Vec<PathBuf> = std::fs::read_dir(repository().join("deploy/kubernetes"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    assert!(!manifests.is_empty(), "no manifests in deploy/kubernetes");
    let output = Command::new(&validator)
        .arg("--strict")
        .args(&manifests)
        .output()
        .expect("run kubernetes-validate");
    let text = output_text(&output);
    assert!(output.status.success(), "kubernetes-validate refused the manifests:\n{text}");
    // One line per document: a StatefulSet, two Services and a PodDisruptionBudget.
    for kind in ["statefulset/conclave", "service/conclave-client", "poddisruptionbudget/conclave"]
    {
        assert!(text.contains(kind), "{kind} was not validated:\n{text}");
    }
    println!("{}", text.trim());
}

/// `KEY=VALUE` lines of an environment file (comments and blank lines skipped).
fn environment_file(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (key, value) = line.split_once('=').expect("KEY=VALUE");
            (key.to_string(), value.to_string())
        })
        .collect()
}

#[test]
fn the_systemd_unit_verifies_and_its_environment_file_configures_a_node() {
    let unit_dir = repository().join("deploy/systemd");
    let env = environment_file(&unit_dir.join("conclave.env"));
    let mut command = Command::new(BINARY);
    command.args(["serve", "--print-config"]);
    for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("CONCLAVE_")) {
        command.env_remove(key);
    }
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let output = command.output().expect("run conclave serve --print-config");
    let text = output_text(&output);
    assert!(output.status.success(), "the example environment file is refused:\n{text}");
    let printed: toml::Table = String::from_utf8_lossy(&output.stdout).parse().unwrap();
    let name = env.iter().find(|(k, _)| k == "CONCLAVE_NAME").map(|(_, v)| v.as_str());
    assert_eq!(printed["name"].as_str(), name);
    assert!(printed.contains_key("initial_cluster_token"), "{text}");

    let Ok(analyze) = Command::new("systemd-analyze").arg("--version").output() else {
        return skip("systemd unit verification", "systemd-analyze is not installed", false);
    };
    assert!(analyze.status.success());
    // Verified as installed: the binary where the unit expects it is this build's.
    let dir = temp_dir("systemd-unit");
    let unit = std::fs::read_to_string(unit_dir.join("conclave.service"))
        .unwrap()
        .replace("/usr/local/bin/conclave", BINARY)
        .replace(
            "/etc/conclave/conclave.env",
            &unit_dir.join("conclave.env").display().to_string(),
        );
    let unit_path = dir.join("conclave.service");
    std::fs::write(&unit_path, unit).unwrap();
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit_path)
        .output()
        .expect("run systemd-analyze verify");
    let text = output_text(&output);
    // Complaints about the unit itself name it; the host's own units are not ours to judge.
    let about_ours: Vec<&str> =
        text.lines().filter(|line| line.contains("conclave.service")).collect();
    assert!(about_ours.is_empty() && output.status.success(), "systemd-analyze verify:\n{text}");
    println!("systemd-analyze verify: no complaint about conclave.service");
}

fn podman(args: &[&str]) -> Option<Output> {
    Command::new("podman").args(args).output().ok()
}

/// Why podman cannot build and run the image here, if it cannot.
fn podman_unusable() -> Option<String> {
    let Some(info) = podman(&["info"]) else {
        return Some("podman is not installed".into());
    };
    if !info.status.success() {
        return Some(format!("`podman info` fails: {}", output_text(&info).trim()));
    }
    let last_line =
        |output: &Output| output_text(output).lines().last().unwrap_or("").trim().to_string();
    let mut reasons = Vec::new();
    // Whether a container can run at all, without any image: this machine's root as its root.
    let ran = podman(&["run", "--rm", "--rootfs", "/", "/bin/true"])?;
    if !ran.status.success() {
        reasons.push(format!("podman cannot run a container here ({})", last_line(&ran)));
    }
    // The build starts from public base images; a machine that cannot fetch them cannot build.
    let pulled = podman(&["pull", "--quiet", "docker.io/library/debian:bookworm-slim"])?;
    if !pulled.status.success() {
        reasons.push(format!(
            "podman cannot pull the base image debian:bookworm-slim ({})",
            last_line(&pulled)
        ));
    }
    (!reasons.is_empty()).then(|| reasons.join("; and "))
}

#[test]
fn the_container_image_builds_and_a_compose_cluster_answers() {
    if let Some(reason) = podman_unusable() {
        // Not required under CI: whether containers can run depends on the machine.
        return skip("container image and compose cluster", &reason, false);
    }
    let root = repository();
    let build = Command::new("podman")
        .args(["build", "--tag", "localhost/conclave:latest", "."])
        .current_dir(&root)
        .output()
        .expect("run podman build");
    assert!(build.status.success(), "podman build:\n{}", output_text(&build));
    let compose_available = podman(&["compose", "version"]).is_some_and(|o| o.status.success());
    if !compose_available {
        return skip("the compose cluster", "`podman compose` has no compose provider here", false);
    }
    let project = format!("conclave-test-{}", std::process::id());
    let compose = |args: &[&str]| {
        Command::new("podman")
            .args(["compose", "--project-name", &project, "--file", "compose.yaml"])
            .args(args)
            .current_dir(&root)
            .output()
            .expect("run podman compose")
    };
    struct Down<'a>(&'a dyn Fn(&[&str]) -> Output);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = (self.0)(&["down", "--volumes"]);
        }
    }
    let up = compose(&["up", "--detach"]);
    let _down = Down(&compose);
    assert!(up.status.success(), "podman compose up:\n{}", output_text(&up));
    let client = http();
    wait_for("a value written through node 1", Duration::from_secs(60), || {
        let put = client.put("http://127.0.0.1:23791/kv/greeting").body("hello").send().ok()?;
        put.status().is_success().then_some(())
    });
    let read = wait_for("the value read through node 3", Duration::from_secs(30), || {
        let response = client.get("http://127.0.0.1:23793/kv/greeting").send().ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.text().ok()
    });
    assert_eq!(read, "hello");
}

#[test]
fn each_pod_of_the_statefulset_starts_as_the_member_it_is() {
    let path = repository().join("deploy/kubernetes/conclave.yaml");
    let Some(documents) = yaml_documents(&path) else {
        return skip("StatefulSet settings", "no PyYAML (ci/install-test-deps.sh's venv)", true);
    };
    if !nix::unistd::Uid::effective().is_root() {
        // Each pod's name is its host name: the test gives a process one with `unshare --uts`.
        return skip("StatefulSet settings", "not root (cannot set a host name)", false);
    }
    let statefulset = documents.iter().find(|d| d["kind"] == "StatefulSet").expect("a StatefulSet");
    let container = &statefulset["spec"]["template"]["spec"]["containers"][0];
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().into(), e["value"].as_str().unwrap().into()))
        .collect();
    let command: Vec<&str> =
        container["command"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert_eq!(command, ["/bin/sh", "-c"], "the start script runs under sh");
    let script = container["args"][0].as_str().unwrap();
    let exec = "exec /usr/local/bin/conclave serve";
    assert!(script.contains(exec), "{script}");
    let script = script.replace(exec, &format!("exec {BINARY} serve --print-config"));
    for probe in ["readinessProbe", "livenessProbe"] {
        let path = container[probe]["httpGet"]["path"].as_str().unwrap();
        assert!(["/readyz", "/livez"].contains(&path), "{probe} on {path}");
    }
    for (pod, founder) in [("conclave-0", true), ("conclave-2", true), ("conclave-3", false)] {
        let mut command = Command::new("unshare");
        command
            .args(["--uts", "sh", "-c", &format!("hostname {pod} && exec sh -c \"$0\""), &script])
            .env("HOSTNAME", pod);
        let printed = print_config_with(&env, Some(command));
        assert_eq!(printed["name"].as_str(), Some(pod), "{printed}");
        assert_eq!(printed["join"].as_bool(), Some(!founder), "{pod}: {printed}");
        let members = printed["initial_cluster"].as_array().unwrap();
        assert_eq!(members.len(), if founder { 3 } else { 4 }, "{pod}: {printed}");
        let own = format!("{pod}={pod}.conclave:2380");
        assert!(members.iter().any(|m| m.as_str() == Some(own.as_str())), "{printed}");
        assert_eq!(
            printed["advertise_client_url"].as_str(),
            Some(format!("http://{pod}.conclave:2379").as_str())
        );
        assert_eq!(printed["listen_client"].as_str(), Some("0.0.0.0:2379"));
    }
}

#[test]
fn each_compose_service_is_the_member_it_is_named_after() {
    let path = repository().join("compose.yaml");
    let Some(documents) = yaml_documents(&path) else {
        return skip("compose settings", "no PyYAML (ci/install-test-deps.sh's venv)", true);
    };
    let services = documents[0]["services"].as_object().unwrap();
    assert_eq!(services.len(), 3);
    let dockerfile = std::fs::read_to_string(repository().join("Dockerfile")).unwrap();
    let image_env: Vec<(String, String)> = dockerfile
        .lines()
        .filter_map(|line| line.strip_prefix("ENV "))
        .filter_map(|assignment| assignment.trim().split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(!image_env.is_empty(), "the Dockerfile sets CONCLAVE_WORKING_DIR");
    let mut cluster_ids = Vec::new();
    for (service, definition) in services {
        let mut env = image_env.clone();
        for (key, value) in definition["environment"].as_object().unwrap() {
            env.push((key.clone(), value.as_str().unwrap().to_string()));
        }
        assert_eq!(definition["hostname"].as_str(), Some(service.as_str()));
        let printed = print_config_with(&env, None);
        assert_eq!(printed["name"].as_str(), Some(service.as_str()));
        assert_eq!(printed["forward_to_leader"].as_bool(), Some(true));
        assert_eq!(printed["working_dir"].as_str(), Some("/var/lib/conclave"));
        assert_eq!(
            printed["advertise_client_url"].as_str(),
            Some(format!("http://{service}:2379").as_str())
        );
        let published = definition["ports"][0].as_str().unwrap();
        assert!(published.ends_with(":2379"), "{published}");
        cluster_ids.push(printed["initial_cluster_token"].as_str().unwrap().to_string());
    }
    cluster_ids.dedup();
    assert_eq!(cluster_ids.len(), 1, "one token for the three services");
}

#[test]
fn the_image_healthcheck_passes_on_a_serving_node_and_fails_without_one() {
    let dockerfile = std::fs::read_to_string(repository().join("Dockerfile")).unwrap();
    // `HEALTHCHECK [options] \` then `CMD [...]` on the next line, in exec (JSON) form.
    let at = dockerfile.find("HEALTHCHECK").expect("a HEALTHCHECK");
    let cmd_at = at + dockerfile[at..].find("CMD ").expect("its CMD");
    let line = dockerfile[cmd_at + 4..].lines().next().unwrap();
    let command: Vec<String> = serde_json::from_str(line).expect("the exec form is JSON");
    assert!(command.iter().any(|word| word.contains("/health")), "{command:?}");
    let port = free_ports(1)[0];
    let for_port = |command: &[String]| {
        let mut words =
            command.iter().map(|w| w.replace("127.0.0.1/2379", &format!("127.0.0.1/{port}")));
        let mut process = Command::new(words.next().unwrap());
        process.args(words);
        process
    };
    let unhealthy = for_port(&command).output().expect("run the health check");
    assert!(!unhealthy.status.success(), "healthy with no node listening");
    let dir = temp_dir("healthcheck");
    let mut node = Node::start(port, &dir.join("node"), None, &[]);
    wait_for("the node to serve", Duration::from_secs(20), || {
        http()
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
    });
    let healthy = for_port(&command).output().expect("run the health check");
    assert!(
        healthy.status.success(),
        "the health check fails on a serving node: {}",
        output_text(&healthy)
    );
    node.kill9();
}
