//! Killing the process with SIGKILL loses no accepted event: after a restart on the same
//! data file, pending deliveries complete.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{all_settled, TestApp, OPERATOR_KEY};
use crate::receiver::Receiver;

struct Process {
    child: Child,
    base: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the real binary on `port` and waits until it answers.
async fn launch(data: &std::path::Path, port: u16, schedule: &str) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_hookline"))
        .env("HOOKLINE_LISTEN", format!("127.0.0.1:{port}"))
        .env("HOOKLINE_DATA", data)
        .env("HOOKLINE_OPERATOR_KEY", OPERATOR_KEY)
        .env("HOOKLINE_ALLOW_HTTP", "true")
        .env("HOOKLINE_ALLOWED_NETWORKS", "127.0.0.1/32")
        .env("HOOKLINE_RETRY_SCHEDULE", schedule)
        .env("HOOKLINE_REQUEST_TIMEOUT", "60s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the hookline binary starts");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = crate::helpers::client();
    loop {
        if client
            .get(format!("{base}/v1/event-types"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "hookline did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Process { child, base }
}

fn kill9(p: &mut Process) {
    // Child::kill sends SIGKILL on Unix: no shutdown code runs.
    p.child.kill().unwrap();
    p.child.wait().unwrap();
}

fn client_for(base: &str, dir: tempfile::TempDir) -> TestApp {
    TestApp {
        base: base.to_string(),
        client: crate::helpers::client(),
        running: None,
        dir,
    }
}

#[tokio::test]
async fn pending_deliveries_complete_after_kill_9_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hookline.db");
    let port = free_port();
    // A long second delay: the retry is still pending when the process dies.
    let mut first = launch(&data, port, "0s,3s").await;
    let app = client_for(&first.base, dir);

    let t = app.create_tenant("a").await;
    let failing_then_ok = Receiver::scripted(&[500], 200).await;
    let hanging = Receiver::start(200).await;
    hanging.hold();
    app.create_endpoint(
        &t.key,
        json!({"url": failing_then_ok.url("/retry"), "event_types": ["delivered"]}),
    )
    .await;
    app.create_endpoint(
        &t.key,
        json!({"url": hanging.url("/hang"), "event_types": ["opened"]}),
    )
    .await;

    let retried = app
        .publish(&t.key, json!({"type": "delivered", "payload": {"k": 1}}))
        .await;
    let in_flight = app
        .publish(&t.key, json!({"type": "opened", "payload": {"k": 2}}))
        .await;
    // The first try of one failed and its retry waits; the other is mid-request.
    failing_then_ok.wait_for(1, Duration::from_secs(15)).await;
    hanging.wait_for(1, Duration::from_secs(15)).await;
    kill9(&mut first);

    hanging.release();
    hanging.set_status(200);
    let mut second = launch(&data, port, "0s,3s").await;
    for id in [&retried, &in_flight] {
        let m = app
            .wait_message(&t.key, id, Duration::from_secs(30), all_settled)
            .await;
        assert_eq!(m["deliveries"][0]["status"], "succeeded", "{m}");
    }
    assert_eq!(failing_then_ok.count(), 2);
    // The in-flight request had no answer recorded, so it was sent again.
    assert_eq!(hanging.count(), 2);
    kill9(&mut second);
}

#[tokio::test]
async fn accepted_events_survive_a_kill_before_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hookline.db");
    let port = free_port();
    // The first try waits 2 s, so every accepted event is still queued at the kill.
    let mut first = launch(&data, port, "2s,1s").await;
    let app = client_for(&first.base, dir);
    let t = app.create_tenant("a").await;
    let receiver = Receiver::start(200).await;
    app.create_endpoint(&t.key, json!({"url": receiver.url("/")}))
        .await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            app.publish(&t.key, json!({"type": "delivered", "payload": {"i": i}}))
                .await,
        );
    }
    kill9(&mut first);
    assert_eq!(receiver.count(), 0);
    let mut second = launch(&data, port, "2s,1s").await;
    let got = receiver.wait_for(20, Duration::from_secs(30)).await;
    let mut seen: Vec<_> = got
        .iter()
        .map(|r| r.header("webhook-id").to_string())
        .collect();
    seen.sort();
    seen.dedup();
    ids.sort();
    assert_eq!(seen, ids);
    kill9(&mut second);
}
