//! What a receiver can make a delivery cost: a huge or endless answer is read only up to
//! the cap and the connection dropped, the stored excerpt is at most 1 KiB of valid UTF-8
//! whatever the bytes, and a receiver trickling its answer is cut by the request timeout.
//! Receivers are raw TCP servers on 127.0.0.1.

use std::sync::Arc;
use std::time::Duration;

use hookline_core::client::{Response, Sender, SenderOptions, MAX_EXCERPT, MAX_RESPONSE_READ};
use hookline_core::urlpolicy::{SystemResolver, UrlPolicy};
use reqwest::header::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Far more than the client may read; the receiver offers this much.
const HUGE: u64 = 50 * 1024 * 1024;

fn sender(timeout: Duration) -> Sender {
    Sender::new(SenderOptions {
        policy: Arc::new(UrlPolicy {
            allow_http: true,
            allowed_networks: UrlPolicy::parse_networks("127.0.0.1/32").unwrap(),
        }),
        resolver: Arc::new(SystemResolver),
        timeout,
        extra_roots: Vec::new(),
    })
    .unwrap()
}

/// A one-connection receiver: reads the request head, then runs `answer`, which reports
/// how many bytes of body it managed to write before the client went away.
async fn receiver<F, Fut>(answer: F) -> (String, JoinHandle<u64>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = u64> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "client closed before sending its request");
            head.extend_from_slice(&buf[..n]);
        }
        answer(tcp).await
    });
    (url, task)
}

/// Writes `head`, then `total` bytes of `fill` (or forever when `total` is `None`, as HTTP
/// chunks), stopping at the first write error; returns the body bytes written.
async fn flood(mut tcp: TcpStream, chunked: bool, fill: u8, total: Option<u64>) -> u64 {
    let head = if chunked {
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_string()
    } else {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
            total.unwrap()
        )
    };
    if tcp.write_all(head.as_bytes()).await.is_err() {
        return 0;
    }
    let block = vec![fill; 64 * 1024];
    let mut written = 0u64;
    loop {
        if total.is_some_and(|t| written >= t) {
            return written;
        }
        let result = if chunked {
            let mut chunk = format!("{:x}\r\n", block.len()).into_bytes();
            chunk.extend_from_slice(&block);
            chunk.extend_from_slice(b"\r\n");
            tcp.write_all(&chunk).await
        } else {
            tcp.write_all(&block).await
        };
        if result.is_err() {
            return written;
        }
        written += block.len() as u64;
    }
}

fn assert_excerpt_capped(got: &Response) {
    assert!(
        got.excerpt.len() <= MAX_EXCERPT,
        "excerpt is {} bytes",
        got.excerpt.len()
    );
    // A `String` is valid UTF-8 by construction; the bytes must also survive a round trip.
    assert!(std::str::from_utf8(got.excerpt.as_bytes()).is_ok());
}

/// The receiver task ends once the client has dropped the connection; a bound on the wait
/// keeps a broken client from hanging the test.
async fn written_by(task: JoinHandle<u64>) -> u64 {
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the client never dropped the connection")
        .unwrap()
}

#[tokio::test]
async fn a_50_mb_answer_is_read_only_up_to_the_cap() {
    let (url, task) = receiver(|tcp| flood(tcp, false, b'a', Some(HUGE))).await;
    let got = sender(Duration::from_secs(30))
        .post(&url, HeaderMap::new(), b"{}".to_vec())
        .await;
    assert_eq!(got.status, Some(200), "{got:?}");
    // Reading all 50 MB would not be cut short; no error means the client stopped itself.
    assert_eq!(got.error, None, "{got:?}");
    assert_excerpt_capped(&got);
    assert_eq!(got.excerpt, "a".repeat(MAX_EXCERPT));
    let written = written_by(task).await;
    assert!(
        written < HUGE,
        "the receiver wrote all {written} bytes: the client read the whole body"
    );
}

#[tokio::test]
async fn an_endless_chunked_answer_is_cut_at_the_cap() {
    let (url, task) = receiver(|tcp| flood(tcp, true, b'z', None)).await;
    let got = sender(Duration::from_secs(30))
        .post(&url, HeaderMap::new(), b"{}".to_vec())
        .await;
    assert_eq!(got.status, Some(200), "{got:?}");
    assert_eq!(got.error, None, "an endless body was read until {got:?}");
    assert_excerpt_capped(&got);
    let written = written_by(task).await;
    // Socket buffers hold a few MB at most; the client read a small part of it.
    assert!(written >= MAX_RESPONSE_READ as u64);
}

#[tokio::test]
async fn an_answer_of_invalid_utf8_leaves_an_excerpt_of_at_most_1_kib() {
    // Each invalid byte decodes to a three-byte U+FFFD.
    let (url, task) = receiver(|tcp| flood(tcp, false, 0xff, Some(HUGE))).await;
    let got = sender(Duration::from_secs(30))
        .post(&url, HeaderMap::new(), b"{}".to_vec())
        .await;
    assert_eq!(got.status, Some(200), "{got:?}");
    assert_excerpt_capped(&got);
    assert!(got
        .excerpt
        .chars()
        .all(|c| c == char::REPLACEMENT_CHARACTER));
    assert!(!got.excerpt.is_empty());
    assert!(written_by(task).await < HUGE);
}

#[tokio::test]
async fn a_multibyte_character_across_the_cap_is_not_split() {
    // "a" then two-byte characters: byte 1024 falls in the middle of one.
    let body = format!("a{}", "é".repeat(2000));
    let len = body.len();
    let (url, _task) = receiver(move |mut tcp| async move {
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(body.as_bytes()).await.unwrap();
        len as u64
    })
    .await;
    let got = sender(Duration::from_secs(30))
        .post(&url, HeaderMap::new(), b"{}".to_vec())
        .await;
    assert_eq!(got.status, Some(200), "{got:?}");
    assert_excerpt_capped(&got);
    assert_eq!(got.excerpt, format!("a{}", "é".repeat(511)));
}

/// Sends the status line and headers, then one body byte every 100 ms.
async fn trickle_body(mut tcp: TcpStream) -> u64 {
    let head = "HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n";
    if tcp.write_all(head.as_bytes()).await.is_err() {
        return 0;
    }
    let mut sent = 0;
    while tcp.write_all(b"x").await.is_ok() {
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sent
}

#[tokio::test]
async fn a_body_trickled_byte_by_byte_is_cut_by_the_timeout() {
    let (url, task) = receiver(trickle_body).await;
    let got = sender(Duration::from_secs(1))
        .post(&url, HeaderMap::new(), b"{}".to_vec())
        .await;
    // The status arrived, the body never finished within the request's timeout.
    assert_eq!(got.status, Some(200), "{got:?}");
    assert_eq!(got.error.as_deref(), Some("body_timeout"), "{got:?}");
    assert_excerpt_capped(&got);
    assert!(got.excerpt.chars().all(|c| c == 'x'), "{got:?}");
    // At 10 bytes a second the 100 000 promised never came.
    assert!(written_by(task).await < 100_000);
}

#[tokio::test]
async fn headers_trickled_byte_by_byte_are_cut_by_the_timeout() {
    let (url, task) = receiver(|mut tcp| async move {
        let mut sent = 0;
        for byte in b"HTTP/1.1 200 OK\r\nx-slow: "
            .iter()
            .chain([b'a'; 10_000].iter())
        {
            if tcp.write_all(&[*byte]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sent
    })
    .await;
    let got = sender(Duration::from_secs(1))
        .post(&url, HeaderMap::new(), b"{}".to_vec())
        .await;
    assert_eq!(got.status, None, "{got:?}");
    assert_eq!(got.error.as_deref(), Some("timeout"), "{got:?}");
    assert_excerpt_capped(&got);
    assert!(written_by(task).await < 10_000);
}
