//! `events publish`: one event from flags, and JSON lines from a file or stdin in batches,
//! every event accepted and counted; a malformed file is refused before anything is sent.

use std::time::Duration;

use serde_json::json;

use crate::helpers::spawn_app;
use crate::support::User;

/// The messages in the log once `expected` are there (the worker records a message when
/// it takes its event off the queue), or what is there when the bound runs out.
async fn count_messages(app: &crate::helpers::TestApp, key: &str, expected: usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = count_once(app, key).await;
        if n >= expected || std::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn count_once(app: &crate::helpers::TestApp, key: &str) -> usize {
    let mut n = 0;
    let mut cursor = String::new();
    loop {
        let (_, page) = app
            .get(&format!("/v1/messages?limit=250&cursor={cursor}"), key)
            .await;
        n += page["data"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => return n,
        }
    }
}

#[tokio::test]
async fn a_thousand_lines_are_published_in_batches_and_all_accepted() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let user = User::new();
    let file = user.home.path().join("events.jsonl");
    let mut text = String::new();
    for i in 0..1000 {
        let line =
            json!({"type": "delivered", "idempotency_key": format!("k-{i}"), "payload": {"n": i}});
        text.push_str(&format!("{line}\n"));
    }
    std::fs::write(&file, &text).unwrap();
    let path = file.to_str().unwrap();

    let out = user
        .at(
            &app.base,
            &t.key,
            &["events", "publish", "--file", path, "--json"],
        )
        .await
        .ok()
        .json();
    assert_eq!(out["accepted"], 1000, "{out}");
    assert_eq!(out["total"], 1000);
    assert_eq!(out["batches"], 10);
    let ids = out["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 1000);
    assert_eq!(count_messages(&app, &t.key, 1000).await, 1000);
    // Each line is the event it names.
    let (_, m) = app
        .get(
            &format!("/v1/messages/{}", ids[999].as_str().unwrap()),
            &t.key,
        )
        .await;
    assert_eq!(m["payload"]["n"], 999);
    assert_eq!(m["idempotency_key"], "k-999");

    // From stdin, in smaller batches, with the summary for people; the same idempotency
    // keys give the same messages back, so nothing more is stored.
    let out = user
        .run_with(
            &[
                "events",
                "publish",
                "--file",
                "-",
                "--batch-size",
                "250",
                "--url",
                &app.base,
                "--key",
                &t.key,
            ],
            &[],
            Some(text.as_bytes()),
        )
        .await;
    assert_eq!(out.code, 2, "250 is above the API's batch: {}", out.stderr);
    let out = user
        .run_with(
            &[
                "events",
                "publish",
                "--file",
                "-",
                "--batch-size",
                "40",
                "--url",
                &app.base,
                "--key",
                &t.key,
            ],
            &[],
            Some(text.as_bytes()),
        )
        .await
        .ok();
    assert!(
        out.stdout
            .contains("Accepted 1000 of 1000 events in 25 requests"),
        "{}",
        out.stdout
    );
    assert_eq!(count_messages(&app, &t.key, 1000).await, 1000);
    app.stop().await;
}

#[tokio::test]
async fn one_event_from_flags_and_refusals() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let user = User::new();
    let b = app.base.as_str();
    let out = user
        .at(
            b,
            &t.key,
            &[
                "events",
                "publish",
                "--type",
                "opened",
                "--payload",
                r#"{"recipient": "a@example.com"}"#,
                "--idempotency-key",
                "one",
                "--json",
            ],
        )
        .await
        .ok()
        .json();
    let id = out["id"].as_str().unwrap();
    let m = app
        .wait_message(&t.key, id, Duration::from_secs(10), |_| true)
        .await;
    assert_eq!(m["type"], "opened");
    assert_eq!(m["payload"]["recipient"], "a@example.com");

    // The API refuses an unknown event type: exit 1 with its message, nothing stored.
    let out = user
        .at(
            b,
            &t.key,
            &[
                "events",
                "publish",
                "--type",
                "no_such_type",
                "--payload",
                "{}",
            ],
        )
        .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let (_, api) = app
        .post(
            "/v1/events",
            &t.key,
            json!({"type": "no_such_type", "payload": {}}),
        )
        .await;
    assert!(
        out.stderr
            .contains(api["error"]["message"].as_str().unwrap()),
        "{}",
        out.stderr
    );
    // A file with a refused event in its second batch: the first is accepted and counted.
    let file = user.home.path().join("mixed.jsonl");
    let mut text = String::new();
    for i in 0..5 {
        text.push_str(&format!(
            "{}\n",
            json!({"type": "delivered", "payload": {"n": i}})
        ));
    }
    text.push_str(&format!(
        "{}\n",
        json!({"type": "no_such_type", "payload": {}})
    ));
    std::fs::write(&file, text).unwrap();
    let out = user
        .at(
            b,
            &t.key,
            &[
                "events",
                "publish",
                "--file",
                file.to_str().unwrap(),
                "--batch-size",
                "5",
                "--json",
            ],
        )
        .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let summary = out.json();
    assert_eq!(summary["accepted"], 5);
    assert_eq!(summary["total"], 6);
    assert!(summary["error"]["code"].is_string(), "{summary}");
    assert_eq!(count_messages(&app, &t.key, 6).await, 6);

    // Usage errors, before anything is sent: not JSON, a line not JSON, a missing flag.
    let bad = user.home.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"type\": \"delivered\", \"payload\": {}}\nnot json\n",
    )
    .unwrap();
    for args in [
        &[
            "events",
            "publish",
            "--type",
            "opened",
            "--payload",
            "{oops",
        ][..],
        &["events", "publish", "--file", bad.to_str().unwrap()][..],
        &["events", "publish", "--type", "opened"][..],
        &["events", "publish"][..],
        &["events", "publish", "--file", "/no/such/file"][..],
    ] {
        let out = user.at(b, &t.key, args).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
    }
    assert_eq!(count_messages(&app, &t.key, 6).await, 6);
    app.stop().await;
}
