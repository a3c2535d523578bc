//! OAuth2 client credentials (RFC 6749 §4.4) for receivers that want a bearer token: the
//! token is fetched from the endpoint's token URL (under the deliveries' URL policy, through
//! the same client) and cached per endpoint until shortly before it expires, or until the
//! receiver refuses it with a 401.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::client::Sender;
use crate::ids::EndpointId;

/// How long a token without `expires_in` is used (a 401 ends it sooner).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// A token is fetched again this long before it expires (at most half its lifetime).
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// Most of a token endpoint's answer read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// Endpoints whose tokens are kept at most; past this the cache starts afresh.
const MAX_CACHED: usize = 10_000;

/// The client credentials of one endpoint, as opened for a request.
pub struct ClientCredentials<'a> {
    pub token_url: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub scope: Option<&'a str>,
}

/// An access token, kept with what it was fetched with.
struct Cached {
    /// Hash of the sealed credentials it was fetched with: changed credentials fetch anew.
    credentials: [u8; 32],
    token: String,
    until: Instant,
}

/// Access tokens by endpoint. One fetch at a time per endpoint: the deliveries that find no
/// token wait for the one fetching it, so a fan-out fetches once.
#[derive(Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<EndpointId, Arc<tokio::sync::Mutex<Option<Cached>>>>>,
}

/// Why no token was had: the kind of failure (`blocked` by the URL policy, or `auth`) and
/// a description without the answer's body, which may echo credentials.
pub type TokenError = (&'static str, String);

impl TokenCache {
    fn slot(&self, endpoint: EndpointId) -> Arc<tokio::sync::Mutex<Option<Cached>>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.len() >= MAX_CACHED && !slots.contains_key(&endpoint) {
            slots.clear();
        }
        slots.entry(endpoint).or_default().clone()
    }

    /// The endpoint's token: the cached one if it is still good and was fetched with these
    /// credentials, else a new one from the token URL. `stale`: a token the receiver
    /// refused, not to be given again (unless another request fetched a new one already).
    pub async fn token(
        &self,
        sender: &Sender,
        endpoint: EndpointId,
        sealed: &[u8],
        creds: &ClientCredentials<'_>,
        stale: Option<&str>,
    ) -> Result<String, TokenError> {
        let fingerprint: [u8; 32] = Sha256::digest(sealed).into();
        let slot = self.slot(endpoint);
        let mut held = slot.lock().await;
        if let Some(c) = held.as_ref() {
            if c.credentials == fingerprint
                && c.until > Instant::now()
                && Some(c.token.as_str()) != stale
            {
                return Ok(c.token.clone());
            }
        }
        *held = None;
        let (token, lifetime) = fetch(sender, creds).await?;
        *held = Some(Cached {
            credentials: fingerprint,
            token: token.clone(),
            until: Instant::now() + lifetime,
        });
        Ok(token)
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Fetches a token: `grant_type=client_credentials` (and the scope) as a form, the client
/// authenticated with HTTP Basic (RFC 6749 §2.3.1, the method servers must support).
async fn fetch(
    sender: &Sender,
    creds: &ClientCredentials<'_>,
) -> Result<(String, Duration), TokenError> {
    let form = {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        if let Some(scope) = creds.scope {
            form.append_pair("scope", scope);
        }
        form.finish()
    };
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let basic = STANDARD.encode(format!(
        "{}:{}",
        encode(creds.client_id),
        encode(creds.client_secret)
    ));
    let mut headers = HeaderMap::with_capacity(3);
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    let mut authorization = HeaderValue::try_from(format!("Basic {basic}")).map_err(|_| {
        (
            "auth",
            "client credentials unusable in a header".to_string(),
        )
    })?;
    authorization.set_sensitive(true);
    headers.insert(AUTHORIZATION, authorization);
    let answer = sender
        .exchange(
            creds.token_url,
            headers,
            form.into_bytes(),
            MAX_TOKEN_RESPONSE,
        )
        .await
        .map_err(|(kind, detail)| match kind {
            "blocked" => ("blocked", format!("token URL: {detail}")),
            _ => ("auth", format!("token URL unreachable ({kind}): {detail}")),
        })?;
    if !(200..300).contains(&answer.status) {
        return Err(("auth", format!("token URL answered {}", answer.status)));
    }
    let parsed: TokenAnswer = serde_json::from_slice(&answer.body).map_err(|_| {
        (
            "auth",
            "token URL answered without a JSON access_token".to_string(),
        )
    })?;
    if parsed.access_token.is_empty() || HeaderValue::from_str(&parsed.access_token).is_err() {
        return Err(("auth", "token URL answered an unusable access_token".into()));
    }
    Ok((parsed.access_token, lifetime(parsed.expires_in)))
}

/// How long a token is used: its lifetime less the margin, but at least half of it.
fn lifetime(expires_in: Option<u64>) -> Duration {
    match expires_in {
        None => DEFAULT_TOKEN_LIFETIME,
        Some(secs) => {
            let full = Duration::from_secs(secs);
            full.saturating_sub(EXPIRY_MARGIN).max(full / 2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_kept_for_their_lifetime_less_a_margin() {
        assert_eq!(lifetime(Some(3600)), Duration::from_secs(3570));
        assert_eq!(lifetime(Some(40)), Duration::from_secs(20));
        assert_eq!(lifetime(Some(0)), Duration::ZERO);
        assert_eq!(lifetime(None), DEFAULT_TOKEN_LIFETIME);
    }
}
