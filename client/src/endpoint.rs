//! Endpoints as users write them (`:8001`, `127.0.0.1:8001`, `http://host:8001`) turned into
//! base URLs, and the leader's address taken from a redirect.

use super::error::ClientError;

/// `http://host:port` without a trailing slash.
pub fn base_url(endpoint: &str) -> Result<String, ClientError> {
    let trimmed = endpoint.trim().trim_end_matches('/');
    let bad = |reason: &str| ClientError::BadEndpoint {
        endpoint: endpoint.to_string(),
        reason: reason.to_string(),
    };
    if trimmed.is_empty() {
        return Err(bad("empty"));
    }
    if let Some(rest) = trimmed.strip_prefix("https://") {
        return Ok(format!("https://{rest}"));
    }
    let address = trimmed.strip_prefix("http://").unwrap_or(trimmed);
    let address =
        if address.starts_with(':') { format!("127.0.0.1{address}") } else { address.to_string() };
    let (host, port) = address.rsplit_once(':').ok_or_else(|| bad("expected host:port"))?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |port| port == 0) {
        return Err(bad("expected host:port with a port 1-65535"));
    }
    Ok(format!("http://{address}"))
}

/// The base URL of a redirect's `Location` (scheme, host and port).
pub fn base_of_location(location: &str) -> Option<String> {
    let (scheme, rest) = location.split_once("://")?;
    let authority = rest.split('/').next()?;
    (!authority.is_empty()).then(|| format!("{scheme}://{authority}"))
}

/// Endpoints from a comma-separated list.
pub fn parse_endpoints(list: &str) -> Result<Vec<String>, ClientError> {
    let endpoints: Vec<String> =
        list.split(',').filter(|e| !e.trim().is_empty()).map(base_url).collect::<Result<_, _>>()?;
    if endpoints.is_empty() {
        return Err(ClientError::BadEndpoint {
            endpoint: list.to_string(),
            reason: "no endpoint given".into(),
        });
    }
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_take_the_usual_shapes() {
        assert_eq!(base_url(":8001").unwrap(), "http://127.0.0.1:8001");
        assert_eq!(base_url("10.0.0.2:8002/").unwrap(), "http://10.0.0.2:8002");
        assert_eq!(base_url("http://node-a:8003").unwrap(), "http://node-a:8003");
        assert!(base_url("node-a").is_err());
        assert!(base_url(":0").is_err());
        assert!(base_url("").is_err());
        assert_eq!(
            parse_endpoints(":8001,:8002").unwrap(),
            vec!["http://127.0.0.1:8001", "http://127.0.0.1:8002"]
        );
    }

    #[test]
    fn a_redirect_names_the_leader() {
        assert_eq!(
            base_of_location("http://127.0.0.1:8001/kv/a%20b?ttl=3s").as_deref(),
            Some("http://127.0.0.1:8001")
        );
        assert_eq!(base_of_location("/relative"), None);
    }
}
