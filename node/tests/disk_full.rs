//! A full disk degrades a node, it does not kill it: on a small tmpfs, writes fill the disk
//! until they are refused with 507 (and a refused write never applies), reads go on, `/health`
//! and `/metrics` say why, a kill -9 and restart on the still-full disk serves reads again, and
//! writes resume by themselves once space is freed — with every acknowledged write intact.
//!
//! Mounting needs root (or CAP_SYS_ADMIN); where it is impossible the test says so and skips.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use support::{Node, free_ports, http, key_url, temp_dir, wait_for};

const DEADLINE: Duration = Duration::from_secs(30);
const TMPFS_MIB: u64 = 128;
/// Taken on the tmpfs before the node starts, and deleted to give the space back.
const FILLER_MIB: u64 = 64;
const VALUE_BYTES: usize = 64 * 1024;

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(name: &str, size_mib: u64) -> Result<Tmpfs, String> {
        let path = temp_dir(name).join("mnt");
        std::fs::create_dir_all(&path).map_err(|error| error.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(&path)
            .output()
            .map_err(|error| format!("cannot run mount: {error}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
        }
        Ok(Tmpfs { path })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn write_filler(path: &Path, mib: u64) {
    let chunk = vec![0xa5u8; 1 << 20];
    let mut file = std::fs::File::create(path).unwrap();
    for _ in 0..mib {
        std::io::Write::write_all(&mut file, &chunk).unwrap();
    }
}

fn value_of(i: usize) -> Vec<u8> {
    let mut value = format!("value {i} ").into_bytes();
    value.resize(VALUE_BYTES, b'0' + (i % 10) as u8);
    value
}

#[test]
fn a_full_disk_refuses_writes_keeps_serving_reads_and_resumes_by_itself() {
    let tmpfs = match Tmpfs::mount("disk-full", TMPFS_MIB) {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            println!(
                "SKIPPED: cannot mount a tmpfs here ({reason}); the disk-full test needs root"
            );
            return;
        }
    };
    let filler = tmpfs.path.join("filler");
    write_filler(&filler, FILLER_MIB);
    let port = free_ports(1)[0];
    let mut node =
        Node::start(port, &tmpfs.path.join("data"), None, &["--snapshot-every-entries=100"]);
    let client = http();
    wait_for("the node", DEADLINE, || {
        let response = client.put(key_url(port, "first")).body("yes").send().ok()?;
        (response.status() == StatusCode::OK).then_some(())
    });

    // Fill the disk: every PUT is acknowledged until one is refused with 507.
    let mut acknowledged = Vec::new();
    let refusal = loop {
        let i = acknowledged.len();
        assert!(i < 5_000, "the disk never filled");
        let response =
            client.put(key_url(port, &format!("k{i}"))).body(value_of(i)).send().unwrap();
        match response.status() {
            StatusCode::OK => acknowledged.push(i),
            StatusCode::INSUFFICIENT_STORAGE => break response.text().unwrap(),
            other => panic!("PUT k{i}: unexpected {other}: {}", response.text().unwrap()),
        }
    };
    assert!(refusal.contains("disk") && refusal.contains("full"), "{refusal}");
    let refused_key = "refused-while-full";
    let response = client.put(key_url(port, refused_key)).body("never").send().unwrap();
    assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE);

    // Reads are served; health and metrics say why writes are refused.
    let read_back = |when: &str| {
        for i in &acknowledged {
            let response = client.get(key_url(port, &format!("k{i}"))).send().unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{when}: k{i}");
            assert_eq!(response.bytes().unwrap().as_ref(), value_of(*i).as_slice(), "{when}: k{i}");
        }
    };
    read_back("while the disk is full");
    let health = client.get(format!("http://127.0.0.1:{port}/health")).send().unwrap();
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health: serde_json::Value = health.json().unwrap();
    assert!(health["reasons"].to_string().contains("disk full"), "{health}");
    assert_eq!(health["alarms"], serde_json::json!(["NOSPACE"]), "{health}");
    let metrics = client.get(format!("http://127.0.0.1:{port}/metrics")).send().unwrap();
    assert!(metrics.text().unwrap().contains("conclave_disk_full 1"));

    // kill -9 and restart on the still-full disk: it serves reads, still refuses writes.
    node.kill9();
    node.restart();
    wait_for("reads after a restart on a full disk", DEADLINE, || {
        let response = client.get(key_url(port, "k0")).send().ok()?;
        (response.status() == StatusCode::OK).then_some(())
    });
    read_back("after a restart on the full disk");
    let response = client.put(key_url(port, refused_key)).body("never").send().unwrap();
    assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE, "still full after restart");

    // Space comes back: writes resume by themselves.
    std::fs::remove_file(&filler).unwrap();
    wait_for("writes to resume", DEADLINE, || {
        let response = client.put(key_url(port, "after")).body("resumed").send().ok()?;
        (response.status() == StatusCode::OK).then_some(())
    });
    let health = client.get(format!("http://127.0.0.1:{port}/health")).send().unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    read_back("after space came back");
    let response = client.get(key_url(port, refused_key)).send().unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "a refused write never applies");
    println!(
        "{TMPFS_MIB} MiB tmpfs: {} writes of {} KiB acknowledged before the first 507; reads \
         served while full and after a kill -9 restart on the full disk; writes resumed once \
         {FILLER_MIB} MiB were freed; nothing acknowledged lost, nothing refused applied",
        acknowledged.len(),
        VALUE_BYTES / 1024
    );
    drop(node);
}
