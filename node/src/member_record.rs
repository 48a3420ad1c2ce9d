//! What the cluster configuration says about a member: where its peer transport listens, where
//! it serves clients, and its name.
//!
//! The configuration in the log maps each member id to one string (`ClusterConfig::addresses`),
//! which the core passes, unread, to the network seam to dial. The node writes a *record* there:
//!
//! ```text
//! PEER_HOST:PORT [client=http://HOST:PORT] [name=NAME]
//! ```
//!
//! Why one string and not new fields in `ClusterConfig`: that type is encoded with postcard in
//! log entries and snapshots, which is not self-describing — a field added to it would make every
//! existing data directory unreadable. A record is read by the node only (`network.rs` dials its
//! first word), and a record of earlier versions (`host:port` alone) is a record without a client
//! URL or a name — which is also what a port-named member's record still is (its client
//! address follows from its id, which is its HTTP port). Words after the first are `key=value`; unknown keys are ignored, so a later
//! version may add some.
//!
//! Every member learns every other member's client URL from the log, not from flags: that is
//! how a follower redirects to a leader added after it started, and how a leader's address
//! survives its restart on another host (see `member_publish.rs`).

/// The longest record: the transport sends this node's record in its 256-byte hello, and
/// drops a peer's that is longer than 255 bytes.
pub const MAX_RECORD_BYTES: usize = 200;

/// The longest member name (a DNS label, as Kubernetes pod names are).
pub const MAX_NAME_BYTES: usize = 63;

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MemberRecord {
    /// `host:port` of the peer transport (a host name is resolved again at every connect).
    pub peer_address: String,
    /// `host:port` the member serves HTTP on, as it advertises it.
    pub client_address: Option<String>,
    pub name: Option<String>,
}

impl MemberRecord {
    /// Reads a record; never fails, because the configuration in the log is what it is: a
    /// record that says nothing more is a peer address alone.
    pub fn parse(text: &str) -> MemberRecord {
        let mut words = text.split_whitespace();
        let mut record = MemberRecord {
            peer_address: words.next().unwrap_or("").to_string(),
            ..Default::default()
        };
        for word in words {
            match word.split_once('=') {
                Some(("client", url)) => record.client_address = Some(authority(url).to_string()),
                Some(("name", name)) => record.name = Some(name.to_string()),
                _ => {}
            }
        }
        record
    }

    pub fn encode(&self) -> String {
        let mut text = self.peer_address.clone();
        if let Some(client) = &self.client_address {
            text.push_str(" client=http://");
            text.push_str(client);
        }
        if let Some(name) = &self.name {
            text.push_str(" name=");
            text.push_str(name);
        }
        text
    }
}

/// The address to dial in a record: its first word.
pub fn dial_address(record: &str) -> &str {
    record.split_whitespace().next().unwrap_or("")
}

/// `host:port` from `http://host:port/`, `tcp://host:port` or `host:port`.
pub fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

/// A URL or `host:port` as `host:port`, checked: a host (name, IPv4 or `[IPv6]`) and a port
/// 1-65535, nothing else. `what` names the flag in the error.
pub fn parse_address(url: &str, what: &str) -> Result<String, String> {
    let trimmed = url.trim();
    if let Some((scheme, _)) = trimmed.split_once("://")
        && !matches!(scheme, "http" | "tcp")
    {
        return Err(format!("{what} {url:?}: the scheme must be http:// (or none)"));
    }
    let address = authority(trimmed);
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("{what} {url:?}: expected host:port (or http://host:port)"))?;
    let port_ok = port.parse::<u16>().is_ok_and(|port| port != 0);
    if host.is_empty() || !port_ok {
        return Err(format!("{what} {url:?}: expected a host and a port 1-65535"));
    }
    if address.chars().any(|c| c.is_whitespace() || c == '=' || c == ',') {
        return Err(format!("{what} {url:?}: spaces, '=' and ',' cannot appear in an address"));
    }
    Ok(address.to_string())
}

/// A member name: 1 to 63 of `[A-Za-z0-9._-]`, starting with a letter or digit, not all digits (it appears in
/// records, in `--initial-cluster` lists and in directory names).
pub fn check_name(name: &str) -> Result<(), String> {
    let valid_chars =
        name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    let starts_well = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    // A name of digits only would read as a member id where either is accepted.
    let all_digits = name.chars().all(|c| c.is_ascii_digit());
    if name.is_empty() || name.len() > MAX_NAME_BYTES || !valid_chars || !starts_well || all_digits
    {
        return Err(format!(
            "member name {name:?}: use 1 to {MAX_NAME_BYTES} letters, digits, '.', '_' or '-', \
             starting with a letter or digit, not digits only"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_old_records_are_peer_addresses() {
        let record = MemberRecord {
            peer_address: "conclave-0.conclave:2380".into(),
            client_address: Some("conclave-0.conclave:2379".into()),
            name: Some("conclave-0".into()),
        };
        let text = record.encode();
        assert_eq!(
            text,
            "conclave-0.conclave:2380 client=http://conclave-0.conclave:2379 name=conclave-0"
        );
        assert_eq!(MemberRecord::parse(&text), record);
        assert_eq!(dial_address(&text), "conclave-0.conclave:2380");
        let old = MemberRecord::parse("127.0.0.1:18001");
        assert_eq!(old.peer_address, "127.0.0.1:18001");
        assert_eq!((old.client_address, old.name), (None, None));
        // A later version's words are ignored, not fatal.
        assert_eq!(MemberRecord::parse("h:1 zone=eu name=a").name.as_deref(), Some("a"));
    }

    #[test]
    fn addresses_and_names_are_checked() {
        assert_eq!(parse_address("http://10.0.0.1:2379/", "--x").as_deref(), Ok("10.0.0.1:2379"));
        assert_eq!(parse_address("node-a:2380", "--x").as_deref(), Ok("node-a:2380"));
        assert_eq!(parse_address("[::1]:2380", "--x").as_deref(), Ok("[::1]:2380"));
        for bad in ["https://a:1", "a", "a:0", ":2380", "a:b", "a=b:1"] {
            assert!(parse_address(bad, "--x").is_err(), "{bad}");
        }
        assert!(check_name("conclave-0").is_ok());
        for bad in ["", "-a", "a b", "a=b", "a,b", "8004", &"x".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
