//! What every Lambda entrypoint does first: JSON logs and EMF metrics for CloudWatch,
//! settings from the environment the template sets, and AWS clients built once, their
//! endpoint taken from the SDK's standard `AWS_ENDPOINT_URL` so the same binary runs
//! against emulators.

use std::sync::Arc;

use async_trait::async_trait;
use aws_config::SdkConfig;

use crate::aws::{DynamoStore, SqsQueue};
use crate::config::{CoreConfig, RetentionFloor, Settings};
use crate::keys::KeyHash;
use crate::ports::{NotQueued, Outgoing, Queue, Refusal};

/// The log filter of a function: `HOOKLINE_LOG`, else `RUST_LOG` (a level, or
/// `target=level` pairs separated by commas: `info,hookline_deliver=debug`), else the
/// level Lambda's logging configuration sets in `AWS_LAMBDA_LOG_LEVEL` (`FATAL` is
/// `error`), else `info`. These are `Targets` rather than an `EnvFilter`, which would link
/// a regex engine into every function for span and field filters nobody sets.
pub fn log_filter(var: impl Fn(&str) -> Option<String>) -> tracing_subscriber::filter::Targets {
    use tracing_subscriber::filter::Targets;
    let given = ["HOOKLINE_LOG", "RUST_LOG"]
        .into_iter()
        .filter_map(|name| var(name).filter(|v| !v.trim().is_empty()))
        .find_map(|v| v.parse::<Targets>().ok());
    if let Some(targets) = given {
        return targets;
    }
    let level =
        var("AWS_LAMBDA_LOG_LEVEL").and_then(|v| match v.trim().to_ascii_lowercase().as_str() {
            "fatal" => Some(tracing::Level::ERROR),
            other => other.parse::<tracing::Level>().ok(),
        });
    Targets::new().with_default(level.unwrap_or(tracing::Level::INFO))
}

/// Logs as JSON lines, filtered by [`log_filter`].
pub fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = log_filter(|name| std::env::var(name).ok());
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(false)
                .without_time(),
        )
        .with(filter)
        .init();
}

/// Installs the EMF recorder (see [`crate::metrics::emf`]); its handle flushes what an
/// invocation recorded. `None`, logged, if a recorder is installed already.
pub fn init_metrics() -> Option<crate::metrics::emf::EmfHandle> {
    crate::metrics::emf::install()
        .inspect_err(|e| tracing::error!(error = %e, "metrics recorder not installed"))
        .ok()
}

/// The function's router, writing the metrics of each invocation (one request) as EMF
/// lines once it is answered.
#[cfg(feature = "http-api")]
pub fn flush_metrics_after(
    router: axum::Router,
    metrics: Option<crate::metrics::emf::EmfHandle>,
) -> axum::Router {
    let Some(metrics) = metrics else {
        return router;
    };
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let metrics = metrics.clone();
            async move {
                let response = next.run(request).await;
                metrics.flush_stdout();
                response
            }
        },
    ))
}

/// The environment of a function.
pub struct LambdaEnv {
    pub sdk: SdkConfig,
    pub config: Arc<CoreConfig>,
    pub settings: Settings,
}

/// The variable naming the FIFO queue of ordered delivery; a deployment without it
/// answers `"ordering": "strict"` with 422 `ordering_unavailable`.
pub const ORDERED_QUEUE_URL: &str = "ORDERED_QUEUE_URL";

/// A required variable, or an error naming it.
pub fn required(name: &str) -> std::result::Result<String, String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| format!("{name} must be set"))
}

impl LambdaEnv {
    /// The SDK configuration and the `HOOKLINE_*` settings, read by the same parser as
    /// local mode's ([`Settings`]); the log's retention must outlive what SQS keeps.
    pub async fn load() -> std::result::Result<Self, String> {
        let settings = Settings::from_env(RetentionFloor::SQS)?;
        Ok(LambdaEnv {
            sdk: crate::aws::sdk_config().await,
            config: Arc::new(settings.core.clone()),
            settings,
        })
    }

    /// The table named by `TABLE_NAME`, keeping the log for the settings' retention.
    pub fn store(&self) -> std::result::Result<Arc<DynamoStore>, String> {
        let client = aws_sdk_dynamodb::Client::new(&self.sdk);
        let store = DynamoStore::new(client, required("TABLE_NAME")?);
        Ok(Arc::new(match self.settings.retention {
            Some(keep) => store.with_retention(keep),
            None => store,
        }))
    }

    /// The most delivery requests one invocation of the deliver function has in flight
    /// (`HOOKLINE_CONCURRENCY`, as local mode reads it).
    pub fn request_limit(&self) -> usize {
        self.settings.concurrency
    }

    /// The queue whose URL is in the variable `var` (`QUEUE_URL`, `DLQ_URL`), with the
    /// FIFO queue of `ORDERED_QUEUE_URL` as its ordered side when that is set.
    pub fn queue(&self, var: &str) -> std::result::Result<Arc<SqsQueue>, String> {
        let client = aws_sdk_sqs::Client::new(&self.sdk);
        let queue = SqsQueue::new(client, required(var)?);
        Ok(Arc::new(match required(ORDERED_QUEUE_URL) {
            Ok(url) => queue.with_ordered_url(url),
            Err(_) => queue,
        }))
    }

    /// The operator key's hash, from `HOOKLINE_OPERATOR_KEY`; the key itself is not kept.
    pub fn operator_key_hash(&self) -> Option<KeyHash> {
        required("HOOKLINE_OPERATOR_KEY")
            .ok()
            .map(|k| KeyHash::of(k.trim()))
    }

    /// The state of the HTTP routers.
    #[cfg(feature = "http-api")]
    pub fn app_state(
        &self,
        queue: crate::ports::SharedQueue,
        sender: Option<Arc<crate::client::Sender>>,
    ) -> std::result::Result<crate::http::AppState, String> {
        Ok(crate::http::AppState {
            store: self.store()?,
            queue,
            clock: Arc::new(crate::ports::SystemClock),
            config: self.config.clone(),
            operator_key: self.operator_key_hash(),
            sender,
            dead_letters: None,
        })
    }

    /// The dead-letter queue named by `DLQ_URL`, redriven to the queue named by
    /// `QUEUE_URL`: the api function's dead-letter routes.
    pub fn dead_letters(&self) -> std::result::Result<Arc<crate::aws::SqsDeadLetters>, String> {
        let client = aws_sdk_sqs::Client::new(&self.sdk);
        Ok(Arc::new(crate::aws::SqsDeadLetters::new(
            client,
            required("DLQ_URL")?,
            required("QUEUE_URL")?,
        )))
    }
}

/// The outbound HTTP client, with the deployment's URL policy and timeout.
impl LambdaEnv {
    pub fn sender(&self) -> std::result::Result<Arc<crate::client::Sender>, String> {
        crate::client::Sender::new(crate::client::SenderOptions {
            policy: self.config.url_policy.clone(),
            resolver: Arc::new(crate::urlpolicy::SystemResolver),
            timeout: self.config.request_timeout,
            extra_roots: Vec::new(),
        })
        .map(Arc::new)
        .map_err(|e| format!("building the HTTP client: {e}"))
    }
}

/// The queue of a function that has no right to send (the api function): any send fails.
pub struct NoQueue;

#[async_trait]
impl Queue for NoQueue {
    async fn send(&self, messages: Vec<Outgoing>) -> std::result::Result<(), NotQueued> {
        if messages.is_empty() {
            return Ok(());
        }
        Err(NotQueued::all(
            messages.len(),
            Refusal::Unavailable,
            "this function has no access to the events queue",
        ))
    }

    fn max_delay(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    async fn probe(&self) -> crate::Result<()> {
        Err(crate::Error::backend(
            "probe queue",
            std::io::Error::other("this function has no events queue"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use tracing::level_filters::LevelFilter;
    use tracing_subscriber::filter::Targets;

    use super::*;

    fn filter(vars: &[(&str, &str)]) -> String {
        let var = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        };
        log_filter(var).to_string()
    }

    #[test]
    fn the_log_level_comes_from_hookline_log_then_rust_log_then_lambda() {
        let level = |l: LevelFilter| Targets::new().with_default(l).to_string();
        assert_eq!(filter(&[]), level(LevelFilter::INFO));
        assert_eq!(
            filter(&[("AWS_LAMBDA_LOG_LEVEL", "DEBUG")]),
            level(LevelFilter::DEBUG)
        );
        assert_eq!(
            filter(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")]),
            level(LevelFilter::ERROR)
        );
        assert_eq!(
            filter(&[("AWS_LAMBDA_LOG_LEVEL", "WARN"), ("RUST_LOG", "trace")]),
            level(LevelFilter::TRACE)
        );
        assert_eq!(
            filter(&[
                ("AWS_LAMBDA_LOG_LEVEL", "WARN"),
                ("RUST_LOG", "trace"),
                ("HOOKLINE_LOG", "error")
            ]),
            level(LevelFilter::ERROR)
        );
        assert_eq!(
            filter(&[("AWS_LAMBDA_LOG_LEVEL", "nonsense")]),
            level(LevelFilter::INFO)
        );
    }
}
