//! Standard Webhooks signing: `webhook-signature: v1,<base64 HMAC-SHA256(secret,
//! "{id}.{timestamp}.{body}")>`, secrets written `whsec_<base64>`. During a rotation's grace
//! period every live secret signs, and the signatures are space-separated.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;

use crate::model::Millis;

const SECRET_PREFIX: &str = "whsec_";
const SECRET_BYTES: usize = 24;

/// An endpoint's signing secret. Its `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Secret(bytes)
    }

    /// Parses `whsec_<base64>` (the prefix is optional, as the reference libraries accept).
    pub fn parse(s: &str) -> Option<Self> {
        let b64 = s.strip_prefix(SECRET_PREFIX).unwrap_or(s);
        let bytes = STANDARD.decode(b64).ok()?;
        (bytes.len() >= 16 && bytes.len() <= 64).then_some(Secret(bytes))
    }

    /// The `whsec_…` form shown to the endpoint's owner.
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// `v1,<base64 signature>` of one message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.expose())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Secret::parse(&s).ok_or_else(|| serde::de::Error::custom("invalid signing secret"))
    }
}

/// A secret replaced by a rotation, still signing until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredSecret {
    pub key: Secret,
    pub expires_at: Millis,
}

/// The current secret and those still in their grace period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSecrets {
    pub current: Secret,
    #[serde(default)]
    pub previous: Vec<RetiredSecret>,
}

impl EndpointSecrets {
    pub fn new(current: Secret) -> Self {
        EndpointSecrets {
            current,
            previous: Vec::new(),
        }
    }

    /// Makes `next` current; the old one keeps signing for `grace_ms`.
    pub fn rotate(&mut self, next: Secret, now: Millis, grace_ms: i64) {
        self.previous.retain(|p| p.expires_at > now);
        let old = std::mem::replace(&mut self.current, next);
        if grace_ms > 0 {
            self.previous.push(RetiredSecret {
                key: old,
                expires_at: now + grace_ms,
            });
        }
    }

    /// The `webhook-signature` header value: one `v1,` signature per live secret.
    pub fn signature_header(
        &self,
        msg_id: &str,
        timestamp: i64,
        body: &[u8],
        now: Millis,
    ) -> String {
        let mut header = self.current.sign(msg_id, timestamp, body);
        for p in self.previous.iter().filter(|p| p.expires_at > now) {
            header.push(' ');
            header.push_str(&p.key.sign(msg_id, timestamp, body));
        }
        header
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the Standard Webhooks specification's reference test suite.
    #[test]
    fn matches_the_reference_signature() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_round_trip_and_reject_garbage() {
        let s = Secret::generate();
        assert_eq!(Secret::parse(&s.expose()), Some(s.clone()));
        assert!(s.expose().starts_with("whsec_"));
        assert_eq!(Secret::parse("whsec_!!!"), None);
        assert_eq!(Secret::parse("whsec_c2hvcnQ="), None);
        assert!(!format!("{s:?}").contains(&s.expose()));
    }

    #[test]
    fn rotation_signs_with_both_secrets_until_the_grace_period_ends() {
        let old = Secret::generate();
        let new = Secret::generate();
        let mut secrets = EndpointSecrets::new(old.clone());
        secrets.rotate(new.clone(), 1_000, 500);
        let during = secrets.signature_header("msg_1", 10, b"{}", 1_200);
        let parts: Vec<_> = during.split(' ').collect();
        assert_eq!(
            parts,
            vec![new.sign("msg_1", 10, b"{}"), old.sign("msg_1", 10, b"{}")]
        );
        let after = secrets.signature_header("msg_1", 10, b"{}", 1_500);
        assert_eq!(after, new.sign("msg_1", 10, b"{}"));
    }
}
