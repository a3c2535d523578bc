//! What a delivery request carries: the body in the endpoint's format, the endpoint's extra
//! headers and the Standard Webhooks headers signing it (receiver authentication is added
//! as it is sent, by [`crate::client::Sender::deliver`]). Deliveries and test sends render requests here alone, so
//! a receiver that verifies one verifies the other.

use hmac::{Hmac, Mac};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use rand::RngCore;
use serde_json::value::RawValue;
use sha2::Sha256;

use crate::model::{BodyFormat, Endpoint, Message, Millis};

/// The event a request is about.
#[derive(Debug, Clone)]
pub struct Outbound<'a> {
    /// The message id; `webhook-id`, the same on every retry.
    pub id: String,
    pub event_type: &'a str,
    pub payload: &'a RawValue,
}

impl<'a> From<&'a Message> for Outbound<'a> {
    fn from(m: &'a Message) -> Self {
        Outbound {
            id: m.id.to_string(),
            event_type: &m.event_type,
            payload: &m.payload,
        }
    }
}

/// The headers and body of one request of `event` to `endpoint`, signed at `now`.
pub fn render(event: &Outbound<'_>, endpoint: &Endpoint, now: Millis) -> (HeaderMap, Vec<u8>) {
    let timestamp = now / 1000;
    let body = body(event, endpoint, timestamp);
    let signature = endpoint
        .secrets
        .signature_header(&event.id, timestamp, &body, now);
    let mut headers = HeaderMap::with_capacity(4 + endpoint.headers.len());
    // Checked when saved, and none of them reserved: the headers set below win anyway.
    for (name, value) in &endpoint.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::try_from(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    put("webhook-id", &event.id);
    put("webhook-timestamp", &timestamp.to_string());
    put("webhook-signature", &signature);
    (headers, body)
}

/// The body in the endpoint's format. The payload's text goes in verbatim: the wrappers
/// are put together around it, never parsed and serialized again.
fn body(event: &Outbound<'_>, endpoint: &Endpoint, timestamp: i64) -> Vec<u8> {
    let payload = event.payload.get();
    match endpoint.format {
        BodyFormat::Raw => payload.as_bytes().to_vec(),
        BodyFormat::Envelope => {
            let name = serde_json::to_string(event.event_type).unwrap_or_default();
            format!(r#"{{"event_name":{name},"payload":{payload}}}"#).into_bytes()
        }
        BodyFormat::Mailgun => {
            let timestamp = timestamp.to_string();
            let token = mailgun_token();
            let key = endpoint.secrets.current.expose();
            let signature = mailgun_signature(&key, &timestamp, &token);
            format!(
                r#"{{"signature":{{"timestamp":"{timestamp}","token":"{token}","signature":"{signature}"}},"event-data":{payload}}}"#
            )
            .into_bytes()
        }
    }
}

/// Mailgun's token: 50 random hex characters, new for every request.
fn mailgun_token() -> String {
    let mut bytes = [0u8; 25];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Mailgun's webhook signature: hex HMAC-SHA256 keyed with the signing key's text (for
/// Hookline, the endpoint's `whsec_…` secret as shown to its owner) over timestamp + token.
pub fn mailgun_signature(key: &str, timestamp: &str, token: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{EndpointId, TenantId};
    use crate::model::EndpointStatus;
    use crate::signing::{EndpointSecrets, Secret};

    const PAYLOAD: &str = r#"{"z": 1, "a":  "é\u00e9", "n": [1.50, 2]}"#;

    fn endpoint(format: BodyFormat) -> Endpoint {
        Endpoint {
            id: EndpointId::new(),
            tenant: TenantId::new(),
            url: "https://example.com/hook".into(),
            description: String::new(),
            event_types: None,
            domain: None,
            format,
            secrets: EndpointSecrets::new(Secret::generate()),
            status: EndpointStatus::Active,
            disabled_reason: None,
            disabled_at: None,
            failing_since: None,
            rate_limit: None,
            filter: None,
            created_at: 0,
            updated_at: 0,
            version: 1,
            headers: [("x-tenant".to_string(), "acme".to_string())].into(),
            auth: None,
            ordering: Default::default(),
        }
    }

    fn send(format: BodyFormat) -> (Endpoint, HeaderMap, String) {
        let payload = RawValue::from_string(PAYLOAD.to_string()).unwrap();
        let event = Outbound {
            id: "msg_1".into(),
            event_type: "delivered",
            payload: &payload,
        };
        let ep = endpoint(format);
        let (headers, body) = render(&event, &ep, 1_700_000_000_123);
        (ep, headers, String::from_utf8(body).unwrap())
    }

    #[test]
    fn every_format_is_signed_over_the_exact_body() {
        for format in [BodyFormat::Raw, BodyFormat::Envelope, BodyFormat::Mailgun] {
            let (ep, headers, body) = send(format);
            assert_eq!(headers["webhook-timestamp"], "1700000000");
            assert_eq!(headers["x-tenant"], "acme");
            assert_eq!(
                headers["webhook-signature"],
                ep.secrets
                    .current
                    .sign("msg_1", 1_700_000_000, body.as_bytes())
            );
        }
    }

    #[test]
    fn raw_and_envelope_carry_the_payload_verbatim() {
        assert_eq!(send(BodyFormat::Raw).2, PAYLOAD);
        let (_, _, body) = send(BodyFormat::Envelope);
        assert_eq!(
            body,
            format!(r#"{{"event_name":"delivered","payload":{PAYLOAD}}}"#)
        );
    }

    #[test]
    fn mailgun_bodies_are_signed_as_mailgun_signs() {
        let (ep, _, body) = send(BodyFormat::Mailgun);
        assert!(body.ends_with(&format!(r#","event-data":{PAYLOAD}}}"#)));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let sig = &v["signature"];
        let token = sig["token"].as_str().unwrap();
        assert_eq!(token.len(), 50);
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(sig["timestamp"], "1700000000");
        assert_eq!(
            sig["signature"].as_str().unwrap(),
            mailgun_signature(&ep.secrets.current.expose(), "1700000000", token)
        );
        // A fresh token every time.
        let (_, _, again) = send(BodyFormat::Mailgun);
        let again: serde_json::Value = serde_json::from_str(&again).unwrap();
        assert_ne!(again["signature"]["token"].as_str().unwrap(), token);
    }

    // Computed apart, with Python's hmac: the key is the `whsec_…` text, not its bytes.
    #[test]
    fn the_signature_is_hex_hmac_of_timestamp_and_token_keyed_with_the_secret_text() {
        assert_eq!(
            mailgun_signature(
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "1529006854",
                "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0"
            ),
            "2c8a0c3ee73ccc88a3858a6fb6a7675db260fe37e6e7d0d839784e414da633be"
        );
    }

    #[test]
    fn formats_round_trip_through_their_names() {
        for format in [BodyFormat::Raw, BodyFormat::Envelope, BodyFormat::Mailgun] {
            assert_eq!(BodyFormat::parse(format.as_str()), Some(format));
        }
        assert_eq!(BodyFormat::parse("json"), None);
    }
}
