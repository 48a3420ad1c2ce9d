//! Keys come from the request path, percent-decoded here from the raw URI (not by a router
//! extractor) so that invalid UTF-8 gets this API's own 400 answer and `%2F` stays a key byte.

use percent_encoding::percent_decode_str;

#[derive(Debug, PartialEq, Eq)]
pub enum KeyError {
    NotUtf8,
    /// A `%` not followed by two hex digits. Decoders disagree on what it means (most pass it
    /// through as a literal `%`, so `/kv/%` and `/kv/%25` would name the same key): refused.
    BadEscape,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::NotUtf8 => f.write_str("key is not valid UTF-8"),
            KeyError::BadEscape => f.write_str(
                "key has an invalid percent-escape (`%` must be followed by two hex digits)",
            ),
        }
    }
}

/// The key of a `/kv/...` path: everything after `/kv/`, decoded. Empty for `/kv` and `/kv/`.
pub fn key_from_path(path: &str) -> Result<String, KeyError> {
    let raw = path.strip_prefix("/kv").unwrap_or("");
    let raw = raw.strip_prefix('/').unwrap_or(raw);
    if !escapes_are_well_formed(raw.as_bytes()) {
        return Err(KeyError::BadEscape);
    }
    let bytes: Vec<u8> = percent_decode_str(raw).collect();
    String::from_utf8(bytes).map_err(|_| KeyError::NotUtf8)
}

/// Whether every `%` starts a `%XX` escape of two hex digits.
fn escapes_are_well_formed(raw: &[u8]) -> bool {
    let mut at = 0;
    while let Some(offset) = raw[at..].iter().position(|byte| *byte == b'%') {
        let escape = at + offset;
        let digits = raw.get(escape + 1..escape + 3);
        if !digits.is_some_and(|digits| digits.iter().all(u8::is_ascii_hexdigit)) {
            return false;
        }
        at = escape + 3;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_decoded_exactly() {
        assert_eq!(key_from_path("/kv/a%20b").as_deref(), Ok("a b"));
        assert_eq!(key_from_path("/kv/a:b.c").as_deref(), Ok("a:b.c"));
        assert_eq!(key_from_path("/kv/%F0%9F%98%80").as_deref(), Ok("\u{1f600}"));
        assert_eq!(key_from_path("/kv/dir%2Fname/x").as_deref(), Ok("dir/name/x"));
        assert_eq!(key_from_path("/kv/").as_deref(), Ok(""));
        assert_eq!(key_from_path("/kv").as_deref(), Ok(""));
        assert_eq!(key_from_path("/kv/%FF"), Err(KeyError::NotUtf8));
    }

    #[test]
    fn a_percent_that_is_not_an_escape_is_refused() {
        for path in ["/kv/%", "/kv/%4", "/kv/%ZZ", "/kv/a%g0", "/kv/ok%2"] {
            assert_eq!(key_from_path(path), Err(KeyError::BadEscape), "{path}");
        }
        assert_eq!(key_from_path("/kv/%25").as_deref(), Ok("%"));
        assert_eq!(key_from_path("/kv/100%25%20sure").as_deref(), Ok("100% sure"));
    }
}
