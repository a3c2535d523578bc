//! The Lambda functions measured as they run on AWS, without AWS: each bootstrap under a
//! runtime API emulator, against DynamoDB and SQS on a loopback moto_server behind a
//! counting proxy. Measures init time, memory and batch time of the deliver function, and
//! the AWS calls (with billing units) that the happy path makes per delivered event.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::emulator::Emulator;
use crate::local::free_port;
use crate::procstat;
use crate::proxy::{Counts, Proxy};
use crate::receiver::Receiver;

const OPERATOR_KEY: &str = "hkop_bench-operator-key-0123456789abcdef";
const FUNCTIONS: [&str; 3] = ["api", "ingest", "deliver"];
const INVOKE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(clap::Args, Debug, Clone)]
pub struct LambdaArgs {
    /// Directory of the native builds of hookline-api, hookline-ingest and hookline-deliver.
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// moto_server's URL; without it, moto_server is started on a free loopback port.
    #[arg(long, env = "HOOKLINE_TEST_AWS_ENDPOINT")]
    pub moto: Option<String>,
    /// The moto_server program to start (default: .venv/bin or /tmp/venv/bin).
    #[arg(long)]
    pub moto_server: Option<PathBuf>,
    /// Starts per function for the init time.
    #[arg(long, default_value_t = 20)]
    pub starts: usize,
    /// SQS messages in the measured deliver batch.
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// Endpoints each event of the measured batch goes to.
    #[arg(long, default_value_t = 3)]
    pub endpoints: usize,
    /// How long the receiver of the measured batch takes to answer, in ms.
    #[arg(long, default_value_t = 200)]
    pub receiver_latency_ms: u64,
    /// Events published per AWS-cost scenario.
    #[arg(long, default_value_t = 200)]
    pub cost_events: usize,
    /// Events per publish request in the AWS-cost scenarios (ingest takes up to 100).
    #[arg(long, default_value_t = 100)]
    pub publish_batch: usize,
    /// Events (3 endpoints, 1.5 KB payloads, one idempotency key each) whose DynamoDB
    /// load per partition key is measured for the partition-key projection.
    #[arg(long, default_value_t = 200)]
    pub key_events: usize,
    /// The rate of one tenant the partition-key projection is made for, events/s.
    #[arg(long, default_value_t = 10_000)]
    pub key_rate: usize,
    /// Warm function instances assumed by the projection: each reads a cached record
    /// (endpoint list, API key) once per cache lifetime.
    #[arg(long, default_value_t = 200)]
    pub key_instances: usize,
    /// Also write the results here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Binary {
    pub function: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct InitTime {
    pub function: String,
    pub starts: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BatchResult {
    pub messages: usize,
    pub endpoints: usize,
    pub receiver_latency_ms: u64,
    /// Deliveries of each of the two batches.
    pub deliveries: Vec<u64>,
    /// The first batch of a fresh process, and a second one once warm.
    pub cold_wall_ms: f64,
    pub warm_wall_ms: f64,
    /// A warm batch of the same shape to a receiver that answers at once: the difference
    /// is what the receiver's latency adds (about one latency if deliveries run at once).
    pub warm_wall_ms_fast_receiver: f64,
    pub peak_rss_mib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CostScenario {
    pub endpoints: usize,
    pub events: usize,
    pub events_per_request: usize,
    /// The mean size of the events' payloads (Mailgun `event-data`), in bytes.
    pub payload_bytes: usize,
    pub deliveries: u64,
    pub ingest: Counts,
    pub deliver: Counts,
    /// What the event source mapping did, played by the bench: receives and deletes.
    pub event_source: Counts,
    pub deliver_invocations: u64,
    /// Calls the functions make (ingest + deliver), per event and per delivery.
    pub calls_per_event: f64,
    pub calls_per_delivery: f64,
    /// With the event source's receives and deletes.
    pub calls_per_delivery_with_event_source: f64,
    pub wru_per_delivery: f64,
    pub rru_per_delivery: f64,
    pub sqs_requests_per_delivery: f64,
    /// Per publish request.
    pub ingest_ms_mean: f64,
    pub deliver_ms_per_invocation_mean: f64,
}

/// One kind of partition key (ids and shard numbers hidden, see
/// [`crate::proxy::key_family`]): what the measured events put on it, and the most units
/// one key of it would receive in a second at the projected rate.
#[derive(Debug, Clone, Serialize)]
pub struct KeyFamily {
    pub family: String,
    /// Distinct keys of the family the measured events touched.
    pub keys: usize,
    pub calls_per_event: f64,
    pub wru_per_event: f64,
    pub rru_per_event: f64,
    /// How the projection scales the family: `sharded`, `per message`, `per event`
    /// (one key read or written by every event), or `cached` (read once per cache
    /// lifetime per warm instance).
    pub scaling: String,
    pub peak_wru_per_s: f64,
    pub peak_rru_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyLoad {
    pub events: usize,
    pub endpoints: usize,
    pub payload_bytes: usize,
    pub rate: usize,
    pub instances: usize,
    /// Of `rate` message ids (and idempotency keys) minted in one second, the most that
    /// fall on one shard key: the real key functions, so the real imbalance.
    pub max_messages_per_shard: usize,
    pub max_bindings_per_shard: usize,
    pub families: Vec<KeyFamily>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LambdaResult {
    pub binaries: Vec<Binary>,
    pub init: Vec<InitTime>,
    pub deliver_batch: BatchResult,
    pub cost: Vec<CostScenario>,
    pub keys: KeyLoad,
}

/// moto_server started by the bench, stopped when dropped.
pub struct Moto {
    pub url: String,
    _child: Option<Child>,
}

impl Moto {
    pub async fn ensure(url: Option<String>, program: Option<PathBuf>) -> anyhow::Result<Self> {
        if let Some(url) = url.filter(|u| !u.trim().is_empty()) {
            return Ok(Moto { url, _child: None });
        }
        let program = program
            .or_else(|| {
                [".venv/bin/moto_server", "/tmp/venv/bin/moto_server"]
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.exists())
            })
            .context("no moto_server: pass --moto URL or --moto-server PATH")?;
        let port = free_port()?;
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("moto_server did not listen within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Moto {
            url: format!("http://127.0.0.1:{port}"),
            _child: Some(child),
        })
    }
}

/// A function process under its own emulator, killed when dropped.
struct Function {
    child: Child,
    pid: u32,
    emulator: Emulator,
    spawned: Instant,
}

impl Function {
    async fn spawn(bin: &Path, env: &[(String, String)]) -> anyhow::Result<Self> {
        let emulator = Emulator::start().await?;
        let name = bin.file_name().and_then(|n| n.to_str()).unwrap_or("bench");
        let mut command = Command::new(bin);
        // Only what the template sets, so nothing can reach a real AWS account.
        command
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AWS_LAMBDA_RUNTIME_API", &emulator.addr)
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let spawned = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("no pid")?;
        Ok(Function {
            child,
            pid,
            emulator,
            spawned,
        })
    }

    /// Time from the process start to its first request for an invocation.
    async fn init_time(&self) -> anyhow::Result<Duration> {
        let at = self.emulator.first_next(Duration::from_secs(30)).await?;
        Ok(at.duration_since(self.spawned))
    }

    async fn invoke(&self, payload: Value) -> anyhow::Result<Value> {
        self.emulator.invoke(payload, INVOKE_TIMEOUT).await
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// An API Gateway HTTP API (payload 2.0) request.
fn http_event(method: &str, path: &str, key: &str, body: Option<Value>) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "authorization": format!("Bearer {key}"),
            "content-type": "application/json",
            "host": "bench.execute-api.us-east-1.amazonaws.com",
            "x-forwarded-proto": "https"
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "bench",
            "domainName": "bench.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "bench",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "hookline-bench"
            },
            "requestId": ulid::Ulid::new().to_string(),
            "routeKey": "$default",
            "stage": "$default",
            "time": "01/Jan/2026:00:00:00 +0000",
            "timeEpoch": now
        },
        "isBase64Encoded": false,
        "body": body.map(|b| b.to_string())
    })
}

/// Calls an HTTP function and returns status and JSON body.
async fn call(
    f: &Function,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let answer = f.invoke(http_event(method, path, key, body)).await?;
    let status = answer["statusCode"].as_u64().unwrap_or(0) as u16;
    let body = answer["body"]
        .as_str()
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    Ok((status, body))
}

struct Aws {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    queue_arn: String,
}

impl Aws {
    /// Receives up to `want` messages, as the event source mapping would (up to 10 a call).
    async fn receive(
        &self,
        want: usize,
        within: Duration,
    ) -> anyhow::Result<Vec<aws_sdk_sqs::types::Message>> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while got.len() < want && Instant::now() < deadline {
            let answer = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages((want - got.len()).min(10) as i32)
                .wait_time_seconds(1)
                .visibility_timeout(300)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await?;
            got.extend(answer.messages.unwrap_or_default());
        }
        Ok(got)
    }

    fn sqs_event(&self, messages: &[aws_sdk_sqs::types::Message]) -> Value {
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                let attributes: serde_json::Map<String, Value> = m
                    .attributes()
                    .map(|a| {
                        a.iter()
                            .map(|(k, v)| (k.as_str().to_string(), Value::String(v.clone())))
                            .collect()
                    })
                    .unwrap_or_default();
                // As the event source passes them: the function counts a message's waits
                // in one.
                let message_attributes: serde_json::Map<String, Value> = m
                    .message_attributes()
                    .map(|a| {
                        a.iter()
                            .map(|(name, v)| {
                                let value = json!({
                                    "stringValue": v.string_value(),
                                    "stringListValues": [],
                                    "binaryListValues": [],
                                    "dataType": v.data_type(),
                                });
                                (name.clone(), value)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                json!({
                    "messageId": m.message_id(),
                    "receiptHandle": m.receipt_handle(),
                    "body": m.body(),
                    "attributes": attributes,
                    "messageAttributes": message_attributes,
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.queue_arn,
                    "awsRegion": "us-east-1"
                })
            })
            .collect();
        json!({ "Records": records })
    }

    /// Deletes the messages the function did not report as failures.
    async fn delete_done(
        &self,
        messages: &[aws_sdk_sqs::types::Message],
        answer: &Value,
    ) -> anyhow::Result<()> {
        let failed: Vec<&str> = answer["batchItemFailures"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["itemIdentifier"].as_str())
            .collect();
        let entries: Vec<_> = messages
            .iter()
            .filter(|m| !failed.contains(&m.message_id().unwrap_or_default()))
            .enumerate()
            .map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .build()
            })
            .collect::<Result<_, _>>()?;
        if !entries.is_empty() {
            self.sqs
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await?;
        }
        Ok(())
    }
}

fn bin(dir: &Path, function: &str) -> PathBuf {
    dir.join(format!("hookline-{function}"))
}

pub async fn run(args: &LambdaArgs) -> anyhow::Result<LambdaResult> {
    let mut binaries = Vec::new();
    for f in FUNCTIONS {
        let path = bin(&args.bin_dir, f);
        let bytes = std::fs::metadata(&path)
            .with_context(|| {
                format!(
                    "{}: build it with `cargo build --release -p hookline-{f}`",
                    path.display()
                )
            })?
            .len();
        binaries.push(Binary {
            function: f.to_string(),
            bytes,
        });
    }

    let moto = Moto::ensure(args.moto.clone(), args.moto_server.clone()).await?;
    let proxy = Proxy::start(&moto.url).await?;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(hookline_core::aws::sdk_http_client())
        .endpoint_url(&moto.url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "moto",
        ))
        .load()
        .await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let name = format!(
        "hookline-bench-{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    hookline_core::aws::create_table(&ddb, &name).await?;
    let (queue_url, dlq_url) = hookline_core::aws::create_queue_pair(&sqs, &name).await?;
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|mut a| a.remove(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .unwrap_or_default();
    let aws = Aws {
        sqs,
        queue_url: queue_url.clone(),
        queue_arn,
    };
    let env: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("TABLE_NAME", name.as_str()),
        ("QUEUE_URL", queue_url.as_str()),
        ("DLQ_URL", dlq_url.as_str()),
        ("HOOKLINE_OPERATOR_KEY", OPERATOR_KEY),
        ("HOOKLINE_ALLOW_HTTP", "true"),
        ("HOOKLINE_ALLOWED_NETWORKS", "127.0.0.1/32"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    // Init: process start to the first `next`, on fresh processes.
    let mut init = Vec::new();
    for f in FUNCTIONS {
        let mut times = Vec::new();
        for _ in 0..args.starts {
            let function = Function::spawn(&bin(&args.bin_dir, f), &env).await?;
            let t = function
                .init_time()
                .await
                .with_context(|| format!("init of {f}"))?;
            times.push(t.as_secs_f64() * 1000.0);
            function.stop().await;
        }
        times.sort_by(f64::total_cmp);
        init.push(InitTime {
            function: f.to_string(),
            starts: times.len(),
            median_ms: times[times.len() / 2],
            min_ms: times[0],
            max_ms: times[times.len() - 1],
        });
        eprintln!(
            "lambda: init of {f}: median {:.1} ms",
            times[times.len() / 2]
        );
    }
    let _ = proxy.take();

    // Tenants and endpoints, through the api function.
    let slow = Receiver::start(Duration::from_millis(args.receiver_latency_ms)).await?;
    let fast = Receiver::start(Duration::ZERO).await?;
    let api = Function::spawn(&bin(&args.bin_dir, "api"), &env).await?;
    let batch_key = tenant_with_endpoints(&api, &slow.url, args.endpoints).await?;
    let mut cost_keys = Vec::new();
    let mut shapes = vec![1usize, 3];
    if !shapes.contains(&args.endpoints) {
        shapes.push(args.endpoints);
    }
    for n in shapes {
        let fast_tenant_url = format!("{}/t{n}", fast.url);
        cost_keys.push((n, tenant_with_endpoints(&api, &fast_tenant_url, n).await?));
    }
    api.stop().await;
    let ingest = Function::spawn(&bin(&args.bin_dir, "ingest"), &env).await?;
    let _ = proxy.take();

    // The deliver function's batch: a fresh process, a cold batch then a warm one.
    let deliver = Function::spawn(&bin(&args.bin_dir, "deliver"), &env).await?;
    let mut walls = Vec::new();
    let mut counts = Vec::new();
    for _ in 0..2 {
        let before = slow.count();
        for _ in 0..args.batch {
            publish(&ingest, &batch_key).await?;
        }
        let messages = aws.receive(args.batch, Duration::from_secs(30)).await?;
        if messages.len() < args.batch {
            bail!(
                "only {} of {} messages on the queue",
                messages.len(),
                args.batch
            );
        }
        let started = Instant::now();
        let answer = deliver.invoke(aws.sqs_event(&messages)).await?;
        walls.push(started.elapsed().as_secs_f64() * 1000.0);
        counts.push(slow.count() - before);
        aws.delete_done(&messages, &answer).await?;
    }
    // The same shape to the receiver that answers at once.
    let fast_key = tenant_with_endpoints_key(&cost_keys, args.endpoints)?;
    for _ in 0..args.batch {
        publish(&ingest, &fast_key).await?;
    }
    let messages = aws.receive(args.batch, Duration::from_secs(30)).await?;
    let started = Instant::now();
    let answer = deliver.invoke(aws.sqs_event(&messages)).await?;
    let fast_wall = started.elapsed().as_secs_f64() * 1000.0;
    aws.delete_done(&messages, &answer).await?;
    let deliver_batch = BatchResult {
        messages: args.batch,
        endpoints: args.endpoints,
        receiver_latency_ms: args.receiver_latency_ms,
        deliveries: counts,
        cold_wall_ms: walls[0],
        warm_wall_ms: walls[1],
        warm_wall_ms_fast_receiver: fast_wall,
        peak_rss_mib: procstat::peak_rss_kib(deliver.pid)? as f64 / 1024.0,
    };
    eprintln!(
        "lambda: deliver batch of {}x{}: cold {:.0} ms, warm {:.0} ms (fast receiver {:.0} ms), RSS {:.1} MiB",
        args.batch, args.endpoints, walls[0], walls[1], fast_wall, deliver_batch.peak_rss_mib
    );
    let _ = proxy.take();

    // AWS calls per delivered event on the happy path, warm functions.
    let mut cost = Vec::new();
    for (n, key) in cost_keys.iter().filter(|(n, _)| *n == 1 || *n == 3) {
        let before = fast.count();
        let mut ingest_ms = 0.0;
        let events: Vec<Value> = (0..args.cost_events).map(mailgun_event).collect();
        let payload_bytes = events
            .iter()
            .map(|e| e["payload"].to_string().len())
            .sum::<usize>()
            / events.len().max(1);
        let per_request = args.publish_batch.max(1);
        let mut requests = 0usize;
        for chunk in events.chunks(per_request) {
            let started = Instant::now();
            publish_batch(&ingest, key, chunk).await?;
            ingest_ms += started.elapsed().as_secs_f64() * 1000.0;
            requests += 1;
        }
        let ingest_counts = proxy.take();
        let want = (args.cost_events * n) as u64;
        let mut source = Counts::new();
        let mut invocations = 0u64;
        let mut deliver_ms = 0.0;
        // Generous: on a loaded machine the debug functions against moto take seconds a
        // batch.
        let patience = Duration::from_secs(120 + 3 * args.cost_events as u64);
        let deadline = Instant::now() + patience;
        while fast.count() - before < want && Instant::now() < deadline {
            let messages = aws.receive(10, Duration::from_secs(2)).await?;
            source.entry("SQS.ReceiveMessage".into()).or_default().calls += 1;
            if messages.is_empty() {
                continue;
            }
            let started = Instant::now();
            let answer = deliver.invoke(aws.sqs_event(&messages)).await?;
            deliver_ms += started.elapsed().as_secs_f64() * 1000.0;
            invocations += 1;
            aws.delete_done(&messages, &answer).await?;
            source
                .entry("SQS.DeleteMessageBatch".into())
                .or_default()
                .calls += 1;
        }
        for c in source.values_mut() {
            c.billed_requests = c.calls;
        }
        let deliver_counts = proxy.take();
        let deliveries = fast.count() - before;
        let calls = |c: &Counts| c.values().map(|o| o.calls).sum::<u64>() as f64;
        let sum = |f: fn(&crate::proxy::OpCount) -> f64| {
            ingest_counts.values().map(f).sum::<f64>() + deliver_counts.values().map(f).sum::<f64>()
        };
        let d = deliveries.max(1) as f64;
        let function_calls = calls(&ingest_counts) + calls(&deliver_counts);
        let sqs_requests = ingest_counts
            .iter()
            .chain(deliver_counts.iter())
            .chain(source.iter())
            .filter(|(k, _)| k.starts_with("SQS."))
            .map(|(_, c)| c.billed_requests)
            .sum::<u64>() as f64;
        let scenario = CostScenario {
            endpoints: *n,
            events: args.cost_events,
            events_per_request: per_request,
            payload_bytes,
            deliveries,
            calls_per_event: function_calls / args.cost_events as f64,
            calls_per_delivery: function_calls / d,
            calls_per_delivery_with_event_source: (function_calls + calls(&source)) / d,
            wru_per_delivery: sum(|o| o.wru) / d,
            rru_per_delivery: sum(|o| o.rru) / d,
            sqs_requests_per_delivery: sqs_requests / d,
            ingest_ms_mean: ingest_ms / requests.max(1) as f64,
            deliver_ms_per_invocation_mean: deliver_ms / invocations.max(1) as f64,
            deliver_invocations: invocations,
            ingest: ingest_counts,
            deliver: deliver_counts,
            event_source: source,
        };
        eprintln!(
            "lambda: cost with {n} endpoint(s): {:.2} calls/delivery, {:.2} WRU/delivery",
            scenario.calls_per_delivery, scenario.wru_per_delivery
        );
        cost.push(scenario);
    }

    // The load per partition key of one tenant's events, 3 endpoints each.
    let key = tenant_with_endpoints_key(&cost_keys, 3)?;
    let _ = proxy.take_keys();
    let before = fast.count();
    let payload = mailgun_payload();
    for i in 0..args.key_events {
        publish_event(&ingest, &key, &payload, &format!("evt-{i}")).await?;
    }
    let want = (args.key_events * 3) as u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    while fast.count() - before < want && Instant::now() < deadline {
        let messages = aws.receive(10, Duration::from_secs(2)).await?;
        if messages.is_empty() {
            continue;
        }
        let answer = deliver.invoke(aws.sqs_event(&messages)).await?;
        aws.delete_done(&messages, &answer).await?;
    }
    if fast.count() - before < want {
        bail!("only {} of {want} deliveries", fast.count() - before);
    }
    let keys = key_load(args, &proxy.take_keys(), payload.to_string().len());
    deliver.stop().await;
    ingest.stop().await;
    Ok(LambdaResult {
        binaries,
        init,
        deliver_batch,
        cost,
        keys,
    })
}

/// A Mailgun `event-data` of about 1.5 KB.
fn mailgun_payload() -> Value {
    json!({
        "event": "delivered",
        "id": "W3X4Y5Z6a7b8c9d0e1f2g3",
        "timestamp": 1_700_000_000.123_456,
        "log-level": "info",
        "recipient": "alice@example.com",
        "recipient-domain": "example.com",
        "envelope": {"sender": "bob@mg.example.com", "transport": "smtp", "targets": "alice@example.com", "sending-ip": "198.51.100.7"},
        "message": {"headers": {"to": "Alice <alice@example.com>", "message-id": "20231114221320.1.ABCDEF0123456789@mg.example.com", "from": "Bob <bob@mg.example.com>", "subject": "Your order #123456 has shipped and is on its way to you"}, "attachments": [], "size": 18_345},
        "delivery-status": {"tls": true, "mx-host": "mx.example.com", "code": 250, "description": "", "session-seconds": 0.482, "utf8": true, "attempt-no": 1, "message": "OK 1700000000 a1b2c3d4e5f6 - gsmtp", "certificate-verified": true},
        "flags": {"is-routed": false, "is-authenticated": true, "is-system-test": false, "is-test-mode": false},
        "tags": ["shipping", "transactional", "order-updates"],
        "campaigns": [],
        "user-variables": {"order_id": "123456", "customer_id": "cus_9f8e7d6c5b4a", "locale": "en-GB", "plan": "business"},
        "storage": {"url": "https://storage-us-east4.api.mailgun.net/v3/domains/mg.example.com/messages/BAABAQdGGRlZ2VudHMiOltdLCJpZCI6IjEyMzQ1Njc4OTAifQ==", "key": "BAABAQdGGRlZ2VudHMiOltdLCJpZCI6IjEyMzQ1Njc4OTAifQ==", "region": "us-east4"},
        "geolocation": {"country": "GB", "region": "ENG", "city": "London"},
        "client-info": {"client-type": "browser", "client-os": "Linux", "device-type": "desktop", "client-name": "Firefox", "user-agent": "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"},
        "batch": {"id": "654321fedcba0987654321ab"}
    })
}

async fn publish_event(
    ingest: &Function,
    key: &str,
    payload: &Value,
    idempotency_key: &str,
) -> anyhow::Result<()> {
    let event =
        json!({"type": "delivered", "payload": payload, "idempotency_key": idempotency_key});
    let (status, body) = call(ingest, "POST", "/v1/events", key, Some(event)).await?;
    if status != 202 {
        bail!("publishing: {status} {body}");
    }
    Ok(())
}

/// How long the warm functions keep an endpoint list or an API key (cache.rs).
const CACHE_SECONDS: f64 = 5.0;

/// The measured load per key, and the most one key would receive in a second at
/// `args.key_rate` events/s. moto serves far less than that, so time is compressed by
/// counting per event and scaling by how a key is chosen rather than by timing windows:
/// a shard key receives the events of its shard (the most of `rate` fresh ids that fall on
/// one shard, from the real key functions) times the units per event; a per-message key
/// keeps what one message put on it; a key every event touches scales with the rate; a
/// key read through the caches is read once per cache lifetime per warm instance.
fn key_load(args: &LambdaArgs, counts: &crate::proxy::KeyCounts, payload_bytes: usize) -> KeyLoad {
    use hookline_core::aws::dynamo::{idempotency_key, message_key};
    use hookline_core::ids::{MessageId, TenantId};
    use std::collections::{BTreeMap, HashMap};

    let busiest = |pks: Vec<String>| {
        let mut n: HashMap<String, usize> = HashMap::new();
        for pk in pks {
            *n.entry(pk).or_default() += 1;
        }
        n.into_values().max().unwrap_or(0)
    };
    let tenant = TenantId::new();
    let max_messages_per_shard = busiest(
        (0..args.key_rate)
            .map(|_| message_key(tenant, MessageId::new()).0)
            .collect(),
    );
    let max_bindings_per_shard = busiest(
        (0..args.key_rate)
            .map(|i| idempotency_key(tenant, &format!("evt-{i}")).0)
            .collect(),
    );

    let events = args.key_events.max(1) as f64;
    let rate = args.key_rate as f64;
    let mut grouped: BTreeMap<String, Vec<&crate::proxy::KeyCount>> = BTreeMap::new();
    for (key, count) in counts {
        grouped
            .entry(crate::proxy::key_family(key))
            .or_default()
            .push(count);
    }
    let mut families: Vec<KeyFamily> = grouped
        .into_iter()
        .map(|(family, keys)| {
            let calls: u64 = keys.iter().map(|k| k.calls).sum();
            let wru: f64 = keys.iter().map(|k| k.wru).sum();
            let rru: f64 = keys.iter().map(|k| k.rru).sum();
            let (wru_e, rru_e, calls_e) = (wru / events, rru / events, calls as f64 / events);
            let (scaling, peak_wru, peak_rru) = if family.contains("#S<nn>") {
                let n = max_messages_per_shard as f64;
                ("sharded", wru_e * n, rru_e * n)
            } else if family.contains("#I<nn>") {
                let n = max_bindings_per_shard as f64;
                ("sharded", wru_e * n, rru_e * n)
            } else if family.contains("<message>") {
                let most =
                    |f: fn(&&crate::proxy::KeyCount) -> f64| keys.iter().map(f).fold(0.0, f64::max);
                ("per message", most(|k| k.wru), most(|k| k.rru))
            } else if calls_e >= 0.5 {
                ("per event", wru_e * rate, rru_e * rate)
            } else {
                let per_call = |units: f64| units / calls.max(1) as f64;
                let reads = args.key_instances as f64 / CACHE_SECONDS;
                ("cached", per_call(wru) * reads, per_call(rru) * reads)
            };
            KeyFamily {
                family,
                keys: keys.len(),
                calls_per_event: calls_e,
                wru_per_event: wru_e,
                rru_per_event: rru_e,
                scaling: scaling.to_string(),
                peak_wru_per_s: peak_wru,
                peak_rru_per_s: peak_rru,
            }
        })
        .collect();
    families.sort_by(|a, b| b.peak_wru_per_s.total_cmp(&a.peak_wru_per_s));
    KeyLoad {
        events: args.key_events,
        endpoints: 3,
        payload_bytes,
        rate: args.key_rate,
        instances: args.key_instances,
        max_messages_per_shard,
        max_bindings_per_shard,
        families,
    }
}

async fn tenant_with_endpoints(api: &Function, url: &str, n: usize) -> anyhow::Result<String> {
    let (status, tenant) = call(
        api,
        "POST",
        "/v1/tenants",
        OPERATOR_KEY,
        Some(json!({"name": "bench"})),
    )
    .await?;
    if status != 201 {
        bail!("creating a tenant: {status} {tenant}");
    }
    let key = tenant["api_key"]
        .as_str()
        .context("no api_key")?
        .to_string();
    for i in 0..n {
        let (status, body) = call(
            api,
            "POST",
            "/v1/endpoints",
            &key,
            Some(json!({"url": format!("{url}/{i}")})),
        )
        .await?;
        if status != 201 {
            bail!("creating an endpoint: {status} {body}");
        }
    }
    Ok(key)
}

fn tenant_with_endpoints_key(keys: &[(usize, String)], n: usize) -> anyhow::Result<String> {
    keys.iter()
        .find(|(k, _)| *k == n)
        .map(|(_, key)| key.clone())
        .context("no tenant with that many endpoints")
}

async fn publish(ingest: &Function, key: &str) -> anyhow::Result<()> {
    let event = json!({"type": "delivered", "payload": {"event": "delivered", "recipient": "alice@example.com"}});
    let (status, body) = call(ingest, "POST", "/v1/events", key, Some(event)).await?;
    if status != 202 {
        bail!("publishing: {status} {body}");
    }
    Ok(())
}

/// Publishes events in one request, as a batch.
async fn publish_batch(ingest: &Function, key: &str, events: &[Value]) -> anyhow::Result<()> {
    let body = json!({ "events": events });
    let (status, answer) = call(ingest, "POST", "/v1/events", key, Some(body)).await?;
    if status != 202 {
        bail!("publishing a batch: {status} {answer}");
    }
    Ok(())
}

/// The `n`th event of a Mailgun-shaped stream: a `delivered` event whose payload is a
/// Mailgun webhook's `event-data` (about 1.5 KB), its ids, times and addresses different
/// for every event so that compression sees what it would in production.
pub fn mailgun_event(n: usize) -> Value {
    let id = ulid::Ulid::new().to_string();
    let at = 1_795_633_200.0 + n as f64 * 0.137;
    let recipient = format!(
        "customer{:05}.{}@mail-{}.example.net",
        n * 7919 % 100_000,
        n % 97,
        n % 13
    );
    let domain = recipient.split('@').nth(1).unwrap_or_default().to_string();
    let message_id = format!(
        "20261130{:06}.{}.{}@mg.shop.example.com",
        n * 31 % 1_000_000,
        &id[..12],
        n
    );
    let payload = json!({
        "id": format!("{}-{}", &id[..16], &id[16..]),
        "timestamp": at,
        "log-level": "info",
        "event": "delivered",
        "envelope": {
            "transport": "smtp",
            "sender": "bounce+a1b2c3.1e2f@mg.shop.example.com",
            "sending-ip": format!("198.51.100.{}", n % 250 + 1),
            "targets": recipient,
        },
        "flags": {
            "is-routed": false,
            "is-authenticated": true,
            "is-system-test": false,
            "is-test-mode": false,
        },
        "delivery-status": {
            "tls": true,
            "mx-host": format!("mx{}.{}", n % 3 + 1, domain),
            "attempt-no": 1,
            "description": "",
            "session-seconds": 0.3 + (n % 50) as f64 / 100.0,
            "utf8": true,
            "code": 250,
            "message": format!("OK: queued as {}", &id[10..]),
            "certificate-verified": true,
            "enhanced-code": "2.0.0",
        },
        "message": {
            "headers": {
                "to": format!("Customer {} <{}>", n, recipient),
                "message-id": message_id,
                "from": "Example Shop <orders@shop.example.com>",
                "subject": format!("Your order #{} has shipped: tracking number 1Z{:010}", 100_000 + n, n * 104_729 % 10_000_000_000usize),
            },
            "attachments": [],
            "size": 14_000 + n * 37 % 20_000,
        },
        "recipient": recipient,
        "recipient-domain": domain,
        "storage": {
            "url": format!("https://storage-us-east4.api.mailgun.net/v3/domains/mg.shop.example.com/messages/{}", &id),
            "key": id.to_lowercase(),
            "region": "us-east4",
            "env": "production",
        },
        "campaigns": [],
        "tags": ["order-shipped", "transactional"],
        "user-variables": {
            "order-id": (100_000 + n).to_string(),
            "customer-id": format!("cus_{:08}", n * 7919 % 100_000_000),
            "store": "example-shop-us",
            "template": "order-shipped-v3",
        },
        "recipient-provider": "Other",
        "primary-dkim": "mg.shop.example.com",
        "ip-pool": { "id": "5f1e2d3c4b5a69788796a5b4", "name": "transactional" },
        "log-id": format!("{}.{}", &id[..20], n),
    });
    json!({"type": "delivered", "payload": payload})
}

/// The results as tables.
pub fn table(r: &LambdaResult) -> String {
    let mut out = String::from("| function | bootstrap bytes | init median ms | init min ms | init max ms |\n| --- | ---: | ---: | ---: | ---: |\n");
    for (b, i) in r.binaries.iter().zip(&r.init) {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} |\n",
            b.function, b.bytes, i.median_ms, i.min_ms, i.max_ms
        ));
    }
    let b = &r.deliver_batch;
    out.push_str(&format!(
        "\ndeliver batch: {} messages x {} endpoints, receiver {} ms: {:?} deliveries, cold {:.0} ms, warm {:.0} ms, warm with a receiver answering at once {:.0} ms, peak RSS {:.1} MiB\n\n",
        b.messages, b.endpoints, b.receiver_latency_ms, b.deliveries, b.cold_wall_ms, b.warm_wall_ms, b.warm_wall_ms_fast_receiver, b.peak_rss_mib
    ));
    out.push_str("| endpoints | events | per request | payload bytes | deliveries | calls/event | calls/delivery | + event source | WRU/delivery | RRU/delivery | SQS req/delivery |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for c in &r.cost {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            c.endpoints,
            c.events,
            c.events_per_request,
            c.payload_bytes,
            c.deliveries,
            c.calls_per_event,
            c.calls_per_delivery,
            c.calls_per_delivery_with_event_source,
            c.wru_per_delivery,
            c.rru_per_delivery,
            c.sqs_requests_per_delivery
        ));
    }
    let k = &r.keys;
    out.push_str(&format!(
        "\npartition keys: {} events x {} endpoints, {} B payloads, projected to {} events/s of one tenant ({} warm instances); of {} ids the busiest message shard gets {}, the busiest binding shard {}\n\n",
        k.events, k.endpoints, k.payload_bytes, k.rate, k.instances, k.rate, k.max_messages_per_shard, k.max_bindings_per_shard
    ));
    out.push_str("| key | keys touched | calls/event | WRU/event | RRU/event | scaling | peak WRU/s per key (limit 1,000) | peak RRU/s per key (limit 3,000) |\n| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |\n");
    for f in &k.families {
        out.push_str(&format!(
            "| `{}` | {} | {:.3} | {:.3} | {:.3} | {} | {:.0} | {:.0} |\n",
            f.family,
            f.keys,
            f.calls_per_event,
            f.wru_per_event,
            f.rru_per_event,
            f.scaling,
            f.peak_wru_per_s,
            f.peak_rru_per_s
        ));
    }
    for c in &r.cost {
        out.push_str(&format!(
            "\ncalls with {} endpoint(s), {} events:\n",
            c.endpoints, c.events
        ));
        for (phase, counts) in [
            ("ingest", &c.ingest),
            ("deliver", &c.deliver),
            ("event source", &c.event_source),
        ] {
            for (op, n) in counts {
                out.push_str(&format!(
                    "  {phase:<12} {op:<32} {:>5} calls  {:>6.1} WRU  {:>6.1} RRU\n",
                    n.calls, n.wru, n.rru
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailgun_events_carry_about_one_and_a_half_kilobytes_of_event_data() {
        for n in [0, 1, 99, 12_345] {
            let event = mailgun_event(n);
            let bytes = event["payload"].to_string().len();
            assert!((1400..=1650).contains(&bytes), "event {n}: {bytes} bytes");
            assert_eq!(event["payload"]["event"], "delivered");
        }
        assert_ne!(mailgun_event(1)["payload"], mailgun_event(2)["payload"]);
    }
}
