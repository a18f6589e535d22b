//! Identifiers: a type prefix and a UUIDv7 in hex, so ids sort by creation time, name their
//! kind at a glance and cannot be guessed. Lease tokens are 240 random bits; only their
//! SHA-256 is stored.

use sha2::{Digest, Sha256};

/// A new identifier with the given prefix, e.g. `new_id("tsk")` → `tsk_0193…`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Whether `id` has the shape of an identifier with this prefix.
pub fn has_prefix(id: &str, prefix: &str) -> bool {
    id.len() == prefix.len() + 33 && id.starts_with(prefix) && id.as_bytes()[prefix.len()] == b'_'
}

/// Whether `s` has the shape of any identifier this crate makes: a short lowercase
/// prefix, `_`, and 32 lowercase hex digits.
pub fn is_id_shaped(s: &str) -> bool {
    let Some((prefix, rest)) = s.split_once('_') else {
        return false;
    };
    (1..=8).contains(&prefix.len())
        && prefix.bytes().all(|b| b.is_ascii_lowercase())
        && rest.len() == 32
        && rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A fresh secret token with a prefix, e.g. `lse_…`. Made of two random UUIDv4s (244 bits).
pub fn new_secret(prefix: &str) -> String {
    format!(
        "{prefix}_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The hex SHA-256 of a string: how secrets and request bodies are stored and compared.
pub fn sha256_hex(text: &str) -> String {
    sha256_hex_bytes(text.as_bytes())
}

/// The SHA-256 of `bytes` in lowercase hex: an artifact's address in the object store.
pub fn sha256_hex_bytes(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

/// Percent-encodes text for one URL path segment or query value (ids and names of clients
/// that call the HTTP API: the CLI over `--server`, the MCP gateway).
pub fn url_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_is_the_lowercase_digest() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn ids_are_id_shaped_and_names_are_not() {
        for prefix in ["agt", "prj", "tsk", "ws", "key"] {
            assert!(is_id_shaped(&new_id(prefix)), "{prefix}");
        }
        for name in [
            "w1",
            "default",
            "agt_w1",
            "agt_0193ABCDEF",
            "tsk_x_y",
            "_abc",
        ] {
            assert!(!is_id_shaped(name), "{name}");
        }
    }
}
