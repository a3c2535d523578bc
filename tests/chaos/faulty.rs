//! A webhook receiver that misbehaves on purpose. It speaks HTTP/1.1 over raw tokio TCP so
//! it can fail at the byte level (resets, bodies cut short, answers that never come), picks
//! each answer from a deterministic plan keyed on (endpoint path, `webhook-id`, how many
//! requests of that pair it has seen), and records every request with the answer it gave.
//! Shared by the local-mode chaos suite and the deliver crate's suite on moto.
// Each suite that includes this file uses part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The path requests are redirected to. Nothing should ever arrive there: Hookline does
/// not follow redirects.
pub const TRAP_PATH: &str = "/trap";

/// Most bytes of a request's head, and of its body, the receiver accepts.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Length announced by [`Answer::SlowHuge`]; far more than any client should read.
pub const HUGE_LENGTH: usize = 256 * 1024 * 1024;
/// Bytes per write of [`Answer::SlowHuge`], and the pause between writes.
const SLOW_CHUNK: usize = 16 * 1024;
const SLOW_PAUSE: Duration = Duration::from_millis(10);

/// What the receiver does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A complete answer with this status (2xx, 400, 406, 410, 500, …).
    Status(u16),
    /// 429 with `Retry-After: <seconds>`.
    TooMany { retry_after_secs: u64 },
    /// Reads the request and never answers; the connection stays open until the client
    /// gives up (or the receiver's hang limit passes).
    Hang,
    /// Reads the request, then resets the connection (`SO_LINGER` 0, then close).
    Reset,
    /// Sends the status line and headers with a `Content-Length` larger than the part of
    /// the body that follows, then closes.
    CloseMidBody { status: u16 },
    /// A complete answer with this status after a pause.
    Late { status: u16, after_ms: u64 },
    /// 302 to [`TRAP_PATH`] on this receiver.
    Redirect,
    /// Sends the status and announces a [`HUGE_LENGTH`] body, then trickles it until the
    /// client hangs up.
    SlowHuge { status: u16 },
}

impl Answer {
    /// The status the client receives, if it receives one.
    pub fn status(self) -> Option<u16> {
        match self {
            Answer::Status(s)
            | Answer::Late { status: s, .. }
            | Answer::CloseMidBody { status: s }
            | Answer::SlowHuge { status: s } => Some(s),
            Answer::TooMany { .. } => Some(429),
            Answer::Redirect => Some(302),
            Answer::Hang | Answer::Reset => None,
        }
    }

    /// True when a client that honours the status sees success.
    pub fn is_success(self) -> bool {
        self.status().is_some_and(|s| (200..300).contains(&s))
    }
}

/// Chooses the answer to the `number`th request (1-based) the receiver has seen for
/// (`endpoint` path, `webhook_id`).
pub type Plan = Arc<dyn Fn(&str, &str, u32) -> Answer + Send + Sync>;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The request path, e.g. `/a`.
    pub endpoint: String,
    /// The `webhook-id` header, empty when absent.
    pub webhook_id: String,
    /// Which request of this (endpoint, webhook id) pair it was, from 1.
    pub number: u32,
    /// When the whole request had been read, before answering.
    pub at: Instant,
    pub answer: Answer,
}

struct Shared {
    plan: Plan,
    seen: Mutex<Vec<Seen>>,
    counts: Mutex<HashMap<(String, String), u32>>,
    trap_hits: AtomicUsize,
    /// Requests being read or answered right now.
    open: AtomicUsize,
    hang_limit: Duration,
    addr: SocketAddr,
}

/// A running fault-injecting receiver on a loopback port.
#[derive(Clone)]
pub struct FaultyReceiver {
    shared: Arc<Shared>,
}

impl FaultyReceiver {
    /// Starts a receiver on 127.0.0.1 answering by `plan`. A hanging answer is given up
    /// after `hang_limit` at the latest.
    pub async fn start(plan: Plan, hang_limit: Duration) -> FaultyReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            plan,
            seen: Mutex::new(Vec::new()),
            counts: Mutex::new(HashMap::new()),
            trap_hits: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            hang_limit,
            addr,
        });
        let accepting = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = accepting.clone();
                tokio::spawn(async move {
                    let _ = serve(shared, stream).await;
                });
            }
        });
        FaultyReceiver { shared }
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The URL of an endpoint path on this receiver, e.g. `url("/a")`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.shared.addr, path)
    }

    /// Every request seen so far (the trap's excluded), in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.shared.seen.lock().unwrap().len()
    }

    /// Requests that reached [`TRAP_PATH`], i.e. followed a redirect.
    pub fn trap_hits(&self) -> usize {
        self.shared.trap_hits.load(Ordering::SeqCst)
    }

    /// Connections being read or answered right now.
    pub fn open_requests(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Waits until `n` requests arrived; panics after `within`.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Seen> {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.seen();
            if seen.len() >= n {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver got {} requests, expected {n}",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// What the receiver keeps of a request.
struct Request {
    path: String,
    webhook_id: String,
}

/// Serves requests on one connection until it closes or an answer ends it.
async fn serve(shared: Arc<Shared>, mut stream: TcpStream) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        shared.open.fetch_add(1, Ordering::SeqCst);
        let result = answer(&shared, &mut stream, request).await;
        shared.open.fetch_sub(1, Ordering::SeqCst);
        if !result? {
            return Ok(());
        }
    }
}

/// Answers one request; returns whether the connection may carry another.
async fn answer(shared: &Shared, stream: &mut TcpStream, req: Request) -> std::io::Result<bool> {
    if req.path == TRAP_PATH {
        shared.trap_hits.fetch_add(1, Ordering::SeqCst);
        stream.write_all(&head(200, 2, &[])).await?;
        stream.write_all(b"ok").await?;
        return Ok(true);
    }
    let number = {
        let mut counts = shared.counts.lock().unwrap();
        let n = counts
            .entry((req.path.clone(), req.webhook_id.clone()))
            .or_insert(0);
        *n += 1;
        *n
    };
    let answer = (shared.plan)(&req.path, &req.webhook_id, number);
    shared.seen.lock().unwrap().push(Seen {
        endpoint: req.path,
        webhook_id: req.webhook_id,
        number,
        at: Instant::now(),
        answer,
    });
    match answer {
        Answer::Status(status) => {
            let body = format!("answer {status}");
            stream.write_all(&head(status, body.len(), &[])).await?;
            stream.write_all(body.as_bytes()).await?;
            Ok(true)
        }
        Answer::Late { status, after_ms } => {
            tokio::time::sleep(Duration::from_millis(after_ms)).await;
            let body = format!("answer {status}");
            stream.write_all(&head(status, body.len(), &[])).await?;
            stream.write_all(body.as_bytes()).await?;
            Ok(true)
        }
        Answer::TooMany { retry_after_secs } => {
            let wait = retry_after_secs.to_string();
            stream
                .write_all(&head(429, 0, &[("Retry-After", &wait)]))
                .await?;
            Ok(true)
        }
        Answer::Redirect => {
            let location = format!("http://{}{TRAP_PATH}", shared.addr);
            stream
                .write_all(&head(302, 0, &[("Location", &location)]))
                .await?;
            Ok(true)
        }
        Answer::Hang => {
            // Drain until the client hangs up; anything it sends is ignored.
            let mut sink = [0u8; 1024];
            let _ = tokio::time::timeout(shared.hang_limit, async {
                loop {
                    match stream.read(&mut sink).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            Ok(false)
        }
        Answer::Reset => {
            // With a zero linger time, closing sends RST instead of FIN.
            socket2::SockRef::from(&*stream).set_linger(Some(Duration::ZERO))?;
            Ok(false)
        }
        Answer::CloseMidBody { status } => {
            let sent = b"{\"partial\":";
            stream.write_all(&head(status, 4096, &[])).await?;
            stream.write_all(sent).await?;
            stream.flush().await?;
            stream.shutdown().await?;
            Ok(false)
        }
        Answer::SlowHuge { status } => {
            stream.write_all(&head(status, HUGE_LENGTH, &[])).await?;
            let chunk = vec![b'x'; SLOW_CHUNK];
            let deadline = Instant::now() + shared.hang_limit;
            let mut written = 0;
            while written < HUGE_LENGTH && Instant::now() < deadline {
                // The client hanging up ends this with an error.
                stream.write_all(&chunk).await?;
                written += chunk.len();
                tokio::time::sleep(SLOW_PAUSE).await;
            }
            Ok(false)
        }
    }
}

/// A response head with `Content-Length: len` and extra headers.
fn head(status: u16, len: usize, extra: &[(&str, &str)]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        302 => "Found",
        400 => "Bad Request",
        406 => "Not Acceptable",
        410 => "Gone",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Status",
    };
    let mut text = format!("HTTP/1.1 {status} {reason}\r\nContent-Length: {len}\r\n");
    for (name, value) in extra {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("Content-Type: text/plain\r\n\r\n");
    text.into_bytes()
}

/// Reads one request with a `Content-Length` body (what Hookline sends). `None` when the
/// connection closed cleanly before a new request began.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Request>> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut chunk = [0u8; 8192];
    let (head_len, path, webhook_id, body_len) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(buf).map_err(|e| invalid(&e.to_string()))? {
            httparse::Status::Complete(len) => {
                let header = |name: &str| {
                    parsed
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).into_owned())
                };
                let body_len = match header("content-length") {
                    Some(v) => v
                        .trim()
                        .parse::<usize>()
                        .map_err(|_| invalid("content-length"))?,
                    None => 0,
                };
                if body_len > MAX_BODY {
                    return Err(invalid("body too large"));
                }
                let path = parsed.path.unwrap_or("/").to_string();
                break (
                    len,
                    path,
                    header("webhook-id").unwrap_or_default(),
                    body_len,
                );
            }
            httparse::Status::Partial => {
                if buf.len() > MAX_HEAD {
                    return Err(invalid("request head too large"));
                }
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return if buf.is_empty() {
                        Ok(None)
                    } else {
                        Err(invalid("closed mid-request"))
                    };
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    };
    while buf.len() < head_len + body_len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(invalid("closed mid-body"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.drain(..head_len + body_len);
    Ok(Some(Request { path, webhook_id }))
}
