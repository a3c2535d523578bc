//! Body formats: `raw` (the payload as published), `envelope` (Paubox's `{"event_name",
//! "payload"}`) and `mailgun` (Mailgun's `{"signature", "event-data"}`), each received by
//! a local receiver and checked as its receivers check it. The payload inside a wrapper is
//! the published text byte for byte, and the Standard Webhooks signature covers the body
//! as sent in every format.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{spawn_app, TestApp};
use crate::receiver::Receiver;

const WAIT: Duration = Duration::from_secs(15);
const DOMAIN: &str = "mg.acme.example";
/// Odd spacing, escapes and number spellings that re-serializing would change.
const PAYLOAD: &str = r#"{"event": "delivered",  "z": 1, "a":"é\u00e9", "n": [1.50, 2e3]}"#;

/// The top-level members of a JSON object, each as its exact text.
fn members(body: &[u8]) -> HashMap<String, Box<RawValue>> {
    serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "body is not a JSON object ({e}): {}",
            String::from_utf8_lossy(body)
        )
    })
}

/// A Mailgun receiver's check, as Mailgun documents it: hex HMAC-SHA256 keyed with the
/// webhook signing key over timestamp + token, compared with `signature`.
fn mailgun_accepts(signing_key: &str, signature: &Value) -> bool {
    let (Some(ts), Some(token), Some(sig)) = (
        signature["timestamp"].as_str(),
        signature["token"].as_str(),
        signature["signature"].as_str(),
    ) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(signing_key.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(token.as_bytes());
    hex::encode(mac.finalize().into_bytes()) == sig
}

async fn secret_of(app: &TestApp, key: &str, endpoint: &str) -> String {
    let (_, body) = app
        .get(&format!("/v1/endpoints/{endpoint}/secret"), key)
        .await;
    body["key"].as_str().unwrap().to_string()
}

/// Checks with the official `standardwebhooks` library (see standard_webhooks.rs).
fn official_library_verifies(app: &TestApp, cases: Value) {
    let python = std::env::var("HOOKLINE_TEST_PYTHON").expect(
        "HOOKLINE_TEST_PYTHON is unset: run the test command from README.md, which installs \
         the standardwebhooks package and sets it",
    );
    let n = cases.as_array().unwrap().len();
    let file = app.dir.path().join("format-cases.json");
    std::fs::write(&file, cases.to_string()).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/verify_standard_webhooks.py"
    );
    let out = Command::new(python)
        .arg(script)
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "verification failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("{n} cases checked, 0 failed")));
}

#[tokio::test]
async fn each_format_reaches_its_receiver_as_documented_and_signed_over_the_body() {
    let app = spawn_app().await;
    let t = app.create_tenant("acme").await;
    app.post("/v1/domains", &t.key, json!({"name": DOMAIN}))
        .await;
    let mut receivers = Vec::new();
    for format in ["raw", "envelope", "mailgun"] {
        let receiver = Receiver::start(200).await;
        let (status, ep) = app
            .post(
                "/v1/endpoints",
                &t.key,
                json!({"url": receiver.url(format), "event_types": ["delivered"],
                       "domain": DOMAIN, "format": format}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{ep}");
        assert_eq!(ep["format"], format);
        let id = ep["id"].as_str().unwrap().to_string();
        let secret = secret_of(&app, &t.key, &id).await;
        receivers.push((format, receiver, secret));
    }
    let event = format!(r#"{{"type":"delivered","domain":"{DOMAIN}","payload":{PAYLOAD}}}"#);
    let (status, _) = app
        .raw(
            Method::POST,
            "/v1/events",
            &t.key,
            "application/json",
            event.into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let mut cases = Vec::new();
    for (format, receiver, secret) in &receivers {
        let got = receiver.wait_for(1, WAIT).await;
        let req = &got[0];
        assert_eq!(req.header("content-type"), "application/json", "{format}");
        assert_eq!(
            req.header("webhook-signature"),
            req.standard_signature(secret),
            "{format}: the Standard Webhooks signature covers the body as sent"
        );
        let body = String::from_utf8(req.body.to_vec()).unwrap();
        cases.push(json!({
            "secret": secret,
            "headers": {
                "webhook-id": req.header("webhook-id"),
                "webhook-timestamp": req.header("webhook-timestamp"),
                "webhook-signature": req.header("webhook-signature"),
            },
            "body": body,
            "valid": true,
        }));
        match *format {
            "raw" => assert_eq!(body, PAYLOAD),
            "envelope" => {
                let m = members(&req.body);
                assert_eq!(m.len(), 2, "{body}");
                assert_eq!(m["event_name"].get(), r#""delivered""#);
                assert_eq!(m["payload"].get(), PAYLOAD, "the payload is verbatim");
            }
            "mailgun" => {
                let m = members(&req.body);
                assert_eq!(m.len(), 2, "{body}");
                assert_eq!(m["event-data"].get(), PAYLOAD, "event-data is verbatim");
                let signature: Value = serde_json::from_str(m["signature"].get()).unwrap();
                assert_eq!(signature.as_object().unwrap().len(), 3, "{signature}");
                assert_eq!(
                    signature["timestamp"].as_str().unwrap(),
                    req.header("webhook-timestamp")
                );
                let token = signature["token"].as_str().unwrap();
                assert_eq!(token.len(), 50);
                assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
                assert!(
                    mailgun_accepts(secret, &signature),
                    "a Mailgun receiver with the whsec_ key as its signing key accepts it"
                );
                // And refuses what it should.
                let mut tampered = signature.clone();
                tampered["token"] = json!(format!("{}0", &token[..49]));
                assert!(!mailgun_accepts(secret, &tampered));
                assert!(!mailgun_accepts(&format!("{secret}x"), &signature));
            }
            _ => unreachable!(),
        }
    }
    official_library_verifies(&app, Value::Array(cases));
    app.stop().await;
}

#[tokio::test]
async fn formats_are_chosen_changed_and_refused_through_v1() {
    let app = spawn_app().await;
    let t = app.create_tenant("acme").await;
    let receiver = Receiver::start(200).await;
    let (status, ep) = app
        .post("/v1/endpoints", &t.key, json!({"url": receiver.url("/")}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(ep["format"], "raw", "raw is the default");
    let id = ep["id"].as_str().unwrap().to_string();
    let path = format!("/v1/endpoints/{id}");
    for format in ["envelope", "mailgun", "raw"] {
        let (status, body) = app
            .call(
                Method::PATCH,
                &path,
                Some(&t.key),
                Some(json!({"format": format})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["format"], format);
        let (_, stored) = app.get(&path, &t.key).await;
        assert_eq!(stored["format"], format, "stored and read back");
    }
    for bad in ["json", "Mailgun", ""] {
        let (status, body) = app
            .call(
                Method::PATCH,
                &path,
                Some(&t.key),
                Some(json!({"format": bad})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_format");
        let (status, body) = app
            .post(
                "/v1/endpoints",
                &t.key,
                json!({"url": receiver.url("/"), "format": bad}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_format");
    }
    let (_, list) = app.get("/v1/endpoints", &t.key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn test_sends_use_the_endpoints_format() {
    let app = spawn_app().await;
    let t = app.create_tenant("acme").await;
    let receiver = Receiver::start(200).await;
    let ep = app
        .create_endpoint(
            &t.key,
            json!({"url": receiver.url("/"), "event_types": ["clicked"], "format": "mailgun"}),
        )
        .await;
    let secret = secret_of(&app, &t.key, &ep).await;
    let (status, body) = app
        .post(&format!("/v1/endpoints/{ep}/test"), &t.key, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ok"], true);
    let got = receiver.wait_for(1, WAIT).await;
    let (_, types) = app.get("/v1/event-types", &t.key).await;
    let sample = types["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "clicked")
        .unwrap()["sample"]
        .clone();
    let sent: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(sent["event-data"], sample);
    assert!(mailgun_accepts(&secret, &sent["signature"]));
    assert_eq!(
        got[0].header("webhook-signature"),
        &got[0].standard_signature(&secret)
    );

    app.call(
        Method::PATCH,
        &format!("/v1/endpoints/{ep}"),
        Some(&t.key),
        Some(json!({"format": "envelope"})),
    )
    .await;
    app.post(&format!("/v1/endpoints/{ep}/test"), &t.key, json!({}))
        .await;
    let got = receiver.wait_for(2, WAIT).await;
    let sent: Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(sent, json!({"event_name": "clicked", "payload": sample}));
    app.stop().await;
}
