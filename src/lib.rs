//! Local mode: the api and ingest routers, the delivery worker and embedded SQLite storage
//! and queue, in one process. `cargo run` starts it; tests start it on port 0.

pub mod cli;
#[cfg(feature = "fault-injection")]
mod fault;
mod prometheus;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hookline_core::cache::CachedStore;
use hookline_core::config::{names, CoreConfig, RetentionFloor, Settings};
use hookline_core::credentials::CredentialsKey;
use hookline_core::http::AppState;
use hookline_core::keys::{KeyHash, PlainKey};
use hookline_core::ports::{PullQueue, SharedClock, SharedStore, SystemClock, TenantStore};
use hookline_core::urlpolicy::SystemResolver;
use hookline_deliver::worker::WorkerOptions;
use hookline_deliver::{Deliverer, Sender, SenderOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Local mode's settings, from the environment (or flags).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "hookline",
    version,
    about = "Hookline webhook delivery, local mode"
)]
pub struct LocalConfig {
    /// Address to serve the API on.
    #[arg(long, env = "HOOKLINE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// SQLite file holding all state and the queue.
    #[arg(long, env = "HOOKLINE_DATA", default_value = "./hookline.db")]
    pub data: PathBuf,
    /// The operator key. When unset, one is generated on first start and printed once.
    #[arg(long, env = "HOOKLINE_OPERATOR_KEY", hide_env_values = true)]
    pub operator_key: Option<String>,
    // The settings a Lambda function reads too are kept as given and parsed by
    // `hookline_core::config::Settings`, so both shapes apply one set of rules; clap only
    // gathers them from flags or the environment. Defaults are the core's.
    /// Accept `http://` endpoint URLs (`true`/`false`; default false).
    #[arg(long, env = "HOOKLINE_ALLOW_HTTP")]
    pub allow_http: Option<String>,
    /// Comma-separated CIDRs exempt from the private-address block.
    #[arg(long, env = "HOOKLINE_ALLOWED_NETWORKS")]
    pub allowed_networks: Option<String>,
    /// Comma-separated delays before each try (default `0s,5s,5m,30m,2h,5h,10h,10h`).
    #[arg(long, env = "HOOKLINE_RETRY_SCHEDULE")]
    pub retry_schedule: Option<String>,
    /// Timeout of one delivery request (default `15s`).
    #[arg(long, env = "HOOKLINE_REQUEST_TIMEOUT")]
    pub request_timeout: Option<String>,
    /// Disable an endpoint whose attempts have all failed for this long (default `5d`);
    /// `off` or `0` never does.
    #[arg(long, env = "HOOKLINE_DISABLE_AFTER")]
    pub disable_after: Option<String>,
    /// Delivery requests in flight at most, 1 to 65536 (default 256); the worker also takes
    /// up to this many messages at once. Each request holds a connection and its buffers
    /// (about 40 KiB): lower it to bound memory, raise it for many slow receivers.
    #[arg(long, env = "HOOKLINE_CONCURRENCY")]
    pub concurrency: Option<String>,
    /// Endpoints a tenant may have (default 1000); creating one more answers 409
    /// `too_many_endpoints`.
    #[arg(long, env = "HOOKLINE_MAX_ENDPOINTS")]
    pub max_endpoints: Option<String>,
    /// Days messages are kept with their deliveries and attempts (default 30, at least 1);
    /// `off` keeps them for ever. A message whose deliveries are not all settled is kept
    /// until they are. Expired idempotency keys are deleted either way.
    #[arg(long, env = "HOOKLINE_RETENTION_DAYS")]
    pub retention_days: Option<String>,
    /// For tests and benchmarks: the retention as a duration (e.g. `30s`), in place of
    /// `HOOKLINE_RETENTION_DAYS` and without its minimum.
    #[arg(long, env = "HOOKLINE_RETENTION")]
    pub retention: Option<String>,
    /// The tenant portal's name (default `Webhooks`).
    #[arg(long, env = "HOOKLINE_PORTAL_TITLE")]
    pub portal_title: Option<String>,
    /// An image URL shown beside the portal's name.
    #[arg(long, env = "HOOKLINE_PORTAL_LOGO_URL")]
    pub portal_logo_url: Option<String>,
    /// The portal's accent colour, `#rrggbb`.
    #[arg(long, env = "HOOKLINE_PORTAL_ACCENT")]
    pub portal_accent: Option<String>,
    /// CSP `frame-ancestors` sources allowed to embed the portal (default `'none'`).
    #[arg(long, env = "HOOKLINE_PORTAL_FRAME_ANCESTORS")]
    pub portal_frame_ancestors: Option<String>,
    /// How long a portal magic link may be opened (default `10m`).
    #[arg(long, env = "HOOKLINE_PORTAL_LINK_TTL")]
    pub portal_link_ttl: Option<String>,
    /// How long a portal session lasts (default `24h`).
    #[arg(long, env = "HOOKLINE_PORTAL_SESSION_TTL")]
    pub portal_session_ttl: Option<String>,
    /// The public base URL magic links point to (default: the host the request came to).
    #[arg(long, env = "HOOKLINE_PORTAL_BASE_URL")]
    pub portal_base_url: Option<String>,
    /// Failed attempts in a row after which a delivery that will be retried publishes
    /// `hookline.message.attempt.failing` (default 3); `off` never does.
    #[arg(long, env = "HOOKLINE_FAILING_AFTER")]
    pub failing_after: Option<String>,
    /// Key sealing endpoints' receiver credentials (32 bytes, base64). When unset, one is
    /// generated on first start and kept beside the data file (`<data>.credentials-key`).
    #[arg(long, env = "HOOKLINE_CREDENTIALS_KEY", hide_env_values = true)]
    pub credentials_key: Option<String>,
    /// Events waiting for the worker above which publishing answers 503 with
    /// `Retry-After` instead of queueing more (back-pressure); 0 queues everything.
    #[arg(long, env = "HOOKLINE_MAX_WAITING", default_value_t = 20_000)]
    pub max_waiting: usize,
    /// Record metrics and serve them as Prometheus text at `GET /metrics` (operator key)
    /// (`on`/`off`). Off, recording costs nothing and `/metrics` is not served.
    #[arg(long, env = "HOOKLINE_METRICS", default_value = "on", value_parser = on_off)]
    pub metrics: bool,
    /// Also serve `GET /metrics` on this address, without a key: for a scraper on a
    /// network that only it and the operator reach.
    #[arg(long, env = "HOOKLINE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

fn on_off(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        other => Err(format!("expected on or off, not {other:?}")),
    }
}

impl LocalConfig {
    /// Defaults with a data file, for embedding and tests.
    pub fn with_data(data: PathBuf) -> Self {
        let mut cfg = LocalConfig::parse_from(["hookline"]);
        cfg.data = data;
        cfg
    }

    /// The settings local mode shares with the Lambda functions, parsed by their one
    /// parser; the embedded queue allows a retention down to a day.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let given = |name: &str| {
            match name {
                names::ALLOW_HTTP => &self.allow_http,
                names::ALLOWED_NETWORKS => &self.allowed_networks,
                names::RETRY_SCHEDULE => &self.retry_schedule,
                names::REQUEST_TIMEOUT => &self.request_timeout,
                names::DISABLE_AFTER => &self.disable_after,
                names::CONCURRENCY => &self.concurrency,
                names::MAX_ENDPOINTS => &self.max_endpoints,
                names::RETENTION_DAYS => &self.retention_days,
                names::RETENTION => &self.retention,
                names::PORTAL_TITLE => &self.portal_title,
                names::PORTAL_LOGO_URL => &self.portal_logo_url,
                names::PORTAL_ACCENT => &self.portal_accent,
                names::PORTAL_FRAME_ANCESTORS => &self.portal_frame_ancestors,
                names::PORTAL_LINK_TTL => &self.portal_link_ttl,
                names::PORTAL_SESSION_TTL => &self.portal_session_ttl,
                names::PORTAL_BASE_URL => &self.portal_base_url,
                names::FAILING_AFTER => &self.failing_after,
                names::CREDENTIALS_KEY => &self.credentials_key,
                _ => &None,
            }
            .clone()
        };
        Settings::parse(&given, RetentionFloor::EMBEDDED).map_err(anyhow::Error::msg)
    }

    /// The core settings of [`LocalConfig::settings`].
    pub fn core(&self) -> anyhow::Result<CoreConfig> {
        Ok(self.settings()?.core)
    }
}

/// A running local Hookline.
pub struct Running {
    pub addr: SocketAddr,
    /// The operator key, when this start generated it (shown once).
    pub generated_operator_key: Option<String>,
    /// Where `GET /metrics` is served without a key, when `HOOKLINE_METRICS_LISTEN` is set.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    worker: JoinHandle<()>,
    sweeper: JoinHandle<()>,
    metrics_server: Option<JoinHandle<()>>,
}

impl Running {
    /// Stops taking requests and messages, and waits for those in hand.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        // `wait` may have seen one of them end already; a finished handle is not awaited twice.
        if !self.server.is_finished() {
            let _ = self.server.await;
        }
        if !self.worker.is_finished() {
            let _ = self.worker.await;
        }
        let _ = self.sweeper.await;
        if let Some(metrics) = self.metrics_server {
            let _ = metrics.await;
        }
    }

    /// Resolves when the server or the worker stops (e.g. after a signal).
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = &mut self.server => {}
            _ = &mut self.worker => {}
        }
    }
}

/// The credentials key kept beside the data file, made on first use. Kept apart from the
/// database, so that a copy of the database alone does not open the credentials in it.
fn local_credentials_key(data: &Path) -> anyhow::Result<CredentialsKey> {
    let mut name = data.as_os_str().to_owned();
    name.push(".credentials-key");
    let path = PathBuf::from(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            CredentialsKey::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = CredentialsKey::generate();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            std::io::Write::write_all(&mut file, key.expose().as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Opens the data file, and starts the API, the worker and the retention sweeper.
/// How long local mode's caches keep a tenant's endpoints and a found API key. Changes
/// are seen at once whatever this is; it bounds how long an idle tenant's entries stay.
const CACHE_TTL: Duration = Duration::from_secs(60);

pub async fn start(cfg: LocalConfig) -> anyhow::Result<Running> {
    let settings = cfg.settings()?;
    let mut core = settings.core.clone();
    if core.credentials_key.is_none() {
        core.credentials_key = Some(local_credentials_key(&cfg.data)?);
    }
    let core = Arc::new(core);
    let retention = settings.retention;
    let (store, queue) = hookline_core::embedded::open(&cfg.data)
        .with_context(|| format!("opening {}", cfg.data.display()))?;
    // One process owns the file: nothing can still be in flight from a previous run.
    queue.reset_visibility().await?;
    let queue = Arc::new(queue.with_max_waiting((cfg.max_waiting > 0).then_some(cfg.max_waiting)));
    store.clear_leases().await?;

    let (operator_key, generated) = match &cfg.operator_key {
        Some(key) if !key.trim().is_empty() => (KeyHash::of(key.trim()), None),
        _ => match store.operator_key_hash().await? {
            Some(hash) => (hash, None),
            None => {
                let key = PlainKey::generate_operator();
                store.init_operator_key_hash(&key.hash()).await?;
                (key.hash(), Some(key.expose().to_string()))
            }
        },
    };

    let sender = Arc::new(
        Sender::new(SenderOptions {
            policy: core.url_policy.clone(),
            resolver: Arc::new(SystemResolver),
            timeout: core.request_timeout,
            extra_roots: Vec::new(),
        })
        .context("building the HTTP client")?,
    );
    let clock: SharedClock = Arc::new(SystemClock);
    // The API, publishing and the worker share one wrapper, through which every change of
    // endpoints and keys goes, so its caches follow each change at once (see
    // `hookline_core::cache`) and spare a publish and a fan-out their reads.
    let cached: SharedStore = Arc::new(
        CachedStore::new(store.clone())
            .with_endpoints(CACHE_TTL)
            .with_api_keys(CACHE_TTL),
    );
    let state = AppState {
        store: cached.clone(),
        queue: queue.clone(),
        clock: clock.clone(),
        config: core.clone(),
        operator_key: Some(operator_key),
        sender: Some(sender.clone()),
        dead_letters: Some(queue.clone()),
    };
    let deliverer = Arc::new(
        Deliverer::new(cached, queue.clone(), clock.clone(), core.clone(), sender)
            .with_request_limit(settings.concurrency),
    );

    // The api routes and publishing (and, in a fault-injection build, the routes that panic
    // on purpose), then the JSON answers for unknown routes and panicking handlers, which
    // cover only the routes added before them.
    let exporter = cfg.metrics.then(prometheus::exporter);
    let routes = hookline_api::router(state.clone()).merge(hookline_ingest::router(state.clone()));
    let routes = match &exporter {
        Some(exporter) => routes.merge(prometheus::router(
            exporter.clone(),
            queue.clone(),
            Some(state),
        )),
        None => routes,
    };
    #[cfg(feature = "fault-injection")]
    let routes = routes.merge(fault::router(store.clone(), queue.clone()));
    let app = hookline_core::http::with_fallbacks(routes);
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let (shutdown, watch_rx) = watch::channel(false);

    let (metrics_addr, metrics_server) = match (&exporter, cfg.metrics_listen) {
        (Some(exporter), Some(listen)) => {
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen} (HOOKLINE_METRICS_LISTEN)"))?;
            let metrics_addr = listener.local_addr()?;
            let app = prometheus::router(exporter.clone(), queue.clone(), None);
            let mut stop = watch_rx.clone();
            let server = tokio::spawn(async move {
                let graceful = async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                };
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(graceful)
                    .await
                {
                    tracing::error!(error = %e, "metrics server failed");
                }
            });
            (Some(metrics_addr), Some(server))
        }
        _ => (None, None),
    };

    let mut server_rx = watch_rx.clone();
    let server = tokio::spawn(async move {
        let graceful = async move {
            let _ = server_rx.wait_for(|stop| *stop).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(graceful)
            .await
        {
            tracing::error!(error = %e, "server failed");
        }
    });
    let worker_opts = WorkerOptions {
        visibility: (core.lease() * 2).max(Duration::from_secs(60)),
        concurrency: settings.concurrency,
        ..WorkerOptions::default()
    };
    let pull: Arc<dyn PullQueue> = queue;
    let worker = tokio::spawn(hookline_deliver::worker::run(
        deliverer,
        pull,
        worker_opts,
        watch_rx.clone(),
    ));
    let sweeper = tokio::spawn(store.sweeper(clock, retention).run(watch_rx));
    tracing::info!(%addr, data = %cfg.data.display(), "hookline local mode listening");
    Ok(Running {
        addr,
        generated_operator_key: generated,
        metrics_addr,
        shutdown,
        server,
        worker,
        sweeper,
        metrics_server,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Local mode takes the shared settings as flags (or their environment variables) and
    /// hands them to the parser the Lambda functions use: the same values give the same
    /// settings, and the same bad value the same refusal.
    #[test]
    fn local_mode_reads_the_shared_settings_as_a_function_does() {
        let given = [
            (names::ALLOW_HTTP, "--allow-http", "true"),
            (
                names::ALLOWED_NETWORKS,
                "--allowed-networks",
                "127.0.0.1/32",
            ),
            (names::RETRY_SCHEDULE, "--retry-schedule", "0s,2s"),
            (names::REQUEST_TIMEOUT, "--request-timeout", "3s"),
            (names::DISABLE_AFTER, "--disable-after", "1h"),
            (names::CONCURRENCY, "--concurrency", "12"),
            (names::MAX_ENDPOINTS, "--max-endpoints", "40"),
            (names::RETENTION_DAYS, "--retention-days", "20"),
            (names::PORTAL_TITLE, "--portal-title", "Acme"),
            (names::PORTAL_ACCENT, "--portal-accent", "#112233"),
            (
                names::PORTAL_FRAME_ANCESTORS,
                "--portal-frame-ancestors",
                "https://app.example.com",
            ),
            (names::PORTAL_LINK_TTL, "--portal-link-ttl", "2m"),
            (names::PORTAL_SESSION_TTL, "--portal-session-ttl", "1h"),
            (
                names::PORTAL_LOGO_URL,
                "--portal-logo-url",
                "https://cdn.example.com/logo.png",
            ),
            (
                names::PORTAL_BASE_URL,
                "--portal-base-url",
                "https://hooks.example.com",
            ),
        ];
        let mut args = vec!["hookline".to_string()];
        for (_, flag, value) in given {
            args.push(format!("{flag}={value}"));
        }
        let local = LocalConfig::try_parse_from(&args)
            .expect("flags parse")
            .settings()
            .expect("valid settings");
        let lookup = |name: &str| {
            given
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, _, v)| v.to_string())
        };
        let function = Settings::parse(&lookup, RetentionFloor::EMBEDDED).expect("valid");
        assert_eq!(format!("{local:?}"), format!("{function:?}"));
        assert_eq!(local.concurrency, 12);

        for (name, flag, bad) in [
            (names::ALLOW_HTTP, "--allow-http", "sometimes"),
            (names::CONCURRENCY, "--concurrency", "0"),
            (names::RETENTION_DAYS, "--retention-days", "soon"),
        ] {
            let local = LocalConfig::try_parse_from(["hookline", &format!("{flag}={bad}")])
                .expect("clap takes any text")
                .settings()
                .expect_err(name)
                .to_string();
            let function = Settings::parse(
                &|n: &str| (n == name).then(|| bad.to_string()),
                RetentionFloor::EMBEDDED,
            )
            .expect_err(name);
            assert_eq!(local, function, "{name}");
        }
    }
}
