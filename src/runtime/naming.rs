//! Deterministic, always-valid names for children.
//!
//! Every child name (and every label value derived from a user's name) goes through
//! [`child_name`]: joined with `-`, lower-cased, reduced to the DNS-label alphabet, and — when
//! it would not fit — truncated with a short hash of the full input appended, so two long inputs
//! that share a prefix still get distinct names and the same input always gets the same name.

use sha2::{Digest, Sha256};

/// The longest DNS label (RFC 1123), also the longest label value.
pub const MAX_NAME: usize = 63;
const HASH_LEN: usize = 8;

/// `parts` joined with `-`, as a valid DNS label of at most 63 characters.
pub fn child_name(parts: &[&str]) -> String {
    bounded_name(parts, MAX_NAME)
}

/// Like [`child_name`] but at most `max` characters (for names that get a suffix appended by a
/// controller, e.g. a Job's pods).
pub fn bounded_name(parts: &[&str], max: usize) -> String {
    assert!(max > HASH_LEN + 1, "a bounded name needs room for its hash");
    let joined = parts.iter().filter(|p| !p.is_empty()).copied().collect::<Vec<_>>().join("-");
    let clean = sanitize(&joined);
    if clean.len() <= max && clean == joined {
        return clean;
    }
    // Lossy (truncated or rewritten): make it unique again with a hash of the original input.
    let hash = short_hash(&joined);
    let keep = max - HASH_LEN - 1;
    let mut prefix: String = clean.chars().take(keep).collect();
    while prefix.ends_with('-') {
        prefix.pop();
    }
    if prefix.is_empty() { hash } else { format!("{prefix}-{hash}") }
}

/// A label value for an arbitrary string (label values allow `.` and `_`, but we keep to one
/// alphabet so names and label values always agree).
pub fn label_value(value: &str) -> String {
    child_name(&[value])
}

/// The first 8 hex digits of the SHA-256 of `input`.
pub fn short_hash(input: &str) -> String {
    hex(&Sha256::digest(input.as_bytes()))[..HASH_LEN].to_string()
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_dns_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= MAX_NAME
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    #[test]
    fn short_names_are_kept_as_they_are() {
        assert_eq!(child_name(&["team-a", "blue"]), "team-a-blue");
    }

    #[test]
    fn a_253_character_input_gives_a_valid_stable_distinct_name() {
        let long_a = "a".repeat(250) + "xyz";
        let long_b = "a".repeat(250) + "xyw";
        assert_eq!(long_a.len(), 253);
        let a = child_name(&[&long_a]);
        let b = child_name(&[&long_b]);
        assert!(is_dns_label(&a), "{a}");
        assert!(is_dns_label(&b), "{b}");
        assert_eq!(a.len(), MAX_NAME);
        assert_eq!(a, child_name(&[&long_a]), "stable");
        assert_ne!(a, b, "distinct inputs that share a 63-character prefix get distinct names");
    }

    #[test]
    fn invalid_characters_are_replaced_and_hashed() {
        let n = child_name(&["Team_A", "My.Endpoint"]);
        assert!(is_dns_label(&n), "{n}");
        assert!(n.starts_with("team-a-my-endpoint-"));
        // Different inputs that sanitize to the same text stay distinct.
        assert_ne!(n, child_name(&["team-a", "my-endpoint"]));
        assert_ne!(n, child_name(&["Team-A", "My.Endpoint"]));
    }

    #[test]
    fn bounded_names_leave_room_for_suffixes() {
        let n = bounded_name(&[&"x".repeat(80), "run"], 52);
        assert!(n.len() <= 52 && is_dns_label(&n), "{n}");
    }

    #[test]
    fn nothing_but_symbols_still_gives_a_name() {
        let n = child_name(&["___"]);
        assert!(is_dns_label(&n), "{n}");
        assert_eq!(n.len(), 8);
    }

    #[test]
    fn label_values_are_valid() {
        let v = label_value(&"Model.Name_".repeat(10));
        assert!(is_dns_label(&v), "{v}");
    }
}
