//! `/metrics` through real parsers: the classic Prometheus text format (what `curl` and
//! scrapers that do not ask for more get) must pass `promtool check metrics` (Debian's
//! `prometheus` package), and OpenMetrics (what Prometheus asks for) must parse with the
//! OpenMetrics parser of the Python client (`prometheus-client` in the CI venv). Each format
//! read by the other's parser fails, which is why the node asks the `Accept` header.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::{Node, free_ports, from_venv, http, key_url, skip, temp_dir, wait_for};

/// What Prometheus 2.x sends when it scrapes.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Runs `program args` with `input` on its stdin.
fn run_with_input(program: &std::path::Path, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn text_of(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The body and content type of `/metrics` asked with `accept`.
fn scrape(port: u16, accept: Option<&str>) -> (String, String) {
    let mut request = http().get(format!("http://127.0.0.1:{port}/metrics"));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    (content_type, response.text().unwrap())
}

/// OpenMetrics parsed by the Python client: the names of the families, one per line.
const PARSE_OPENMETRICS: &str = "
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    print(family.name, family.type, ' '.join(sorted({s.name for s in family.samples})))
";

#[test]
fn metrics_parse_in_the_format_each_scraper_asks_for() {
    let port = free_ports(1)[0];
    let node = Node::start(port, &temp_dir("metrics-formats").join("node"), None, &[]);
    wait_for("a write", Duration::from_secs(30), || {
        let response = http().put(key_url(node.port, "k")).body("v").send().ok()?;
        response.status().is_success().then_some(())
    });
    let (classic_type, classic) = scrape(port, None);
    assert_eq!(classic_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(classic.contains("# TYPE conclave_leader_changes_total counter"), "{classic}");
    // What etcd operators alert on, and every exporter's process metrics.
    let sample = |name: &str| -> Option<f64> {
        let line = classic.lines().find(|line| line.split([' ', '{']).next() == Some(name))?;
        line.rsplit(' ').next()?.parse().ok()
    };
    assert!(sample("conclave_proposals_applied_total").is_some_and(|v| v >= 1.0), "{classic}");
    assert!(sample("conclave_proposals_committed_total").is_some_and(|v| v >= 1.0));
    assert_eq!(sample("conclave_is_learner"), Some(0.0));
    assert!(sample("conclave_data_dir_bytes").is_some_and(|v| v > 0.0), "{classic}");
    let version = format!("conclave_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    assert!(classic.contains(&version), "{classic}");
    assert!(sample("process_cpu_seconds_total").is_some_and(|v| v > 0.0), "{classic}");
    assert!(sample("process_resident_memory_bytes").is_some_and(|v| v > 1e6), "{classic}");
    assert!(sample("process_open_fds").is_some_and(|v| v >= 3.0), "{classic}");
    assert!(sample("process_max_fds").is_some_and(|v| v >= 1024.0), "{classic}");
    assert!(sample("process_start_time_seconds").is_some_and(|v| v > 1.7e9), "{classic}");
    let (open_type, openmetrics) = scrape(port, Some(PROMETHEUS_ACCEPT));
    assert_eq!(open_type, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");

    let promtool = std::path::Path::new("/usr/bin/promtool");
    if promtool.is_file() {
        let checked = run_with_input(promtool, &["check", "metrics"], &classic);
        assert!(checked.status.success(), "promtool: {}\n{classic}", text_of(&checked));
        let misread = run_with_input(promtool, &["check", "metrics"], &openmetrics);
        assert!(!misread.status.success(), "promtool took OpenMetrics as the classic format");
    } else {
        skip("promtool check metrics", "no promtool (ci/install-test-deps.sh installs it)", true);
    }

    let Some(python) = from_venv("python") else {
        return skip("OpenMetrics parsing", "no CI venv (ci/install-test-deps.sh)", true);
    };
    let parsed = run_with_input(&python, &["-c", PARSE_OPENMETRICS], &openmetrics);
    let families = String::from_utf8_lossy(&parsed.stdout).into_owned();
    if !parsed.status.success() && text_of(&parsed).contains("No module named") {
        return skip("OpenMetrics parsing", "no prometheus-client in the CI venv", true);
    }
    assert!(parsed.status.success(), "{}", text_of(&parsed));
    assert!(
        families
            .lines()
            .any(|line| line == "conclave_leader_changes counter conclave_leader_changes_total"),
        "{families}"
    );
    assert!(
        families.lines().any(|line| line.starts_with("conclave_fsync_duration_seconds histogram"))
    );
    let misread = run_with_input(&python, &["-c", PARSE_OPENMETRICS], &classic);
    assert!(!misread.status.success(), "the classic format parsed as OpenMetrics");
}
