//! API keys: random, shown once, stored as a SHA-256 hash. Keys carry 256 bits of entropy,
//! so a fast hash is enough; a slow password hash would only slow every request.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

const TENANT_PREFIX: &str = "hk_";
const OPERATOR_PREFIX: &str = "hkop_";
/// How much of a key is kept in clear to recognise it in listings.
const SHOWN_PREFIX_LEN: usize = 8;

/// A key in clear, as given to its owner once. Its `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainKey(String);

impl PlainKey {
    pub fn generate_tenant() -> Self {
        Self::generate(TENANT_PREFIX)
    }

    pub fn generate_operator() -> Self {
        Self::generate(OPERATOR_PREFIX)
    }

    fn generate(prefix: &str) -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        PlainKey(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    pub fn from_string(s: String) -> Self {
        PlainKey(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }

    /// The first characters, safe to show in listings.
    pub fn shown_prefix(&self) -> String {
        self.0.chars().take(SHOWN_PREFIX_LEN).collect()
    }
}

impl fmt::Debug for PlainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainKey(<redacted>)")
    }
}

/// The stored form of a key: lowercase hex SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyHash(String);

impl KeyHash {
    pub fn of(key: &str) -> Self {
        KeyHash(hex::encode(Sha256::digest(key.as_bytes())))
    }

    pub fn from_hex(s: String) -> Self {
        KeyHash(s)
    }

    pub fn as_hex(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_prefixed_and_hash_stably() {
        let a = PlainKey::generate_tenant();
        let b = PlainKey::generate_tenant();
        assert_ne!(a, b);
        assert!(a.expose().starts_with("hk_"));
        assert!(PlainKey::generate_operator().expose().starts_with("hkop_"));
        assert_eq!(a.hash(), KeyHash::of(a.expose()));
        assert_ne!(a.hash(), b.hash());
        assert_eq!(a.hash().as_hex().len(), 64);
        assert!(!a.hash().as_hex().contains(a.expose()));
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let k = PlainKey::generate_tenant();
        assert!(!format!("{k:?}").contains(k.expose()));
    }
}
