//! The receiving side: `listen`, a receiver on 127.0.0.1 that prints each delivery and
//! checks its signature, and `verify`, the same check on one captured delivery. Both
//! check Standard Webhooks headers (`v1` with a `whsec_` secret, `v1a` with a `whpk_`
//! public key) and, in Mailgun's body format, the body's signature, with the signing code
//! of `hookline_core`.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::Args;
use hookline_core::signing::{PublicKey, Secret};
use hookline_core::webhook::mailgun_signature;
use owo_colors::OwoColorize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::{output, usage, Global};

/// A request's headers as received, in order.
type Headers = Vec<(String, String)>;

/// What a signature check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Invalid(String),
}

impl Verdict {
    pub fn is_valid(&self) -> bool {
        *self == Verdict::Valid
    }

    fn to_json(&self) -> Value {
        match self {
            Verdict::Valid => json!({"valid": true}),
            Verdict::Invalid(reason) => json!({"valid": false, "reason": reason}),
        }
    }

    fn line(&self, scheme: &str) -> String {
        match self {
            Verdict::Valid => format!("{scheme} signature: {}", "valid".green().bold()),
            Verdict::Invalid(reason) => {
                format!("{scheme} signature: {} ({reason})", "invalid".red().bold())
            }
        }
    }
}

/// What a delivery is checked with: the endpoint's secret (`v1` signatures) or its
/// ed25519 public key (`v1a` signatures).
#[derive(Debug, Clone)]
pub enum VerifyKey {
    Secret(Secret),
    Public(PublicKey),
}

/// The Standard Webhooks check as the specification's libraries make it: the three
/// headers present, the timestamp within `tolerance` of `now`, and one `v1` signature of
/// `id.timestamp.body` equal to the secret's (compared in constant time), or with a public
/// key one `v1a` signature that verifies.
pub fn verify_standard<'a>(
    key: &VerifyKey,
    header: impl Fn(&str) -> Option<&'a str>,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Verdict {
    let (Some(id), Some(timestamp), Some(signatures)) = (
        header("webhook-id").filter(|v| !v.is_empty()),
        header("webhook-timestamp").filter(|v| !v.is_empty()),
        header("webhook-signature").filter(|v| !v.is_empty()),
    ) else {
        return Verdict::Invalid(
            "missing webhook-id, webhook-timestamp or webhook-signature".into(),
        );
    };
    let Some(timestamp) = timestamp
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|t| t.is_finite())
        .map(|t| t.floor() as i64)
    else {
        return Verdict::Invalid("webhook-timestamp is not a number".into());
    };
    let tolerance = tolerance.as_secs() as i64;
    if timestamp < now - tolerance {
        return Verdict::Invalid("timestamp too old".into());
    }
    if timestamp > now + tolerance {
        return Verdict::Invalid("timestamp too new".into());
    }
    let matched = match key {
        VerifyKey::Secret(secret) => {
            let expected = secret.sign(id, timestamp, body);
            let expected = STANDARD
                .decode(expected.strip_prefix("v1,").expect("core signs v1"))
                .expect("core signs in base64");
            signatures.split(' ').any(|candidate| {
                let Some(("v1", sig)) = candidate.split_once(',') else {
                    return false;
                };
                STANDARD
                    .decode(sig)
                    .is_ok_and(|sig| bool::from(sig.ct_eq(&expected)))
            })
        }
        VerifyKey::Public(public) => signatures.split(' ').any(|candidate| {
            matches!(candidate.split_once(','), Some(("v1a", sig)) if public.verifies(id, timestamp, body, sig))
        }),
    };
    match (matched, key) {
        (true, _) => Verdict::Valid,
        (false, VerifyKey::Secret(_)) => Verdict::Invalid("no signature matches the secret".into()),
        (false, VerifyKey::Public(_)) => {
            Verdict::Invalid("no v1a signature verifies with the public key".into())
        }
    }
}

/// Mailgun's body signature: `signature.signature` is the hex HMAC-SHA256 of timestamp
/// and token keyed with the signing key as text. `None` when the body is not in that format.
pub fn verify_mailgun(key: &str, body: &[u8]) -> Option<Verdict> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let block = value.get("signature")?.as_object()?;
    let (Some(ts), Some(token), Some(sig)) = (
        block.get("timestamp").and_then(Value::as_str),
        block.get("token").and_then(Value::as_str),
        block.get("signature").and_then(Value::as_str),
    ) else {
        return Some(Verdict::Invalid("the signature block lacks a field".into()));
    };
    let expected = mailgun_signature(key, ts, token);
    if bool::from(
        expected
            .as_bytes()
            .ct_eq(sig.to_ascii_lowercase().as_bytes()),
    ) {
        Some(Verdict::Valid)
    } else {
        Some(Verdict::Invalid(
            "the body's signature does not match the key".into(),
        ))
    }
}

fn parse_key(text: &str) -> anyhow::Result<VerifyKey> {
    let text = text.trim();
    if text.starts_with("whpk_") {
        return PublicKey::parse(text)
            .map(VerifyKey::Public)
            .ok_or_else(|| {
                usage("--secret is not an ed25519 public key (whpk_ and 32 bytes of base64)")
            });
    }
    Secret::parse(text).map(VerifyKey::Secret).ok_or_else(|| {
        usage(
            "--secret is not a signing secret (whsec_ and 16 to 64 bytes of base64) \
             nor a public key (whpk_...)",
        )
    })
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Both checks of one delivery; the Mailgun one only for a body in that format, checked
/// with a secret (Mailgun signs with HMAC alone).
fn check(
    key: &VerifyKey,
    key_text: &str,
    headers: &Headers,
    body: &[u8],
    tolerance: Duration,
) -> (Verdict, Option<Verdict>) {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let standard = verify_standard(key, header, body, now(), tolerance);
    let mailgun = match key {
        VerifyKey::Secret(_) => verify_mailgun(key_text, body),
        VerifyKey::Public(_) => None,
    };
    (standard, mailgun)
}

#[derive(Debug, Args)]
pub struct Listen {
    /// Port on 127.0.0.1 (0 picks a free one, printed at start).
    #[arg(long, default_value_t = 9000)]
    pub port: u16,
    /// The endpoint's signing secret (`whsec_...`), or its public key (`whpk_...`) for
    /// `v1a` signatures, to check each delivery's signature.
    #[arg(long, visible_alias = "public-key")]
    pub secret: Option<String>,
    /// Status to answer each delivery with.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(200..600))]
    pub status: u16,
    /// Largest age (or lead) of a timestamp that verifies.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub tolerance: Duration,
}

struct Receiver {
    secret: Option<(VerifyKey, String)>,
    status: StatusCode,
    json: bool,
    tolerance: Duration,
}

pub async fn listen(cmd: Listen, global: &Global) -> anyhow::Result<()> {
    let secret = match &cmd.secret {
        Some(s) => Some((parse_key(s)?, s.trim().to_string())),
        None => None,
    };
    let receiver = Arc::new(Receiver {
        secret,
        status: StatusCode::from_u16(cmd.status).expect("the range is valid"),
        json: global.json,
        tolerance: cmd.tolerance,
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", cmd.port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", cmd.port))?;
    let url = format!("http://{}", listener.local_addr()?);
    if global.json {
        anstream::println!("{}", json!({"kind": "listening", "url": url}));
    } else {
        anstream::println!("Listening on {} (Ctrl-C stops)", url.bold());
        if receiver.secret.is_none() {
            anstream::println!("{}", "No --secret: signatures are not checked".dimmed());
        }
    }
    let app = axum::Router::new().fallback(receive).with_state(receiver);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let pairs: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let verdicts = r
        .secret
        .as_ref()
        .map(|(secret, text)| check(secret, text, &pairs, &body, r.tolerance));
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    if r.json {
        let (standard, mailgun) = match &verdicts {
            Some((s, m)) => (s.to_json(), m.as_ref().map(Verdict::to_json)),
            None => (Value::Null, None),
        };
        let line = json!({
            "kind": "delivery",
            "method": method.as_str(),
            "path": uri.to_string(),
            "headers": pairs.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
            "body": parsed.clone().unwrap_or_else(|| Value::String(String::from_utf8_lossy(&body).into_owned())),
            "standard_webhooks": standard,
            "mailgun": mailgun,
        });
        anstream::println!("{line}");
    } else {
        let mut out = format!(
            "{} {} {}\n",
            "──".dimmed(),
            format!("{method} {uri}").bold(),
            chrono::Utc::now().format("%H:%M:%S").dimmed()
        );
        for (n, v) in &pairs {
            out.push_str(&format!("{}: {v}\n", n.cyan()));
        }
        out.push('\n');
        match &parsed {
            Some(v) => out.push_str(&serde_json::to_string_pretty(v).expect("JSON serializes")),
            None => out.push_str(&String::from_utf8_lossy(&body)),
        }
        out.push('\n');
        if let Some((standard, mailgun)) = &verdicts {
            out.push_str(&standard.line("Standard Webhooks"));
            out.push('\n');
            if let Some(m) = mailgun {
                out.push_str(&m.line("Mailgun"));
                out.push('\n');
            }
        }
        anstream::println!("{out}");
    }
    r.status
}

#[derive(Debug, Args)]
pub struct Verify {
    /// The endpoint's signing secret (`whsec_...`), or its public key (`whpk_...`) to check
    /// `v1a` signatures.
    #[arg(long, visible_alias = "public-key")]
    pub secret: String,
    /// A request header, `name: value` (repeat for each).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// The body, from this file (else stdin).
    #[arg(long, conflicts_with = "request")]
    pub body: Option<PathBuf>,
    /// A captured HTTP request (request line, headers, blank line, body); `-` reads stdin.
    #[arg(long)]
    pub request: Option<PathBuf>,
    /// Largest age (or lead) of a timestamp that verifies.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub tolerance: Duration,
}

fn read_input(path: Option<&PathBuf>) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    match path {
        Some(p) if p.as_os_str() != "-" => {
            buf =
                std::fs::read(p).map_err(|e| usage(format!("cannot read {}: {e}", p.display())))?
        }
        _ => {
            std::io::stdin().read_to_end(&mut buf)?;
        }
    }
    Ok(buf)
}

fn header_pair(text: &str) -> anyhow::Result<(String, String)> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| usage(format!("header {text:?} is not `name: value`")))?;
    Ok((name.trim().to_string(), value.trim().to_string()))
}

/// A captured request: its headers and its body (everything after the first blank line).
fn parse_request(raw: &[u8]) -> anyhow::Result<(Headers, Vec<u8>)> {
    let (head, body) = match find(raw, b"\r\n\r\n") {
        Some(i) => (&raw[..i], &raw[i + 4..]),
        None => match find(raw, b"\n\n") {
            Some(i) => (&raw[..i], &raw[i + 2..]),
            None => return Err(usage("the request has no blank line before its body")),
        },
    };
    let head =
        std::str::from_utf8(head).map_err(|_| usage("the request's headers are not text"))?;
    let mut headers = Vec::new();
    for line in head.lines().skip(1) {
        if !line.trim().is_empty() {
            headers.push(header_pair(line)?);
        }
    }
    Ok((headers, body.to_vec()))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn verify(cmd: Verify, global: &Global) -> anyhow::Result<()> {
    let secret = parse_key(&cmd.secret)?;
    let (mut headers, body) = match &cmd.request {
        Some(path) => parse_request(&read_input(Some(path))?)?,
        None => (Vec::new(), read_input(cmd.body.as_ref())?),
    };
    for h in &cmd.headers {
        headers.push(header_pair(h)?);
    }
    let (standard, mailgun) = check(&secret, cmd.secret.trim(), &headers, &body, cmd.tolerance);
    // Standard Webhooks headers are checked when present; a Mailgun body alone may stand.
    let has_standard = headers
        .iter()
        .any(|(n, _)| n.to_ascii_lowercase().starts_with("webhook-"));
    let valid = match (&mailgun, has_standard) {
        (Some(m), false) => m.is_valid(),
        (Some(m), true) => m.is_valid() && standard.is_valid(),
        (None, _) => standard.is_valid(),
    };
    if global.json {
        output::json(&json!({
            "valid": valid,
            "standard_webhooks": (has_standard || mailgun.is_none()).then(|| standard.to_json()),
            "mailgun": mailgun.as_ref().map(Verdict::to_json),
        }));
    } else {
        if has_standard || mailgun.is_none() {
            anstream::println!("{}", standard.line("Standard Webhooks"));
        }
        if let Some(m) = &mailgun {
            anstream::println!("{}", m.line("Mailgun"));
        }
    }
    if valid {
        Ok(())
    } else {
        anyhow::bail!("the signature does not verify")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    /// The specification's published example verifies, and each part of it matters.
    #[test]
    fn the_reference_example_verifies_and_any_change_does_not() {
        let secret = VerifyKey::Secret(Secret::parse(SECRET).unwrap());
        let body = br#"{"test": 2432232314}"#;
        let at = 1614265330;
        let headers = |sig: &'static str| {
            move |name: &str| match name {
                "webhook-id" => Some("msg_p5jXN8AQM9LWM0D4loKWxJek"),
                "webhook-timestamp" => Some("1614265330"),
                "webhook-signature" => Some(sig),
                _ => None,
            }
        };
        let good = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        let tol = Duration::from_secs(300);
        assert_eq!(
            verify_standard(&secret, headers(good), body, at, tol),
            Verdict::Valid
        );
        assert_eq!(
            verify_standard(
                &secret,
                headers("v1,bm9wZQ== v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
                body,
                at,
                tol
            ),
            Verdict::Valid
        );
        assert!(!verify_standard(&secret, headers(good), b"{}", at, tol).is_valid());
        assert!(!verify_standard(
            &secret,
            headers("v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            body,
            at,
            tol
        )
        .is_valid());
        assert_eq!(
            verify_standard(&secret, headers(good), body, at + 301, tol),
            Verdict::Invalid("timestamp too old".into())
        );
        assert_eq!(
            verify_standard(&secret, headers(good), body, at - 301, tol),
            Verdict::Invalid("timestamp too new".into())
        );
    }

    #[test]
    fn a_mailgun_body_verifies_with_its_key_as_text() {
        let sig = mailgun_signature(SECRET, "1700000000", "abc");
        let body = format!(
            r#"{{"signature":{{"timestamp":"1700000000","token":"abc","signature":"{sig}"}},"event-data":{{}}}}"#
        );
        assert_eq!(
            verify_mailgun(SECRET, body.as_bytes()),
            Some(Verdict::Valid)
        );
        assert!(!verify_mailgun("whsec_other", body.as_bytes())
            .unwrap()
            .is_valid());
        assert_eq!(verify_mailgun(SECRET, br#"{"a":1}"#), None);
    }

    #[test]
    fn a_captured_request_splits_into_headers_and_body() {
        let raw = b"POST /hook HTTP/1.1\r\nwebhook-id: msg_1\r\nContent-Type: application/json\r\n\r\n{\"a\":1}";
        let (headers, body) = parse_request(raw).unwrap();
        assert_eq!(headers[0], ("webhook-id".to_string(), "msg_1".to_string()));
        assert_eq!(body, b"{\"a\":1}");
    }

    #[test]
    fn a_public_key_verifies_v1a_signatures_only() {
        let private = hookline_core::signing::PrivateKey::generate();
        let key = parse_key(&private.public_key().expose()).unwrap();
        let body = br#"{"a":1}"#;
        let at = 1700000000;
        let v1a = private.sign("msg_1", at, body);
        let hmac = Secret::parse(SECRET).unwrap().sign("msg_1", at, body);
        let tol = Duration::from_secs(300);
        fn headers<'a>(sig: &'a str) -> impl Fn(&str) -> Option<&'a str> {
            move |name| match name {
                "webhook-id" => Some("msg_1"),
                "webhook-timestamp" => Some("1700000000"),
                "webhook-signature" => Some(sig),
                _ => None,
            }
        }
        let check = |sig: &str, body: &[u8]| verify_standard(&key, headers(sig), body, at, tol);
        assert_eq!(check(&format!("{hmac} {v1a}"), body), Verdict::Valid);
        assert_eq!(check(&v1a, body), Verdict::Valid);
        assert!(!check(&v1a, b"{}").is_valid());
        assert!(!check(&hmac, body).is_valid());
        let other = hookline_core::signing::PrivateKey::generate().sign("msg_1", at, body);
        assert!(!check(&other, body).is_valid());
        assert!(parse_key("whpk_c2hvcnQ=").is_err());
    }
}
