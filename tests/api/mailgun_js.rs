//! Mailgun's own Node client, mailgun.js, against the Mailgun-compatible webhooks API:
//! `tests/mailgun-js/roundtrip.mjs` creates, lists, reads, replaces and destroys webhooks
//! with it; then `/v1` must show the endpoints it left. `./scripts/test.sh` installs the
//! client (`npm ci` in tests/mailgun-js); `node` is taken from PATH.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::spawn_app;

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

    // The service runs on this test's runtime: wait for node off it.
    let script = dir.join("roundtrip.mjs");
    let args = [app.base.clone(), t.key.clone(), DOMAIN.to_string()];
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

    // What mailgun.js left: clicked with c2 and c3, delivered destroyed, opened refused.
    let (_, list) = app.get("/v1/endpoints", &t.key).await;
    let endpoints = list["data"].as_array().unwrap();
    let mut urls: Vec<&str> = endpoints
        .iter()
        .map(|e| e["url"].as_str().unwrap())
        .collect();
    urls.sort();
    assert_eq!(
        urls,
        vec![
            "https://hooks.example.com/mailgun/c2",
            "https://hooks.example.com/mailgun/c3"
        ],
        "{list}"
    );
    for e in endpoints {
        assert_eq!(e["event_types"], json!(["clicked"]));
        assert_eq!(e["domain"], DOMAIN);
        assert_eq!(e["format"], "mailgun");
        assert_eq!(e["description"], "mailgun webhook clicked");
    }
    app.stop().await;
}
