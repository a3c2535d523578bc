//! The fault-injecting receiver's own behaviours, checked with a plain HTTP client before
//! the suites rely on them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::faulty::{Answer, FaultyReceiver, Plan, HUGE_LENGTH, TRAP_PATH};

/// A receiver whose `/{anything}` path answers `answers[n - 1]` to its `n`th request of a
/// webhook id, and the last one after that.
async fn receiver(answers: &'static [Answer]) -> FaultyReceiver {
    let plan: Plan = Arc::new(move |_, _, n| answers[(n as usize - 1).min(answers.len() - 1)]);
    FaultyReceiver::start(plan, Duration::from_secs(5)).await
}

fn client(timeout: Duration) -> reqwest::Client {
    hookline_core::client::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
        .unwrap()
}

async fn post(client: &reqwest::Client, url: &str, id: &str) -> reqwest::Result<reqwest::Response> {
    client
        .post(url)
        .header("webhook-id", id)
        .body(r#"{"k":1}"#)
        .send()
        .await
}

#[tokio::test]
async fn answers_follow_the_plan_per_endpoint_and_webhook_id_and_are_recorded() {
    let plan: Plan = Arc::new(|endpoint, id, n| match (endpoint, id, n) {
        ("/a", "msg_1", 1) => Answer::Status(500),
        ("/a", "msg_1", _) => Answer::Status(200),
        ("/b", _, _) => Answer::Status(406),
        _ => Answer::Status(410),
    });
    let r = FaultyReceiver::start(plan, Duration::from_secs(5)).await;
    let c = client(Duration::from_secs(5));
    let mut got = Vec::new();
    for (path, id) in [
        ("/a", "msg_1"),
        ("/a", "msg_1"),
        ("/b", "msg_1"),
        ("/a", "msg_2"),
    ] {
        let resp = post(&c, &r.url(path), id).await.unwrap();
        got.push(resp.status().as_u16());
    }
    assert_eq!(got, vec![500, 200, 406, 410]);
    let seen = r.seen();
    let summary: Vec<_> = seen
        .iter()
        .map(|s| {
            (
                s.endpoint.as_str(),
                s.webhook_id.as_str(),
                s.number,
                s.answer,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("/a", "msg_1", 1, Answer::Status(500)),
            ("/a", "msg_1", 2, Answer::Status(200)),
            ("/b", "msg_1", 1, Answer::Status(406)),
            ("/a", "msg_2", 1, Answer::Status(410)),
        ]
    );
    assert!(seen.windows(2).all(|w| w[0].at <= w[1].at));
}

#[tokio::test]
async fn keeps_the_connection_alive_between_complete_answers() {
    let r = receiver(&[Answer::Status(200)]).await;
    let c = client(Duration::from_secs(5));
    for i in 0..20 {
        let resp = post(&c, &r.url("/a"), &format!("msg_{i}")).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "answer 200");
    }
    assert_eq!(r.count(), 20);
}

#[tokio::test]
async fn too_many_requests_carries_retry_after() {
    let r = receiver(&[Answer::TooMany {
        retry_after_secs: 7,
    }])
    .await;
    let resp = post(&client(Duration::from_secs(5)), &r.url("/a"), "msg_1")
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
}

#[tokio::test]
async fn redirects_point_at_a_loopback_trap_that_counts_followers() {
    let r = receiver(&[Answer::Redirect]).await;
    let resp = post(&client(Duration::from_secs(5)), &r.url("/a"), "msg_1")
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(location, r.url(TRAP_PATH));
    assert_eq!(r.trap_hits(), 0);
    // A client that follows the redirect lands on the trap, which is not a planned request.
    hookline_core::client::install_crypto_provider();
    let follower = reqwest::Client::new();
    let resp = post(&follower, &r.url("/a"), "msg_2").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(r.trap_hits(), 1);
    assert_eq!(r.count(), 2);
}

#[tokio::test]
async fn a_hanging_answer_outlasts_the_client_timeout() {
    let r = receiver(&[Answer::Hang]).await;
    let started = Instant::now();
    let err = post(&client(Duration::from_millis(300)), &r.url("/a"), "msg_1")
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.seen()[0].answer, Answer::Hang);
    // The receiver lets go of the connection once the client hangs up.
    let deadline = Instant::now() + Duration::from_secs(3);
    while r.open_requests() > 0 {
        assert!(Instant::now() < deadline, "the hanging answer never ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_reset_fails_the_request_without_a_status() {
    let r = receiver(&[Answer::Reset]).await;
    let started = Instant::now();
    let err = post(&client(Duration::from_secs(5)), &r.url("/a"), "msg_1")
        .await
        .unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
    assert!(err.status().is_none());
    assert!(started.elapsed() < Duration::from_secs(5));
    // The reset is a RST, seen by a raw socket as ECONNRESET rather than a clean EOF.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = tokio::net::TcpStream::connect(r.addr()).await.unwrap();
    raw.write_all(
        b"POST /a HTTP/1.1\r\nHost: x\r\nwebhook-id: msg_2\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await
    .unwrap();
    let mut buf = [0u8; 16];
    let read = raw.read(&mut buf).await;
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
}

#[tokio::test]
async fn closing_mid_body_gives_the_status_then_a_body_error() {
    let r = receiver(&[Answer::CloseMidBody { status: 200 }]).await;
    let resp = post(&client(Duration::from_secs(5)), &r.url("/a"), "msg_1")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), Some(4096));
    let err = resp.bytes().await.unwrap_err();
    assert!(err.is_body() || err.is_decode(), "{err:?}");
}

#[tokio::test]
async fn a_slow_huge_body_trickles_far_more_than_a_client_reads() {
    let r = receiver(&[Answer::SlowHuge { status: 200 }]).await;
    let mut resp = post(&client(Duration::from_secs(5)), &r.url("/a"), "msg_1")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), Some(HUGE_LENGTH as u64));
    let started = Instant::now();
    let mut read = 0;
    while read < 128 * 1024 {
        read += resp.chunk().await.unwrap().unwrap().len();
    }
    // At 16 KiB per 10 ms, 128 KiB takes several pauses: the body is slow, not just big.
    assert!(started.elapsed() >= Duration::from_millis(50));
    drop(resp);
    let deadline = Instant::now() + Duration::from_secs(3);
    while r.open_requests() > 0 {
        assert!(
            Instant::now() < deadline,
            "the trickle did not stop when the client left"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_late_answer_comes_complete_after_its_pause() {
    let r = receiver(&[Answer::Late {
        status: 201,
        after_ms: 300,
    }])
    .await;
    let started = Instant::now();
    let resp = post(&client(Duration::from_secs(5)), &r.url("/a"), "msg_1")
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(resp.text().await.unwrap(), "answer 201");
}
