//! Query parameters and headers of key requests: `?ttl=`, `?consistency=`, `If-Match`,
//! `If-None-Match`, and the session headers.

use axum::http::HeaderMap;
use conclave_core::engine::ReadConsistency;
use conclave_core::kv::{Condition, SessionTag};
use serde::Deserialize;

use conclave_client::api::{CLIENT_ID_HEADER, SEQ_HEADER};

/// Longest TTL accepted: ten years, far beyond any lease, short of overflowing a timestamp.
pub const MAX_TTL_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

#[derive(Debug, Default, Deserialize)]
pub struct KvParams {
    pub ttl: Option<String>,
    pub consistency: Option<String>,
    pub prefix: Option<String>,
    pub limit: Option<u64>,
    /// With `prefix`: the page after this key (the last key of the previous page).
    pub start_after: Option<String>,
    /// With `prefix`: keys and revisions without values.
    pub keys_only: Option<bool>,
}

/// The query string of a `/kv` request (`ttl=30s&consistency=lease`); `None` when the URI has
/// none. The error is the reason, for a 400.
pub fn parse_kv_params(query: Option<&str>) -> Result<KvParams, String> {
    match query {
        None => Ok(KvParams::default()),
        Some(query) => serde_urlencoded::from_str(query)
            .map_err(|error| format!("invalid query string: {error}")),
    }
}

/// A TTL in the grammar of [`crate::duration`] (`30s`, `500ms`, `5m`, `2h`, a bare number of
/// seconds), at least 1 ms and at most ten years.
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    let ttl = crate::duration::parse_duration(text).map_err(|error| format!("ttl {error}"))?;
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    if ttl_ms == 0 {
        return Err("ttl must be at least 1ms".into());
    }
    if ttl_ms > MAX_TTL_MS {
        return Err(format!("ttl {:?} is longer than the maximum of 10 years", text.trim()));
    }
    Ok(ttl_ms)
}

pub fn parse_consistency(text: Option<&str>) -> Result<ReadConsistency, String> {
    match text {
        None | Some("linearizable") => Ok(ReadConsistency::Linearizable),
        Some("lease") => Ok(ReadConsistency::Lease),
        Some("stale") => Ok(ReadConsistency::Stale),
        Some(other) => {
            Err(format!("consistency {other:?} is not one of linearizable, lease, stale"))
        }
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, String> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|text| Some(text.trim()))
            .map_err(|_| format!("header {name} is not ASCII")),
    }
}

/// An ETag as this API writes it (`"17"`), also accepted bare (`17`) or weak (`W/"17"`).
fn parse_etag(text: &str) -> Result<u64, String> {
    let bare = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    bare.parse()
        .map_err(|_| format!("{text:?} is not an ETag of this API (a revision like \"17\")"))
}

/// The write condition given by `If-Match` / `If-None-Match`.
pub fn parse_condition(headers: &HeaderMap) -> Result<Condition, String> {
    let if_match = header_text(headers, "if-match")?;
    let if_none_match = header_text(headers, "if-none-match")?;
    match (if_match, if_none_match) {
        (Some(_), Some(_)) => Err("give If-Match or If-None-Match, not both".into()),
        (Some("*"), None) => Ok(Condition::Present),
        (Some(etag), None) => {
            if etag.contains(',') {
                return Err("If-Match with several ETags is not supported".into());
            }
            Ok(Condition::ModRevisionEquals(parse_etag(etag)?))
        }
        (None, Some("*")) => Ok(Condition::Absent),
        (None, Some(other)) => {
            Err(format!("If-None-Match supports only * (create-only), not {other:?}"))
        }
        (None, None) => Ok(Condition::Always),
    }
}

/// The session tag of an exactly-once write, if the client sent one.
pub fn parse_session(headers: &HeaderMap) -> Result<Option<SessionTag>, String> {
    let client_id = header_text(headers, CLIENT_ID_HEADER)?;
    let seq = header_text(headers, SEQ_HEADER)?;
    match (client_id, seq) {
        (None, None) => Ok(None),
        (Some(client_id), Some(seq)) => {
            let client_id = client_id
                .parse()
                .map_err(|_| format!("{CLIENT_ID_HEADER} {client_id:?} is not a number"))?;
            let seq = seq.parse().map_err(|_| format!("{SEQ_HEADER} {seq:?} is not a number"))?;
            Ok(Some(SessionTag { client_id, seq }))
        }
        _ => Err(format!("{CLIENT_ID_HEADER} and {SEQ_HEADER} go together")),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn ttls_take_units() {
        assert_eq!(parse_ttl("30s"), Ok(30_000));
        assert_eq!(parse_ttl("500ms"), Ok(500));
        assert_eq!(parse_ttl("2m"), Ok(120_000));
        assert_eq!(parse_ttl("1h"), Ok(3_600_000));
        assert_eq!(parse_ttl("7"), Ok(7_000));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("500us").is_err(), "under a millisecond");
        assert_eq!(parse_ttl("10d"), Ok(864_000_000));
        assert!(parse_ttl("11years").is_err());
        assert!(parse_ttl("s").is_err());
        assert!(parse_ttl("99999999999999h").is_err());
    }

    #[test]
    fn conditions_follow_http_preconditions() {
        let mut headers = HeaderMap::new();
        assert_eq!(parse_condition(&headers), Ok(Condition::Always));
        headers.insert("if-none-match", HeaderValue::from_static("*"));
        assert_eq!(parse_condition(&headers), Ok(Condition::Absent));
        headers.clear();
        headers.insert("if-match", HeaderValue::from_static("\"12\""));
        assert_eq!(parse_condition(&headers), Ok(Condition::ModRevisionEquals(12)));
        headers.insert("if-match", HeaderValue::from_static("*"));
        assert_eq!(parse_condition(&headers), Ok(Condition::Present));
        headers.insert("if-match", HeaderValue::from_static("abc"));
        assert!(parse_condition(&headers).is_err());
    }

    #[test]
    fn query_strings_are_decoded_and_bad_ones_refused() {
        let params = parse_kv_params(None).unwrap();
        assert_eq!(
            (params.ttl, params.consistency, params.prefix, params.limit),
            (None, None, None, None)
        );
        let params =
            parse_kv_params(Some("ttl=30s&consistency=lease&prefix=a%2Fb&limit=5")).unwrap();
        assert_eq!(params.ttl.as_deref(), Some("30s"));
        assert_eq!(params.consistency.as_deref(), Some("lease"));
        assert_eq!(params.prefix.as_deref(), Some("a/b"));
        assert_eq!(params.limit, Some(5));
        let error = parse_kv_params(Some("limit=many")).unwrap_err();
        assert!(error.starts_with("invalid query string"), "{error}");
    }
}
