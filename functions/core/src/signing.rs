//! Standard Webhooks signing: `webhook-signature: v1,<base64 HMAC-SHA256(secret,
//! "{id}.{timestamp}.{body}")>`, secrets written `whsec_<base64>`, and the asymmetric
//! `v1a,<base64 ed25519 signature>` with keys `whsk_`/`whpk_`. During a rotation's grace
//! period every live key signs, and the signatures are space-separated.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::Signer;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;

use crate::model::Millis;

const SECRET_PREFIX: &str = "whsec_";
const SECRET_BYTES: usize = 24;
const PRIVATE_KEY_PREFIX: &str = "whsk_";
const PUBLIC_KEY_PREFIX: &str = "whpk_";

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

/// Which signatures an endpoint's requests carry in `webhook-signature`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signing {
    /// `v1,` (HMAC-SHA256 with the `whsec_` secret) alone.
    #[default]
    Hmac,
    /// `v1a,` (ed25519, checked with the `whpk_` public key) alone.
    Ed25519,
    /// Both, space-separated: receivers of either kind verify.
    Both,
}

impl Signing {
    pub fn as_str(self) -> &'static str {
        match self {
            Signing::Hmac => "hmac",
            Signing::Ed25519 => "ed25519",
            Signing::Both => "both",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hmac" => Some(Signing::Hmac),
            "ed25519" => Some(Signing::Ed25519),
            "both" => Some(Signing::Both),
            _ => None,
        }
    }

    pub fn hmac(self) -> bool {
        matches!(self, Signing::Hmac | Signing::Both)
    }

    pub fn ed25519(self) -> bool {
        matches!(self, Signing::Ed25519 | Signing::Both)
    }
}

/// An endpoint's ed25519 private key. Only its public half is ever shown; its `Debug`
/// prints neither. Held as the seed: the key pair is derived when it signs, so loading an
/// endpoint (fan-out loads every one of a tenant's) costs no curve arithmetic.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey([u8; ed25519_dalek::SECRET_KEY_LENGTH]);

impl PrivateKey {
    pub fn generate() -> Self {
        let mut seed = [0u8; ed25519_dalek::SECRET_KEY_LENGTH];
        rand::rng().fill_bytes(&mut seed);
        PrivateKey(seed)
    }

    /// Parses `whsk_<base64 of the 32-byte seed>`, the stored form.
    fn parse(s: &str) -> Option<Self> {
        let bytes = STANDARD.decode(s.strip_prefix(PRIVATE_KEY_PREFIX)?).ok()?;
        bytes.try_into().ok().map(PrivateKey)
    }

    /// The stored form; private to this module so that no view can reach it.
    fn expose(&self) -> String {
        format!("{PRIVATE_KEY_PREFIX}{}", STANDARD.encode(self.0))
    }

    fn pair(&self) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&self.0)
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.pair().verifying_key())
    }

    /// `v1a,<base64 signature>` of one message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let signature = self.pair().sign(&signed_content(msg_id, timestamp, body));
        format!("v1a,{}", STANDARD.encode(signature.to_bytes()))
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl Serialize for PrivateKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.expose())
    }
}

impl<'de> Deserialize<'de> for PrivateKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PrivateKey::parse(&s).ok_or_else(|| serde::de::Error::custom("invalid private key"))
    }
}

/// An ed25519 public key, written `whpk_<base64 of its 32 bytes>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    pub fn parse(s: &str) -> Option<Self> {
        let bytes = STANDARD.decode(s.strip_prefix(PUBLIC_KEY_PREFIX)?).ok()?;
        let bytes: [u8; ed25519_dalek::PUBLIC_KEY_LENGTH] = bytes.try_into().ok()?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .ok()
            .map(PublicKey)
    }

    pub fn expose(&self) -> String {
        format!("{PUBLIC_KEY_PREFIX}{}", STANDARD.encode(self.0.as_bytes()))
    }

    /// Whether `signature` (the base64 after `v1a,`) signs the message with this key.
    /// Strict verification: no malleable or small-order signatures.
    pub fn verifies(&self, msg_id: &str, timestamp: i64, body: &[u8], signature: &str) -> bool {
        let Ok(bytes) = STANDARD.decode(signature) else {
            return false;
        };
        let Ok(signature) = ed25519_dalek::Signature::from_slice(&bytes) else {
            return false;
        };
        self.0
            .verify_strict(&signed_content(msg_id, timestamp, body), &signature)
            .is_ok()
    }
}

/// `{id}.{timestamp}.{body}`, what both kinds of signature sign (HMAC takes it in parts).
fn signed_content(msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let timestamp = timestamp.to_string();
    let mut content = Vec::with_capacity(msg_id.len() + timestamp.len() + body.len() + 2);
    content.extend_from_slice(msg_id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

/// A private key replaced by a rotation, still signing until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredPrivateKey {
    pub key: PrivateKey,
    pub expires_at: Millis,
}

/// The current ed25519 key and those still in their grace period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPairs {
    pub current: PrivateKey,
    #[serde(default)]
    pub previous: Vec<RetiredPrivateKey>,
}

/// A secret replaced by a rotation, still signing until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredSecret {
    pub key: Secret,
    pub expires_at: Millis,
}

/// How an endpoint signs, with the current secret and keys and those still in their grace
/// period. The HMAC secret is always there (Mailgun's body format signs with it); the
/// ed25519 keys from the first time ed25519 signing is chosen on, kept when it is turned
/// off so that turning it on again keeps the public key receivers know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSecrets {
    pub current: Secret,
    #[serde(default)]
    pub previous: Vec<RetiredSecret>,
    /// Records written before the choice existed sign with HMAC alone, as they did.
    #[serde(default)]
    signing: Signing,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ed25519: Option<KeyPairs>,
}

/// A public key and, for a key retired by a rotation, when it stops signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyInfo {
    pub key: PublicKey,
    pub expires_at: Option<Millis>,
}

impl EndpointSecrets {
    /// Signing with HMAC alone.
    pub fn new(current: Secret) -> Self {
        EndpointSecrets {
            current,
            previous: Vec::new(),
            signing: Signing::Hmac,
            ed25519: None,
        }
    }

    pub fn signing(&self) -> Signing {
        self.signing
    }

    /// Chooses the signatures; a key pair is made the first time ed25519 is chosen.
    pub fn set_signing(&mut self, signing: Signing) {
        self.signing = signing;
        if signing.ed25519() && self.ed25519.is_none() {
            self.ed25519 = Some(KeyPairs {
                current: PrivateKey::generate(),
                previous: Vec::new(),
            });
        }
    }

    /// Makes `next` current, and a new ed25519 key if the endpoint has one; the old ones
    /// keep signing for `grace_ms`.
    pub fn rotate(&mut self, next: Secret, now: Millis, grace_ms: i64) {
        self.previous.retain(|p| p.expires_at > now);
        let old = std::mem::replace(&mut self.current, next);
        if grace_ms > 0 {
            self.previous.push(RetiredSecret {
                key: old,
                expires_at: now + grace_ms,
            });
        }
        if let Some(keys) = &mut self.ed25519 {
            keys.previous.retain(|p| p.expires_at > now);
            let old = std::mem::replace(&mut keys.current, PrivateKey::generate());
            if grace_ms > 0 {
                keys.previous.push(RetiredPrivateKey {
                    key: old,
                    expires_at: now + grace_ms,
                });
            }
        }
    }

    /// The current public key and the retired ones still signing at `now`; `None` for an
    /// endpoint that never signed with ed25519.
    pub fn public_keys(&self, now: Millis) -> Option<(PublicKey, Vec<PublicKeyInfo>)> {
        let keys = self.ed25519.as_ref()?;
        let previous = keys
            .previous
            .iter()
            .filter(|p| p.expires_at > now)
            .map(|p| PublicKeyInfo {
                key: p.key.public_key(),
                expires_at: Some(p.expires_at),
            })
            .collect();
        Some((keys.current.public_key(), previous))
    }

    /// The `webhook-signature` header value: one `v1,` signature per live secret and one
    /// `v1a,` per live private key, as the endpoint's choice says.
    pub fn signature_header(
        &self,
        msg_id: &str,
        timestamp: i64,
        body: &[u8],
        now: Millis,
    ) -> String {
        let mut signatures = Vec::with_capacity(2);
        if self.signing.hmac() {
            signatures.push(self.current.sign(msg_id, timestamp, body));
            for p in self.previous.iter().filter(|p| p.expires_at > now) {
                signatures.push(p.key.sign(msg_id, timestamp, body));
            }
        }
        if let Some(keys) = self.ed25519.as_ref().filter(|_| self.signing.ed25519()) {
            signatures.push(keys.current.sign(msg_id, timestamp, body));
            for p in keys.previous.iter().filter(|p| p.expires_at > now) {
                signatures.push(p.key.sign(msg_id, timestamp, body));
            }
        }
        signatures.join(" ")
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

    fn v1a_part(header: &str) -> Vec<&str> {
        header
            .split(' ')
            .filter_map(|s| s.strip_prefix("v1a,"))
            .collect()
    }

    #[test]
    fn ed25519_signatures_verify_with_the_public_key_only() {
        let key = PrivateKey::generate();
        let public = PublicKey::parse(&key.public_key().expose()).unwrap();
        let sig = key.sign("msg_1", 1614265330, br#"{"a":1}"#);
        let b64 = sig.strip_prefix("v1a,").expect("a v1a signature");
        assert_eq!(STANDARD.decode(b64).unwrap().len(), 64);
        assert!(public.verifies("msg_1", 1614265330, br#"{"a":1}"#, b64));
        assert!(!public.verifies("msg_1", 1614265330, br#"{"a":2}"#, b64));
        assert!(!public.verifies("msg_2", 1614265330, br#"{"a":1}"#, b64));
        assert!(!public.verifies("msg_1", 1614265331, br#"{"a":1}"#, b64));
        assert!(!PrivateKey::generate().public_key().verifies(
            "msg_1",
            1614265330,
            br#"{"a":1}"#,
            b64
        ));
        assert!(!public.verifies("msg_1", 1614265330, br#"{"a":1}"#, "not base64!"));
    }

    #[test]
    fn keys_have_the_standard_prefixes_and_round_trip() {
        let key = PrivateKey::generate();
        let public = key.public_key().expose();
        assert!(public.starts_with("whpk_"));
        assert_eq!(STANDARD.decode(&public[5..]).unwrap().len(), 32);
        assert!(key.expose().starts_with("whsk_"));
        assert_eq!(PrivateKey::parse(&key.expose()), Some(key.clone()));
        assert_eq!(
            PublicKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            None
        );
        assert_eq!(PublicKey::parse("whpk_c2hvcnQ="), None);
        let debug = format!("{key:?}");
        assert!(!debug.contains(&key.expose()[5..]), "{debug}");
    }

    #[test]
    fn the_signing_choice_picks_the_signatures() {
        let mut secrets = EndpointSecrets::new(Secret::generate());
        let hmac = secrets.current.sign("msg_1", 10, b"{}");
        assert_eq!(secrets.signature_header("msg_1", 10, b"{}", 0), hmac);
        assert_eq!(secrets.public_keys(0), None);

        secrets.set_signing(Signing::Ed25519);
        let (public, previous) = secrets.public_keys(0).expect("a key pair is made");
        assert!(previous.is_empty());
        let header = secrets.signature_header("msg_1", 10, b"{}", 0);
        let v1a = v1a_part(&header);
        assert_eq!(v1a.len(), 1);
        assert!(!header.contains("v1,"), "{header}");
        assert!(public.verifies("msg_1", 10, b"{}", v1a[0]));

        secrets.set_signing(Signing::Both);
        let header = secrets.signature_header("msg_1", 10, b"{}", 0);
        let parts: Vec<_> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], hmac);
        assert!(public.verifies("msg_1", 10, b"{}", &parts[1][4..]));

        // Off and on again: the same key, which receivers already know.
        secrets.set_signing(Signing::Hmac);
        assert_eq!(secrets.signature_header("msg_1", 10, b"{}", 0), hmac);
        secrets.set_signing(Signing::Both);
        assert_eq!(secrets.public_keys(0).unwrap().0, public);
    }

    #[test]
    fn rotation_keeps_the_old_ed25519_key_signing_for_the_grace_period() {
        let mut secrets = EndpointSecrets::new(Secret::generate());
        secrets.set_signing(Signing::Ed25519);
        let (old, _) = secrets.public_keys(0).unwrap();
        secrets.rotate(Secret::generate(), 1_000, 500);
        let (new, previous) = secrets.public_keys(1_200).unwrap();
        assert_ne!(new, old);
        assert_eq!(
            previous,
            vec![PublicKeyInfo {
                key: old.clone(),
                expires_at: Some(1_500)
            }]
        );
        let during = secrets.signature_header("msg_1", 10, b"{}", 1_200);
        let sigs = v1a_part(&during);
        assert_eq!(sigs.len(), 2, "{during}");
        assert!(new.verifies("msg_1", 10, b"{}", sigs[0]));
        assert!(old.verifies("msg_1", 10, b"{}", sigs[1]));
        let after = secrets.signature_header("msg_1", 10, b"{}", 1_500);
        let sigs = v1a_part(&after);
        assert_eq!(sigs.len(), 1);
        assert!(new.verifies("msg_1", 10, b"{}", sigs[0]));
        assert!(secrets.public_keys(1_500).unwrap().1.is_empty());
    }

    #[test]
    fn stored_secrets_round_trip_and_older_records_sign_with_hmac() {
        let mut secrets = EndpointSecrets::new(Secret::generate());
        secrets.set_signing(Signing::Both);
        secrets.rotate(Secret::generate(), 1_000, 500);
        let stored = serde_json::to_string(&secrets).unwrap();
        let back: EndpointSecrets = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, secrets);

        let old = EndpointSecrets::new(Secret::generate());
        let old_json = serde_json::json!({"current": old.current.expose(), "previous": []});
        let back: EndpointSecrets = serde_json::from_value(old_json).unwrap();
        assert_eq!(back.signing(), Signing::Hmac);
        assert_eq!(back, old);
        assert!(!format!("{secrets:?}").contains("whsk_"));
    }
}
