//! Endpoint keys: loading them from the mounted Secret and checking callers' bearer tokens.

use std::fmt;
use std::io;
use std::path::Path;

use http::HeaderMap;
use http::header::AUTHORIZATION;
use subtle::ConstantTimeEq;

/// The endpoint's primary and secondary keys. Either one is accepted, so keys can be rotated one at
/// a time without refusing callers.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Keys {
    primary: Option<Vec<u8>>,
    secondary: Option<Vec<u8>>,
}

// Keys are secrets: never print them, even in debug output.
impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("primary", &self.primary.as_ref().map(|_| "<redacted>"))
            .field("secondary", &self.secondary.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Keys {
    /// Keys from their values. Empty values (after trimming whitespace) count as absent.
    pub fn new(primary: &str, secondary: &str) -> Self {
        Self { primary: non_empty(primary.as_bytes()), secondary: non_empty(secondary.as_bytes()) }
    }

    /// Reads the files `primary` and `secondary` in `dir` (a mounted Secret). A missing file is an
    /// absent key; any other read error is returned so the caller can keep the keys it had.
    pub fn load(dir: &Path) -> io::Result<Self> {
        let read = |name: &str| match std::fs::read(dir.join(name)) {
            Ok(bytes) => Ok(non_empty(&bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
        Ok(Self { primary: read("primary")?, secondary: read("secondary")? })
    }

    /// Whether at least one key is set; without one, key-authenticated endpoints refuse everyone.
    pub fn any(&self) -> bool {
        self.primary.is_some() || self.secondary.is_some()
    }

    /// Whether the request carries `Authorization: Bearer <key>` with one of the keys.
    pub fn authorize(&self, headers: &HeaderMap) -> bool {
        let Some(token) = headers.get(AUTHORIZATION).and_then(|v| bearer_token(v.as_bytes())) else {
            return false;
        };
        // Compare with both keys, without short-circuiting, so the time taken says nothing about
        // which key (if any) matched or how much of it did.
        let matches = |key: &Option<Vec<u8>>| match key {
            Some(key) => key.as_slice().ct_eq(token),
            None => subtle::Choice::from(0),
        };
        bool::from(matches(&self.primary) | matches(&self.secondary))
    }
}

/// The token of a `Bearer` authorization value; the scheme is case-insensitive (RFC 7235).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    Some(value[SCHEME.len()..].trim_ascii())
}

/// Secret files often end with a newline (`echo key > primary`); that is not part of the key.
fn non_empty(bytes: &[u8]) -> Option<Vec<u8>> {
    let trimmed = bytes.trim_ascii();
    (!trimmed.is_empty()).then(|| trimmed.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn accepts_either_key() {
        let keys = Keys::new("p-key", "s-key\n");
        assert!(keys.authorize(&headers("Bearer p-key")));
        assert!(keys.authorize(&headers("bearer s-key")));
        assert!(keys.authorize(&headers("BEARER  p-key ")));
    }

    #[test]
    fn refuses_everything_else() {
        let keys = Keys::new("p-key", "s-key");
        assert!(!keys.authorize(&HeaderMap::new()));
        assert!(!keys.authorize(&headers("Bearer wrong")));
        assert!(!keys.authorize(&headers("Bearer p-ke")));
        assert!(!keys.authorize(&headers("Bearer p-key2")));
        assert!(!keys.authorize(&headers("Basic p-key")));
        assert!(!keys.authorize(&headers("p-key")));
        assert!(!keys.authorize(&headers("Bearer ")));
    }

    #[test]
    fn empty_keys_never_match() {
        let keys = Keys::new("", " \n");
        assert!(!keys.any());
        assert!(!keys.authorize(&headers("Bearer ")));
        assert!(!keys.authorize(&headers("Bearer x")));
    }

    #[test]
    fn loads_from_directory_and_redacts_debug() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("primary"), "abc\n").unwrap();
        let keys = Keys::load(dir.path()).unwrap();
        assert_eq!(keys, Keys::new("abc", ""));
        assert!(!format!("{keys:?}").contains("abc"));
    }
}
