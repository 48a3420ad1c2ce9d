//! Keys come from the request path, percent-decoded here from the raw URI (not by a router
//! extractor) so that invalid UTF-8 gets this API's own 400 answer and `%2F` stays a key byte.

use percent_encoding::percent_decode_str;

#[derive(Debug, PartialEq, Eq)]
pub enum KeyError {
    NotUtf8,
}

/// The key of a `/kv/...` path: everything after `/kv/`, decoded. Empty for `/kv` and `/kv/`.
pub fn key_from_path(path: &str) -> Result<String, KeyError> {
    let raw = path.strip_prefix("/kv").unwrap_or("");
    let raw = raw.strip_prefix('/').unwrap_or(raw);
    let bytes: Vec<u8> = percent_decode_str(raw).collect();
    String::from_utf8(bytes).map_err(|_| KeyError::NotUtf8)
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
}
