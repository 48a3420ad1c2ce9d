//! `Type=notify` as systemd runs it: a node started with `$NOTIFY_SOCKET` sends `READY=1` once
//! it serves — the first request after the notification succeeds — and `STOPPING=1` when it
//! begins to shut down on SIGTERM. Also the probes a supervisor uses: `/livez` and `/readyz`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{BINARY, free_ports, http, temp_dir};

fn receive(socket: &UnixDatagram) -> String {
    let mut buffer = [0u8; 512];
    let length = socket.recv(&mut buffer).expect("a notification within the deadline");
    String::from_utf8_lossy(&buffer[..length]).into_owned()
}

#[test]
fn a_node_tells_systemd_it_is_ready_once_it_serves_and_when_it_stops() {
    let port = free_ports(1)[0];
    let dir = temp_dir("sd-notify");
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut child = Command::new(BINARY)
        .arg("serve")
        .arg(format!("--port={port}"))
        .arg(format!("--working-dir={}", dir.join("data").display()))
        .env("NOTIFY_SOCKET", &socket_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let ready = receive(&socket);
    let ready_after = started.elapsed();
    assert!(ready.lines().any(|line| line == "READY=1"), "{ready:?}");
    // Ready means serving: the very first request succeeds.
    let client = http();
    let put = client.put(format!("http://127.0.0.1:{port}/kv/ready")).body("yes").send().unwrap();
    assert_eq!(put.status(), reqwest::StatusCode::OK);
    let livez = client.get(format!("http://127.0.0.1:{port}/livez")).send().unwrap();
    assert_eq!(livez.status(), reqwest::StatusCode::OK);
    let readyz = client.get(format!("http://127.0.0.1:{port}/readyz")).send().unwrap();
    assert_eq!(readyz.status(), reqwest::StatusCode::OK);

    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let stopping = receive(&socket);
    assert_eq!(stopping, "STOPPING=1");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    println!(
        "READY=1 {} ms after start, STOPPING=1 on SIGTERM, clean exit",
        ready_after.as_millis()
    );
}
