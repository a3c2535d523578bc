//! Ed25519 (`v1a`) signatures: checked by the `cryptography` Python package with the public
//! key the API gives, both keys signing through a rotation's grace period, the private key
//! in no answer, and another tenant's endpoint a 404.

use std::process::Command;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hookline_core::signing::PublicKey;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::spawn_app;
use crate::receiver::{Received, Receiver};

fn headers(r: &Received) -> Value {
    json!({
        "webhook-id": r.header("webhook-id"),
        "webhook-timestamp": r.header("webhook-timestamp"),
        "webhook-signature": r.header("webhook-signature"),
    })
}

fn body(r: &Received) -> String {
    String::from_utf8(r.body.to_vec()).unwrap()
}

/// The `v1a` signatures of a delivery that verify with `key`, by Hookline's own code.
fn verifying(r: &Received, key: &str) -> usize {
    let key = PublicKey::parse(key).expect("a whpk_ key");
    let ts: i64 = r.header("webhook-timestamp").parse().unwrap();
    r.header("webhook-signature")
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1a,"))
        .filter(|sig| key.verifies(r.header("webhook-id"), ts, &r.body, sig))
        .count()
}

/// The `whsk_` private keys (their base64) in the local data file of `dir` and its
/// write-ahead log: what no answer or log line may contain.
pub fn stored_private_keys(dir: &std::path::Path) -> Vec<String> {
    let mut keys = Vec::new();
    for name in ["hookline.db", "hookline.db-wal"] {
        let Ok(bytes) = std::fs::read(dir.join(name)) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        for (at, _) in text.match_indices("whsk_") {
            let b64: String = text[at + 5..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
                .collect();
            if STANDARD.decode(&b64).is_ok_and(|b| b.len() == 32) && !keys.contains(&b64) {
                keys.push(b64);
            }
        }
    }
    keys
}

#[tokio::test]
async fn a_v1a_signature_verifies_with_cryptography_and_the_public_key_from_the_api() {
    let python = std::env::var("HOOKLINE_TEST_PYTHON").expect(
        "HOOKLINE_TEST_PYTHON is unset: run the test command from README.md, which installs \
         tests/requirements.txt and sets it",
    );
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let receiver = Receiver::start(200).await;
    let (status, created) = app
        .post(
            "/v1/endpoints",
            &t.key,
            json!({"url": receiver.url("/"), "signing": "both"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["signing"], "both");
    let ep = created["id"].as_str().unwrap();
    let (status, keys) = app
        .get(&format!("/v1/endpoints/{ep}/public-key"), &t.key)
        .await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    let public = keys["key"].as_str().unwrap().to_string();
    assert!(public.starts_with("whpk_"), "{keys}");
    assert_eq!(keys["previous"], json!([]));
    // A key of another endpoint, which must not verify this one's deliveries.
    let (_, other) = app
        .post(
            "/v1/endpoints",
            &t.key,
            json!({"url": receiver.url("/other"), "signing": "ed25519", "event_types": ["opened"]}),
        )
        .await;
    let (_, other_keys) = app
        .get(
            &format!("/v1/endpoints/{}/public-key", other["id"].as_str().unwrap()),
            &t.key,
        )
        .await;
    let other_public = other_keys["key"].as_str().unwrap();
    assert_ne!(other_public, public);

    app.publish(
        &t.key,
        json!({"type": "delivered", "payload": {"recipient": "bob@example.com"}}),
    )
    .await;
    let got = receiver.wait_for(1, Duration::from_secs(15)).await;
    let signature = got[0].header("webhook-signature");
    let parts: Vec<&str> = signature.split(' ').collect();
    assert_eq!(parts.len(), 2, "{signature}");
    assert!(
        parts[0].starts_with("v1,") && parts[1].starts_with("v1a,"),
        "{signature}"
    );

    let cases = json!([
        {"public_key": public, "headers": headers(&got[0]), "body": body(&got[0]), "valid": true},
        {"public_key": public, "headers": headers(&got[0]), "body": "{\"tampered\":1}", "valid": false},
        {"public_key": other_public, "headers": headers(&got[0]), "body": body(&got[0]), "valid": false},
    ]);
    let file = app.dir.path().join("ed25519-cases.json");
    std::fs::write(&file, cases.to_string()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/verify_ed25519.py");
    let out = Command::new(python)
        .arg(script)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verification failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 cases checked, 0 failed"));
    app.stop().await;
}

#[tokio::test]
async fn rotation_signs_with_the_old_and_the_new_key_for_the_grace_period() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let receiver = Receiver::start(200).await;
    let ep = app
        .create_endpoint(
            &t.key,
            json!({"url": receiver.url("/"), "signing": "ed25519"}),
        )
        .await;
    let path = format!("/v1/endpoints/{ep}/public-key");
    let (_, before) = app.get(&path, &t.key).await;
    let old = before["key"].as_str().unwrap().to_string();

    app.publish(&t.key, json!({"type": "opened", "payload": {"n": 1}}))
        .await;
    let got = receiver.wait_for(1, Duration::from_secs(15)).await;
    assert!(
        !got[0].header("webhook-signature").contains("v1,"),
        "ed25519 alone: {}",
        got[0].header("webhook-signature")
    );
    assert_eq!(verifying(&got[0], &old), 1);

    let (status, rotated) = app
        .post(
            &format!("/v1/endpoints/{ep}/secret/rotate"),
            &t.key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["public_key"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    let (status, after) = app.get(&path, &t.key).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["key"], new.as_str());
    let previous = after["previous"].as_array().unwrap();
    assert_eq!(previous.len(), 1, "{after}");
    assert_eq!(previous[0]["key"], old.as_str());
    let expires =
        chrono::DateTime::parse_from_rfc3339(previous[0]["expires_at"].as_str().unwrap()).unwrap();
    let left = expires.signed_duration_since(chrono::Utc::now());
    assert!(
        left > chrono::Duration::hours(23) && left <= chrono::Duration::hours(24),
        "the old key signs for 24 hours: {after}"
    );

    app.publish(&t.key, json!({"type": "opened", "payload": {"n": 2}}))
        .await;
    let got = receiver.wait_for(2, Duration::from_secs(15)).await;
    let signature = got[1].header("webhook-signature");
    assert_eq!(signature.split(' ').count(), 2, "{signature}");
    assert_eq!(verifying(&got[1], &new), 1, "{signature}");
    assert_eq!(verifying(&got[1], &old), 1, "{signature}");
    app.stop().await;
}

#[tokio::test]
async fn the_private_key_is_in_no_answer_and_another_tenant_gets_404() {
    let app = spawn_app().await;
    let a = app.create_tenant("a").await;
    let b = app.create_tenant("b").await;
    let receiver = Receiver::start(200).await;
    let mut answers = Vec::new();

    // Bad choices are refused and store nothing.
    let (status, refused) = app
        .post(
            "/v1/endpoints",
            &a.key,
            json!({"url": receiver.url("/"), "signing": "rsa"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_signing", "{refused}");
    let (_, list) = app.get("/v1/endpoints", &a.key).await;
    assert_eq!(list["data"], json!([]), "{list}");

    // HMAC by default: no key pair, so no public key until ed25519 is chosen.
    let ep = app
        .create_endpoint(&a.key, json!({"url": receiver.url("/")}))
        .await;
    let one = format!("/v1/endpoints/{ep}");
    let (status, got) = app.get(&format!("{one}/public-key"), &a.key).await;
    assert_eq!(status, StatusCode::CONFLICT, "{got}");
    assert_eq!(got["error"]["code"], "no_public_key");
    let (status, view) = app.get(&one, &a.key).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["signing"], "hmac", "{view}");
    answers.push(view);
    let (status, bad) = app
        .call(
            Method::PATCH,
            &one,
            Some(&a.key),
            Some(json!({"signing": "v1a"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    let (status, patched) = app
        .call(
            Method::PATCH,
            &one,
            Some(&a.key),
            Some(json!({"signing": "ed25519"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["signing"], "ed25519");
    answers.push(patched);
    for path in [
        one.clone(),
        format!("{one}/public-key"),
        format!("{one}/secret"),
        "/v1/endpoints".to_string(),
    ] {
        let (status, answer) = app.get(&path, &a.key).await;
        assert_eq!(status, StatusCode::OK, "{path}: {answer}");
        answers.push(answer);
    }
    let (status, rotated) = app
        .post(&format!("{one}/secret/rotate"), &a.key, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    answers.push(rotated);
    let (status, keys) = app.get(&format!("{one}/public-key"), &a.key).await;
    assert_eq!(status, StatusCode::OK);
    answers.push(keys);

    let private = stored_private_keys(app.dir.path());
    assert_eq!(
        private.len(),
        2,
        "the current and the retired key are stored"
    );
    for answer in &answers {
        let text = answer.to_string();
        assert!(!text.contains("whsk_"), "{text}");
        for key in &private {
            assert!(!text.contains(key.as_str()), "a private key in {text}");
        }
    }

    // Another tenant's key: the endpoint does not exist for it.
    let (status, other) = app.get(&format!("{one}/public-key"), &b.key).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{other}");
    assert!(!other.to_string().contains("whpk_"), "{other}");
    app.stop().await;
}
