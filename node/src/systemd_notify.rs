//! systemd's readiness protocol (`sd_notify(3)`), for `Type=notify` units: the node sends
//! `READY=1` once its HTTP port accepts connections and it can answer them (so units ordered
//! after it start against a node that serves), and `STOPPING=1` when it begins to shut down.
//!
//! The protocol is one datagram on the unix socket named by `$NOTIFY_SOCKET` (a path, or an
//! abstract name when it starts with `@`); without the variable (not run by systemd) nothing is
//! sent. A few lines of std, not a crate: the protocol is that small.

use std::io;
use std::os::unix::net::UnixDatagram;

/// The environment variable systemd sets for a `Type=notify` service.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Tells systemd the service is ready. Errors are logged, not fatal: a node that serves is
/// more use than one that stops because its supervisor's socket went away.
pub fn ready() {
    notify("READY=1\nSTATUS=serving");
}

/// Tells systemd the service is stopping.
pub fn stopping() {
    notify("STOPPING=1");
}

fn notify(state: &str) {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET_ENV) else { return };
    let Some(socket) = socket.to_str() else {
        tracing::warn!("{NOTIFY_SOCKET_ENV} is not UTF-8; not notifying systemd");
        return;
    };
    if let Err(error) = send(socket, state) {
        tracing::warn!(%error, socket, state, "could not notify systemd");
    }
}

/// Sends `state` to the notification socket `socket` (a path or `@abstract-name`).
pub fn send(socket: &str, state: &str) -> io::Result<()> {
    let sender = UnixDatagram::unbound()?;
    match socket.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sender.send_to_addr(state.as_bytes(), &address)?;
        }
        None => {
            sender.send_to(state.as_bytes(), socket)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    #[test]
    fn a_state_arrives_as_one_datagram_on_a_path_or_an_abstract_socket() {
        let temp = TestDir::new("sd-notify");
        let path = temp.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).expect("bind");
        send(path.to_str().expect("utf-8"), "READY=1").expect("sent");
        let mut buffer = [0u8; 64];
        let length = receiver.recv(&mut buffer).expect("received");
        assert_eq!(&buffer[..length], b"READY=1");

        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("conclave-test-{}", std::process::id());
        let address =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
        let receiver = UnixDatagram::bind_addr(&address).expect("bind abstract");
        send(&format!("@{name}"), "STOPPING=1").expect("sent");
        let length = receiver.recv(&mut buffer).expect("received");
        assert_eq!(&buffer[..length], b"STOPPING=1");
    }
}
