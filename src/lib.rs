//! Local mode: the api and ingest routers, the delivery worker and embedded SQLite storage
//! and queue, in one process. `cargo run` starts it; tests start it on port 0.

#[cfg(feature = "fault-injection")]
mod fault;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hookline_core::config::CoreConfig;
use hookline_core::http::AppState;
use hookline_core::keys::{KeyHash, PlainKey};
use hookline_core::ports::{PullQueue, SystemClock, TenantStore};
use hookline_core::retry::RetrySchedule;
use hookline_core::urlpolicy::{SystemResolver, UrlPolicy};
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
    /// Accept `http://` endpoint URLs.
    #[arg(long, env = "HOOKLINE_ALLOW_HTTP", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_http: bool,
    /// Comma-separated CIDRs exempt from the private-address block.
    #[arg(long, env = "HOOKLINE_ALLOWED_NETWORKS", default_value = "")]
    pub allowed_networks: String,
    /// Comma-separated delays before each try, e.g. `0s,5s,5m`.
    #[arg(long, env = "HOOKLINE_RETRY_SCHEDULE", default_value = hookline_core::retry::DEFAULT_SCHEDULE)]
    pub retry_schedule: String,
    /// Timeout of one delivery request.
    #[arg(long, env = "HOOKLINE_REQUEST_TIMEOUT", default_value = "15s", value_parser = humantime_duration)]
    pub request_timeout: Duration,
    /// Disable an endpoint whose attempts have all failed for this long (e.g. `5d`);
    /// `off` or `0` never does.
    #[arg(long, env = "HOOKLINE_DISABLE_AFTER", default_value = "5d")]
    pub disable_after: String,
    /// Delivery requests in flight at most; the worker also takes up to this many messages
    /// at once. Each request holds a connection and its buffers (about 40 KiB): lower it
    /// to bound memory, raise it for many slow receivers.
    #[arg(long, env = "HOOKLINE_CONCURRENCY", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub concurrency: u32,
    /// Events waiting for the worker above which publishing answers 503 with
    /// `Retry-After` instead of queueing more (back-pressure); 0 queues everything.
    #[arg(long, env = "HOOKLINE_MAX_WAITING", default_value_t = 20_000)]
    pub max_waiting: usize,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

impl LocalConfig {
    /// Defaults with a data file, for embedding and tests.
    pub fn with_data(data: PathBuf) -> Self {
        let mut cfg = LocalConfig::parse_from(["hookline"]);
        cfg.data = data;
        cfg
    }

    pub fn core(&self) -> anyhow::Result<CoreConfig> {
        let networks = UrlPolicy::parse_networks(&self.allowed_networks)
            .map_err(anyhow::Error::msg)
            .context("HOOKLINE_ALLOWED_NETWORKS")?;
        let retry: RetrySchedule = self
            .retry_schedule
            .parse()
            .context("HOOKLINE_RETRY_SCHEDULE")?;
        Ok(CoreConfig {
            url_policy: Arc::new(UrlPolicy {
                allow_http: self.allow_http,
                allowed_networks: networks,
            }),
            retry,
            request_timeout: self.request_timeout,
            disable_after: hookline_core::config::parse_disable_after(&self.disable_after)
                .map_err(anyhow::Error::msg)
                .context("HOOKLINE_DISABLE_AFTER")?,
            ..CoreConfig::default()
        })
    }
}

/// A running local Hookline.
pub struct Running {
    pub addr: SocketAddr,
    /// The operator key, when this start generated it (shown once).
    pub generated_operator_key: Option<String>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    worker: JoinHandle<()>,
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
    }

    /// Resolves when the server or the worker stops (e.g. after a signal).
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = &mut self.server => {}
            _ = &mut self.worker => {}
        }
    }
}

/// Opens the data file, and starts the API and the worker.
pub async fn start(cfg: LocalConfig) -> anyhow::Result<Running> {
    let core = Arc::new(cfg.core()?);
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
    let clock = Arc::new(SystemClock);
    let state = AppState {
        store: store.clone(),
        queue: queue.clone(),
        clock: clock.clone(),
        config: core.clone(),
        operator_key: Some(operator_key),
        sender: Some(sender.clone()),
    };
    let deliverer = Arc::new(
        Deliverer::new(store.clone(), queue.clone(), clock, core.clone(), sender)
            .with_request_limit(cfg.concurrency as usize),
    );

    // The api routes and publishing (and, in a fault-injection build, the routes that panic
    // on purpose), then the JSON answers for unknown routes and panicking handlers, which
    // cover only the routes added before them.
    let routes = hookline_api::router(state.clone()).merge(hookline_ingest::router(state));
    #[cfg(feature = "fault-injection")]
    let routes = routes.merge(fault::router(store.clone(), queue.clone()));
    let app = hookline_core::http::with_fallbacks(routes);
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let (shutdown, watch_rx) = watch::channel(false);

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
        concurrency: cfg.concurrency as usize,
        ..WorkerOptions::default()
    };
    let pull: Arc<dyn PullQueue> = queue;
    let worker = tokio::spawn(hookline_deliver::worker::run(
        deliverer,
        pull,
        worker_opts,
        watch_rx,
    ));
    tracing::info!(%addr, data = %cfg.data.display(), "hookline local mode listening");
    Ok(Running {
        addr,
        generated_operator_key: generated,
        shutdown,
        server,
        worker,
    })
}
