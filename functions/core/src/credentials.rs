//! What an endpoint's requests carry beyond the webhook itself: its extra headers (checked
//! here) and its receiver authentication, whose credentials are sealed with the deployment's
//! credentials key before they are stored and opened only to send a request.
//!
//! Sealing is XChaCha20-Poly1305 with a fresh random 24-byte nonce per sealing and the
//! endpoint's id as associated data, so a sealed value copied onto another endpoint does not
//! open. What a view may show of the credentials (their kind, a user name, a token URL and
//! client id) is kept beside them as an [`AuthSummary`]; the secrets never leave the seal
//! but for a request, and no `Debug` here prints them.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::ids::EndpointId;
use crate::urlpolicy::UrlPolicy;

/// Most extra headers an endpoint may have.
pub const MAX_HEADERS: usize = 20;
/// Longest header name, in bytes.
pub const MAX_HEADER_NAME: usize = 128;
/// Longest header value, in bytes.
pub const MAX_HEADER_VALUE: usize = 2048;
/// Most bytes of all names and values together.
pub const MAX_HEADERS_TOTAL: usize = 8 * 1024;
/// Longest user name, password, token, client id, secret or scope, in bytes.
pub const MAX_CREDENTIAL: usize = 4096;

/// Headers the sender sets itself, or that describe the connection rather than the
/// message: an endpoint may not set them.
const RESERVED: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "host",
    "user-agent",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];
/// Prefixes of reserved headers: the Standard Webhooks headers (`webhook-id`,
/// `webhook-timestamp`, `webhook-signature` and any later one), Hookline's own
/// (`hookline-test` on test sends) and proxy headers.
const RESERVED_PREFIXES: &[&str] = &["webhook-", "hookline-", "proxy-"];

/// An endpoint's extra headers: lower-case names to values.
pub type CustomHeaders = BTreeMap<String, String>;

/// Checks an endpoint's extra headers: an object of names (HTTP tokens, not reserved, not
/// repeated in any case) to header values, within the bounds above. `auth_set`: the
/// endpoint authenticates, so `authorization` is its to set. Absent or `null`: none.
pub fn headers(value: Option<&Value>, auth_set: bool) -> Result<CustomHeaders> {
    let bad = |message: String| Error::unprocessable("invalid_headers", message);
    let map = match value {
        None | Some(Value::Null) => return Ok(CustomHeaders::new()),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(bad("headers: expected an object of names to values".into())),
    };
    if map.len() > MAX_HEADERS {
        return Err(bad(format!("headers: at most {MAX_HEADERS}")));
    }
    let mut out = CustomHeaders::new();
    let mut total = 0;
    for (name, value) in map {
        let lower = name.to_ascii_lowercase();
        if name.is_empty() || name.len() > MAX_HEADER_NAME {
            return Err(bad(format!(
                "headers.{name}: a name of 1 to {MAX_HEADER_NAME} bytes"
            )));
        }
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(bad(format!("headers.{name}: not an HTTP header name")));
        }
        if reserved(&lower, auth_set) {
            return Err(bad(format!(
                "headers.{name}: reserved, Hookline sets it{}",
                if lower == "authorization" {
                    " from the endpoint's auth"
                } else {
                    ""
                }
            )));
        }
        let Value::String(value) = value else {
            return Err(bad(format!("headers.{name}: expected a string")));
        };
        if value.len() > MAX_HEADER_VALUE || http::HeaderValue::from_str(value).is_err() {
            return Err(bad(format!(
                "headers.{name}: a header value of at most {MAX_HEADER_VALUE} bytes of visible ASCII, spaces and tabs"
            )));
        }
        total += name.len() + value.len();
        if out.insert(lower, value.clone()).is_some() {
            return Err(bad(format!("headers.{name}: given twice")));
        }
    }
    if total > MAX_HEADERS_TOTAL {
        return Err(bad(format!(
            "headers: at most {MAX_HEADERS_TOTAL} bytes of names and values"
        )));
    }
    Ok(out)
}

/// Whether an endpoint may not set header `name` (lower case).
pub fn reserved(name: &str, auth_set: bool) -> bool {
    RESERVED.contains(&name)
        || RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
        || (auth_set && name == "authorization")
}

/// How requests to a receiver authenticate. Its `Debug` shows the kind only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReceiverAuth {
    /// `Authorization: Basic base64(username:password)`.
    Basic { username: String, password: String },
    /// `Authorization: Bearer <token>`.
    Bearer { token: String },
    /// `Authorization: Bearer <access token>`, the token fetched from `token_url` with the
    /// client credentials grant (RFC 6749 §4.4).
    #[serde(rename = "oauth2_client_credentials")]
    OAuth2 {
        token_url: String,
        client_id: String,
        client_secret: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
    },
}

impl fmt::Debug for ReceiverAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReceiverAuth({:?}, <redacted>)", self.summary())
    }
}

impl ReceiverAuth {
    /// Parses an `auth` object; the error names the field at fault. A token URL is held
    /// to the deployment's URL policy, as delivery URLs are.
    pub fn parse(value: &Value, policy: &UrlPolicy) -> Result<Self> {
        let bad = |message: String| Error::unprocessable("invalid_auth", message);
        let Value::Object(map) = value else {
            return Err(bad("auth: expected an object with a `type`".into()));
        };
        let text = |field: &str, required: bool| -> Result<Option<String>> {
            match map.get(field) {
                None | Some(Value::Null) if !required => Ok(None),
                None | Some(Value::Null) => Err(bad(format!("auth.{field}: required"))),
                Some(Value::String(s))
                    if !s.is_empty()
                        && s.len() <= MAX_CREDENTIAL
                        && !s.chars().any(char::is_control) =>
                {
                    Ok(Some(s.clone()))
                }
                Some(_) => Err(bad(format!(
                    "auth.{field}: a string of 1 to {MAX_CREDENTIAL} bytes without control characters"
                ))),
            }
        };
        let allowed: &[&str] = match map.get("type").and_then(Value::as_str) {
            Some("basic") => &["type", "username", "password"],
            Some("bearer") => &["type", "token"],
            Some("oauth2_client_credentials") => {
                &["type", "token_url", "client_id", "client_secret", "scope"]
            }
            _ => {
                return Err(bad(
                    "auth.type: one of basic, bearer, oauth2_client_credentials".into(),
                ))
            }
        };
        if let Some(extra) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(bad(format!("auth.{extra}: unknown field")));
        }
        let need = |field: &str| text(field, true).map(Option::unwrap_or_default);
        Ok(match map["type"].as_str() {
            Some("basic") => {
                let username = need("username")?;
                if username.contains(':') {
                    return Err(bad("auth.username: may not contain `:`".into()));
                }
                ReceiverAuth::Basic {
                    username,
                    password: need("password")?,
                }
            }
            Some("bearer") => {
                let token = need("token")?;
                if http::HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
                    return Err(bad("auth.token: visible ASCII only".into()));
                }
                ReceiverAuth::Bearer { token }
            }
            _ => {
                let token_url = policy
                    .check_url(need("token_url")?.trim())
                    .map_err(|e| bad(format!("auth.token_url: {e}")))?
                    .to_string();
                ReceiverAuth::OAuth2 {
                    token_url,
                    client_id: need("client_id")?,
                    client_secret: need("client_secret")?,
                    scope: text("scope", false)?,
                }
            }
        })
    }

    /// What may be shown of these credentials.
    pub fn summary(&self) -> AuthSummary {
        match self {
            ReceiverAuth::Basic { username, .. } => AuthSummary::Basic {
                username: username.clone(),
            },
            ReceiverAuth::Bearer { .. } => AuthSummary::Bearer,
            ReceiverAuth::OAuth2 {
                token_url,
                client_id,
                scope,
                ..
            } => AuthSummary::OAuth2 {
                token_url: token_url.clone(),
                client_id: client_id.clone(),
                scope: scope.clone(),
            },
        }
    }
}

/// The readable part of an endpoint's credentials: no password, token or client secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuthSummary {
    Basic {
        username: String,
    },
    Bearer,
    #[serde(rename = "oauth2_client_credentials")]
    OAuth2 {
        token_url: String,
        client_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
    },
}

/// An endpoint's credentials as stored: the summary, readable, and the credentials sealed.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedAuth {
    pub summary: AuthSummary,
    /// Version byte, nonce, then ciphertext and tag.
    pub sealed: Vec<u8>,
}

impl fmt::Debug for SealedAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedAuth")
            .field("summary", &self.summary)
            .field("sealed", &format_args!("<{} bytes>", self.sealed.len()))
            .finish()
    }
}

const SEAL_VERSION: u8 = 1;
const NONCE_BYTES: usize = 24;

/// The deployment's key sealing receiver credentials (`HOOKLINE_CREDENTIALS_KEY`: 32 bytes,
/// base64). Its `Debug` does not print it.
#[derive(Clone)]
pub struct CredentialsKey(chacha20poly1305::Key);

impl fmt::Debug for CredentialsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialsKey(<redacted>)")
    }
}

impl PartialEq for CredentialsKey {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for CredentialsKey {}

impl CredentialsKey {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        CredentialsKey(bytes.into())
    }

    /// 32 bytes in standard base64.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| "expected 32 bytes in base64".to_string())?;
        if bytes.len() != 32 {
            return Err(format!("expected 32 bytes in base64, got {}", bytes.len()));
        }
        Ok(CredentialsKey(*chacha20poly1305::Key::from_slice(&bytes)))
    }

    /// The key in the form [`CredentialsKey::parse`] reads.
    pub fn expose(&self) -> String {
        STANDARD.encode(self.0.as_slice())
    }

    /// Seals `auth` for `endpoint` under a fresh nonce.
    pub fn seal(&self, auth: &ReceiverAuth, endpoint: EndpointId) -> Result<SealedAuth> {
        let plain = serde_json::to_vec(auth).map_err(|e| Error::backend("seal credentials", e))?;
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let aad = endpoint.to_string();
        let cipher = XChaCha20Poly1305::new(&self.0)
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| Error::backend("seal credentials", SealError))?;
        let mut sealed = Vec::with_capacity(1 + NONCE_BYTES + cipher.len());
        sealed.push(SEAL_VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&cipher);
        Ok(SealedAuth {
            summary: auth.summary(),
            sealed,
        })
    }

    /// Opens credentials sealed for `endpoint`; fails for another key or endpoint, or
    /// any change to the sealed bytes.
    pub fn open(
        &self,
        sealed: &SealedAuth,
        endpoint: EndpointId,
    ) -> std::result::Result<ReceiverAuth, SealError> {
        let bytes = &sealed.sealed;
        if bytes.len() < 1 + NONCE_BYTES || bytes[0] != SEAL_VERSION {
            return Err(SealError);
        }
        let (nonce, cipher) = bytes[1..].split_at(NONCE_BYTES);
        let aad = endpoint.to_string();
        let plain = XChaCha20Poly1305::new(&self.0)
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: cipher,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SealError)?;
        serde_json::from_slice(&plain).map_err(|_| SealError)
    }
}

/// Sealed credentials that do not open with this key for this endpoint (or a seal that
/// failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the credentials do not open with the configured credentials key")]
pub struct SealError;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> UrlPolicy {
        UrlPolicy::default()
    }

    fn refusal(result: Result<impl fmt::Debug>) -> (&'static str, String) {
        match result {
            Err(Error::Unprocessable { code, message }) => (code, message),
            other => panic!("expected a 422, got {other:?}"),
        }
    }

    #[test]
    fn headers_are_checked_and_lower_cased() {
        let h = headers(
            Some(&json!({"X-Tenant": "acme", "x-trace": "a b\tc"})),
            false,
        )
        .unwrap();
        assert_eq!(h["x-tenant"], "acme");
        assert_eq!(h["x-trace"], "a b\tc");
        assert!(headers(None, false).unwrap().is_empty());
        assert!(headers(Some(&Value::Null), true).unwrap().is_empty());
        // Allowed without auth, reserved with it.
        assert!(headers(Some(&json!({"Authorization": "Token t"})), false).is_ok());
        let (code, message) = refusal(headers(Some(&json!({"Authorization": "x"})), true));
        assert_eq!(code, "invalid_headers");
        assert!(
            message.starts_with("headers.Authorization: reserved"),
            "{message}"
        );
    }

    #[test]
    fn reserved_and_malformed_headers_are_refused_by_name() {
        for name in [
            "webhook-id",
            "Webhook-Signature",
            "webhook-timestamp",
            "Content-Type",
            "content-length",
            "Host",
            "connection",
            "Keep-Alive",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "user-agent",
        ] {
            let (code, message) = refusal(headers(Some(&json!({ name: "v" })), false));
            assert_eq!(code, "invalid_headers");
            assert!(
                message.starts_with(&format!("headers.{name}: reserved")),
                "{message}"
            );
        }
        for (body, field) in [
            (json!({"bad name": "v"}), "headers.bad name"),
            (json!({"x-a": "line\nbreak"}), "headers.x-a"),
            (json!({"x-a": 1}), "headers.x-a"),
            (json!({"X-A": "1", "x-a": "2"}), "headers.x-a"),
            (json!({"": "v"}), "headers."),
            (json!(["x"]), "headers"),
        ] {
            let (_, message) = refusal(headers(Some(&body), false));
            assert!(message.starts_with(field), "{body}: {message}");
        }
        let many: serde_json::Map<String, Value> = (0..=MAX_HEADERS)
            .map(|i| (format!("x-{i}"), json!("v")))
            .collect();
        assert!(headers(Some(&Value::Object(many)), false).is_err());
        let long = "v".repeat(MAX_HEADER_VALUE);
        let big: serde_json::Map<String, Value> =
            (0..5).map(|i| (format!("x-{i}"), json!(long))).collect();
        let (_, message) = refusal(headers(Some(&Value::Object(big)), false));
        assert!(message.starts_with("headers: at most"), "{message}");
    }

    #[test]
    fn auth_kinds_parse_and_faults_name_the_field() {
        let basic = ReceiverAuth::parse(
            &json!({"type": "basic", "username": "u", "password": "p"}),
            &policy(),
        )
        .unwrap();
        assert_eq!(
            basic.summary(),
            AuthSummary::Basic {
                username: "u".into()
            }
        );
        let oauth = ReceiverAuth::parse(
            &json!({"type": "oauth2_client_credentials", "token_url": "https://id.example.com/token",
                    "client_id": "c", "client_secret": "s"}),
            &policy(),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(oauth.summary()).unwrap(),
            json!({"type": "oauth2_client_credentials", "token_url": "https://id.example.com/token", "client_id": "c"})
        );
        for (body, start) in [
            (json!("basic"), "auth:"),
            (json!({"type": "digest"}), "auth.type"),
            (json!({"type": "basic", "username": "u"}), "auth.password"),
            (
                json!({"type": "basic", "username": "u:v", "password": "p"}),
                "auth.username",
            ),
            (json!({"type": "bearer", "token": ""}), "auth.token"),
            (json!({"type": "bearer", "token": 5}), "auth.token"),
            (
                json!({"type": "bearer", "token": "t", "password": "p"}),
                "auth.password",
            ),
            (
                json!({"type": "oauth2_client_credentials", "token_url": "http://169.254.169.254/t",
                       "client_id": "c", "client_secret": "s"}),
                "auth.token_url",
            ),
            (
                json!({"type": "oauth2_client_credentials", "token_url": "https://id.example.com/t",
                       "client_id": "c"}),
                "auth.client_secret",
            ),
        ] {
            let (code, message) = refusal(ReceiverAuth::parse(&body, &policy()));
            assert_eq!(code, "invalid_auth");
            assert!(message.starts_with(start), "{body}: {message}");
        }
    }

    #[test]
    fn debug_never_prints_a_secret() {
        let auth = ReceiverAuth::OAuth2 {
            token_url: "https://id.example.com/token".into(),
            client_id: "client".into(),
            client_secret: "very-secret".into(),
            scope: None,
        };
        let key = CredentialsKey::generate();
        let sealed = key.seal(&auth, EndpointId::new()).unwrap();
        for text in [
            format!("{auth:?}"),
            format!("{sealed:?}"),
            format!("{key:?}"),
        ] {
            assert!(!text.contains("very-secret"), "{text}");
            assert!(!text.contains(&key.expose()), "{text}");
        }
        let basic = ReceiverAuth::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{basic:?}").contains("hunter2"));
    }

    #[test]
    fn sealed_credentials_open_only_with_their_key_and_endpoint() {
        let auth = ReceiverAuth::Bearer {
            token: "tok".into(),
        };
        let (key, id) = (CredentialsKey::generate(), EndpointId::new());
        let a = key.seal(&auth, id).unwrap();
        let b = key.seal(&auth, id).unwrap();
        assert_ne!(a.sealed, b.sealed, "a fresh nonce per sealing");
        assert!(!String::from_utf8_lossy(&a.sealed).contains("tok\""));
        assert_eq!(key.open(&a, id).unwrap(), auth);
        assert_eq!(key.open(&a, EndpointId::new()), Err(SealError));
        assert_eq!(CredentialsKey::generate().open(&a, id), Err(SealError));
        let mut flipped = a.clone();
        *flipped.sealed.last_mut().unwrap() ^= 1;
        assert_eq!(key.open(&flipped, id), Err(SealError));
        assert_eq!(CredentialsKey::parse(&key.expose()).unwrap(), key);
        assert!(CredentialsKey::parse("c2hvcnQ=").is_err());
    }
}
