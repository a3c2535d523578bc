//! `listen` receiving deliveries from local mode and checking their signatures, and
//! `verify` agreeing with the official `standardwebhooks` library on the same inputs.

use std::process::Command;

use hookline_core::signing::Secret;
use serde_json::{json, Value};

use crate::helpers::spawn_app;
use crate::support::User;

#[tokio::test]
async fn listen_receives_deliveries_and_checks_their_signatures() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let user = User::new();
    let secret = Secret::generate().expose();
    let wrong = Secret::generate().expose();

    // The right secret, for people: headers, the body pretty, and the verdict.
    let mut listen = user.spawn(&["listen", "--port", "0", "--secret", &secret]);
    let first = listen.line().await;
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {first:?}"))
        .to_string();
    let ep = app
        .create_endpoint(
            &t.key,
            json!({"url": format!("{url}/hooks"), "secret": secret}),
        )
        .await;
    let id = app
        .publish(
            &t.key,
            json!({"type": "delivered", "payload": {"recipient": "bob@example.com"}}),
        )
        .await;
    let (verdict, before) = listen
        .until(|l| l.starts_with("Standard Webhooks signature"))
        .await;
    assert!(
        verdict.contains("valid") && !verdict.contains("invalid"),
        "{verdict}"
    );
    let shown = before.join("\n");
    assert!(shown.contains("POST /hooks"), "{shown}");
    assert!(shown.contains(&format!("webhook-id: {id}")), "{shown}");
    assert!(
        shown.contains("\"recipient\": \"bob@example.com\""),
        "{shown}"
    );
    listen.stop().await;
    // Each listener below gets only the deliveries of its own endpoint.
    app.call(
        reqwest::Method::DELETE,
        &format!("/v1/endpoints/{ep}"),
        Some(&t.key),
        None,
    )
    .await;

    // A wrong secret: reported invalid, as JSON lines here.
    let mut listen = user.spawn(&["listen", "--port", "0", "--secret", &wrong, "--json"]);
    let first: Value = serde_json::from_str(&listen.line().await).unwrap();
    let url = first["url"].as_str().unwrap().to_string();
    let ep = app
        .create_endpoint(
            &t.key,
            json!({"url": format!("{url}/x"), "secret": secret, "event_types": ["opened"]}),
        )
        .await;
    app.publish(&t.key, json!({"type": "opened", "payload": {"n": 1}}))
        .await;
    let line: Value = serde_json::from_str(&listen.line().await).unwrap();
    assert_eq!(line["kind"], "delivery");
    assert_eq!(line["body"], json!({"n": 1}));
    assert_eq!(line["standard_webhooks"]["valid"], false, "{line}");
    listen.stop().await;
    app.call(
        reqwest::Method::DELETE,
        &format!("/v1/endpoints/{ep}"),
        Some(&t.key),
        None,
    )
    .await;

    // Mailgun's body format: its own signature checked too, with the key as text.
    let mut listen = user.spawn(&["listen", "--port", "0", "--secret", &secret, "--json"]);
    let first: Value = serde_json::from_str(&listen.line().await).unwrap();
    let url = first["url"].as_str().unwrap().to_string();
    app.create_endpoint(
        &t.key,
        json!({"url": format!("{url}/mg"), "secret": secret, "format": "mailgun", "event_types": ["clicked"]}),
    )
    .await;
    app.publish(
        &t.key,
        json!({"type": "clicked", "payload": {"url": "https://a.example"}}),
    )
    .await;
    let line: Value = serde_json::from_str(&listen.line().await).unwrap();
    assert_eq!(line["path"], "/mg");
    assert_eq!(line["standard_webhooks"]["valid"], true, "{line}");
    assert_eq!(line["mailgun"]["valid"], true, "{line}");
    assert_eq!(line["body"]["event-data"]["url"], "https://a.example");
    listen.stop().await;

    let out = user.run(&["listen", "--secret", "not-a-secret"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = user.run(&["listen", "--port", "70000"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    app.stop().await;
}

/// One delivery as a receiver sees it.
struct Case {
    name: &'static str,
    secret: String,
    headers: Vec<(&'static str, String)>,
    body: String,
    expected: bool,
}

#[tokio::test]
async fn verify_agrees_with_the_official_library() {
    let python = std::env::var("HOOKLINE_TEST_PYTHON").expect(
        "HOOKLINE_TEST_PYTHON is unset: run the test command from README.md, which installs \
         the standardwebhooks package and sets it",
    );
    let user = User::new();
    let secret = Secret::generate();
    let other = Secret::generate();
    let now = chrono::Utc::now().timestamp();
    let body = r#"{"event":"delivered","recipient":"alice@example.com","n":[1.50,2]}"#.to_string();
    let signed = |s: &Secret, id: &str, ts: i64, b: &str| s.sign(id, ts, b.as_bytes());
    let headers = |id: &str, ts: i64, sig: String| {
        vec![
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", sig),
        ]
    };
    let case = |name, secret: &Secret, headers, body: &str, expected| Case {
        name,
        secret: secret.expose(),
        headers,
        body: body.to_string(),
        expected,
    };
    let good = signed(&secret, "msg_1", now, &body);
    let cases = vec![
        case(
            "valid",
            &secret,
            headers("msg_1", now, good.clone()),
            &body,
            true,
        ),
        case(
            "wrong secret",
            &other,
            headers("msg_1", now, good.clone()),
            &body,
            false,
        ),
        case(
            "tampered body",
            &secret,
            headers("msg_1", now, good.clone()),
            r#"{"event":"bounced"}"#,
            false,
        ),
        case(
            "another id",
            &secret,
            headers("msg_2", now, good.clone()),
            &body,
            false,
        ),
        case(
            "rotation: the second of two signatures",
            &secret,
            headers(
                "msg_1",
                now,
                format!("{} {good}", signed(&other, "msg_1", now, &body)),
            ),
            &body,
            true,
        ),
        case(
            "too old",
            &secret,
            headers(
                "msg_1",
                now - 600,
                signed(&secret, "msg_1", now - 600, &body),
            ),
            &body,
            false,
        ),
        case(
            "too new",
            &secret,
            headers(
                "msg_1",
                now + 600,
                signed(&secret, "msg_1", now + 600, &body),
            ),
            &body,
            false,
        ),
        case(
            "within the tolerance",
            &secret,
            headers(
                "msg_1",
                now - 120,
                signed(&secret, "msg_1", now - 120, &body),
            ),
            &body,
            true,
        ),
        case(
            "another version",
            &secret,
            headers("msg_1", now, good.replacen("v1,", "v2,", 1)),
            &body,
            false,
        ),
        case(
            "not base64",
            &secret,
            headers("msg_1", now, "v1,@@@@".into()),
            &body,
            false,
        ),
        case(
            "no webhook-id",
            &secret,
            vec![
                ("webhook-timestamp", now.to_string()),
                ("webhook-signature", good.clone()),
            ],
            &body,
            false,
        ),
    ];

    let dir = tempfile::tempdir().unwrap();
    let mut for_python = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let body_file = dir.path().join(format!("body-{i}.json"));
        std::fs::write(&body_file, &c.body).unwrap();
        let mut args = vec!["verify".to_string(), "--secret".into(), c.secret.clone()];
        for (n, v) in &c.headers {
            args.push("-H".into());
            args.push(format!("{n}: {v}"));
        }
        args.extend([
            "--body".into(),
            body_file.to_str().unwrap().to_string(),
            "--json".into(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = user.run(&args).await;
        assert!(out.code == 0 || out.code == 1, "{}: {}", c.name, out.stderr);
        let cli_valid = out.code == 0;
        assert_eq!(cli_valid, c.expected, "{}: {}", c.name, out.stdout);
        assert_eq!(out.json()["valid"], cli_valid, "{}", c.name);
        let headers: serde_json::Map<String, Value> = c
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), json!(v)))
            .collect();
        // The library is asked for the command's verdict: its script fails on any difference.
        for_python.push(
            json!({"secret": c.secret, "headers": headers, "body": c.body, "valid": cli_valid}),
        );
    }
    let file = dir.path().join("cases.json");
    std::fs::write(&file, Value::Array(for_python).to_string()).unwrap();
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
        "the library disagrees:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("{} cases checked, 0 failed", cases.len())),
        "{stdout}"
    );

    // A captured request (from stdin) verifies as its parts do.
    let raw = format!(
        "POST /hooks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nwebhook-id: msg_1\r\nwebhook-timestamp: {now}\r\nwebhook-signature: {good}\r\n\r\n{body}"
    );
    let args = ["verify", "--secret", &cases[0].secret, "--request", "-"];
    let out = user.run_with(&args, &[], Some(raw.as_bytes())).await.ok();
    assert!(
        out.stdout.contains("Standard Webhooks signature: valid"),
        "{}",
        out.stdout
    );
    let args = ["verify", "--secret", &cases[1].secret, "--request", "-"];
    let out = user.run_with(&args, &[], Some(raw.as_bytes())).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("invalid"), "{}", out.stdout);
    // Usage errors: not a secret, a header without a colon.
    let out = user.run(&["verify", "--secret", "nope"]).await;
    assert_eq!(out.code, 2);
    let out = user
        .run(&[
            "verify",
            "--secret",
            &cases[0].secret,
            "-H",
            "webhook-id msg_1",
        ])
        .await;
    assert_eq!(out.code, 2);
}
