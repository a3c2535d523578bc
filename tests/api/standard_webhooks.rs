//! The signature checked by the official `standardwebhooks` Python library, as a receiver
//! would check it. The README's test command installs the library and sets
//! `HOOKLINE_TEST_PYTHON` to the interpreter that has it.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::helpers::spawn_app;
use crate::receiver::Receiver;

#[tokio::test]
async fn the_official_library_verifies_deliveries_before_and_after_rotation() {
    let python = std::env::var("HOOKLINE_TEST_PYTHON").expect(
        "HOOKLINE_TEST_PYTHON is unset: run the test command from README.md, which installs \
         the standardwebhooks package and sets it",
    );
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let receiver = Receiver::start(200).await;
    let ep = app
        .create_endpoint(&t.key, json!({"url": receiver.url("/")}))
        .await;
    let (_, s) = app.get(&format!("/v1/endpoints/{ep}/secret"), &t.key).await;
    let old = s["key"].as_str().unwrap().to_string();
    app.publish(
        &t.key,
        json!({"type": "delivered", "payload": {"recipient": "bob@example.com"}}),
    )
    .await;
    receiver.wait_for(1, Duration::from_secs(15)).await;
    let (_, r) = app
        .post(
            &format!("/v1/endpoints/{ep}/secret/rotate"),
            &t.key,
            json!({}),
        )
        .await;
    let new = r["key"].as_str().unwrap().to_string();
    app.publish(&t.key, json!({"type": "opened", "payload": {"n": 2}}))
        .await;
    let got = receiver.wait_for(2, Duration::from_secs(15)).await;

    let cases = json!([
        // Before rotation: the old secret verifies.
        {"secret": old, "headers": headers(&got[0]), "body": body(&got[0]), "valid": true},
        // After rotation, in the grace period: both verify.
        {"secret": new, "headers": headers(&got[1]), "body": body(&got[1]), "valid": true},
        {"secret": old, "headers": headers(&got[1]), "body": body(&got[1]), "valid": true},
        // The new secret did not sign the first message, and a changed body fails.
        {"secret": new, "headers": headers(&got[0]), "body": body(&got[0]), "valid": false},
        {"secret": old, "headers": headers(&got[0]), "body": "{\"tampered\":1}", "valid": false},
    ]);
    let file = app.dir.path().join("cases.json");
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
    assert!(
        out.status.success(),
        "verification failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("5 cases checked"));
    app.stop().await;
}

fn headers(r: &crate::receiver::Received) -> serde_json::Value {
    json!({
        "webhook-id": r.header("webhook-id"),
        "webhook-timestamp": r.header("webhook-timestamp"),
        "webhook-signature": r.header("webhook-signature"),
    })
}

fn body(r: &crate::receiver::Received) -> String {
    String::from_utf8(r.body.to_vec()).unwrap()
}
