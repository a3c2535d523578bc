//! Mailgun's own Node client, mailgun.js, against the Mailgun-compatible webhooks API:
//! `tests/mailgun-js/roundtrip.mjs` creates, lists, reads, replaces and destroys webhooks
//! with it and makes its webhook test call to a local receiver; then `/v1` must show the
//! endpoints it left, and the receiver must hold one test event signed as Mailgun signs.
//! `./scripts/test.sh` installs the client (`npm ci` in tests/mailgun-js); `node` is taken
//! from PATH.

use std::path::Path;
use std::process::Command;

use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::spawn_app;
use crate::receiver::Receiver;

const DOMAIN: &str = "mg.acme.example";

#[tokio::test]
async fn mailgun_js_manages_webhooks_and_v1_shows_what_it_left() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mailgun-js");
    assert!(
        dir.join("node_modules/mailgun.js").is_dir() && dir.join("node_modules/form-data").is_dir(),
        "tests/mailgun-js/node_modules is missing: run ./scripts/test.sh, which installs it"
    );
    let app = spawn_app().await;
    let t = app.create_tenant("acme").await;
    let (status, body) = app
        .post("/v1/domains", &t.key, json!({"name": DOMAIN}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let receiver = Receiver::start(200).await;

    // The service runs on this test's runtime: wait for node off it.
    let script = dir.join("roundtrip.mjs");
    let args = [
        app.base.clone(),
        t.key.clone(),
        DOMAIN.to_string(),
        receiver.url("/"),
    ];
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("could not run node (is it on PATH?): {e}"))
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "roundtrip.mjs failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("mailgun.js: ") && l.ends_with(" passed, 0 failed")),
        "{stdout}"
    );

    // What mailgun.js left: clicked with c2 and c3, permanent_fail with the receiver,
    // delivered destroyed, opened refused, nothing from the refused test calls.
    let saved = receiver.url("/saved");
    let (_, list) = app.get("/v1/endpoints", &t.key).await;
    let endpoints = list["data"].as_array().unwrap();
    let mut urls: Vec<&str> = endpoints
        .iter()
        .map(|e| e["url"].as_str().unwrap())
        .collect();
    urls.sort();
    let mut expected = vec![
        "https://hooks.example.com/mailgun/c2",
        "https://hooks.example.com/mailgun/c3",
        saved.as_str(),
    ];
    expected.sort();
    assert_eq!(urls, expected, "{list}");
    for e in endpoints {
        let name = if e["url"] == saved.as_str() {
            "permanent_fail"
        } else {
            "clicked"
        };
        assert_eq!(e["event_types"], json!([name]));
        assert_eq!(e["domain"], DOMAIN);
        assert_eq!(e["format"], "mailgun");
        assert_eq!(e["description"], format!("mailgun webhook {name}"));
    }

    // The test call's one request: the catalog's permanent_fail sample in Mailgun's body,
    // signed with the saved endpoint's key as a Mailgun receiver checks it, and signed
    // with Standard Webhooks headers as deliveries are.
    let got = receiver.received();
    assert_eq!(got.len(), 1, "one test event, none for the refused calls");
    let request = &got[0];
    let ep = endpoints
        .iter()
        .find(|e| e["url"] == saved.as_str())
        .unwrap();
    let (_, secret) = app
        .get(
            &format!("/v1/endpoints/{}/secret", ep["id"].as_str().unwrap()),
            &t.key,
        )
        .await;
    let signing_key = secret["key"].as_str().unwrap();
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    let (_, types) = app.get("/v1/event-types", &t.key).await;
    let sample = types["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "permanent_fail")
        .map(|t| t["sample"].clone())
        .expect("permanent_fail is in the catalog");
    assert_eq!(body["event-data"], sample);
    let sig = &body["signature"];
    let (ts, token) = (
        sig["timestamp"].as_str().unwrap(),
        sig["token"].as_str().unwrap(),
    );
    assert_eq!(token.len(), 50);
    let mut mac = Hmac::<Sha256>::new_from_slice(signing_key.as_bytes()).unwrap();
    mac.update(format!("{ts}{token}").as_bytes());
    assert_eq!(
        sig["signature"].as_str().unwrap(),
        hex::encode(mac.finalize().into_bytes())
    );
    assert_eq!(request.header("webhook-timestamp"), ts);
    assert_eq!(
        request.header("webhook-signature"),
        request.standard_signature(signing_key)
    );
    assert_eq!(request.header("hookline-test"), "true");
    app.stop().await;
}
