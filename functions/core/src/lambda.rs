//! What every Lambda entrypoint does first: JSON logs for CloudWatch, settings from the
//! environment the template sets, and AWS clients built once, their endpoint taken from
//! the SDK's standard `AWS_ENDPOINT_URL` so the same binary runs against emulators.

use std::sync::Arc;

use async_trait::async_trait;
use aws_config::SdkConfig;

use crate::aws::{DynamoStore, SqsQueue};
use crate::config::{CoreConfig, RetentionFloor, Settings};
use crate::keys::KeyHash;
use crate::ports::{NotQueued, Outgoing, Queue, Refusal};

/// Logs as JSON lines, filtered by `HOOKLINE_LOG` (default `info`): a level, or
/// `target=level` pairs separated by commas (`info,hookline_deliver=debug`). These are
/// `Targets` rather than an `EnvFilter`, which would link a regex engine into every
/// function for span and field filters nobody sets.
pub fn init_tracing() {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = std::env::var("HOOKLINE_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
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

/// The environment of a function.
pub struct LambdaEnv {
    pub sdk: SdkConfig,
    pub config: Arc<CoreConfig>,
    pub settings: Settings,
}

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

    /// The queue whose URL is in the variable `var` (`QUEUE_URL`, `DLQ_URL`).
    pub fn queue(&self, var: &str) -> std::result::Result<Arc<SqsQueue>, String> {
        let client = aws_sdk_sqs::Client::new(&self.sdk);
        Ok(Arc::new(SqsQueue::new(client, required(var)?)))
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
}
