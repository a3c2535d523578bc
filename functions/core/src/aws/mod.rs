//! The ports on AWS: [`DynamoStore`] keeps every record in one DynamoDB table and
//! [`SqsQueue`] carries delivery tasks on SQS. Both take ready-made SDK clients; the
//! endpoint, region and credentials come from the standard AWS configuration chain.

pub mod dead_letters;
pub mod dynamo;
pub mod sqs;
#[cfg(feature = "contract")]
pub mod testing;
pub mod transport;

pub use dead_letters::SqsDeadLetters;
pub use dynamo::{create_table, DynamoStore, KeyMigration};
pub use sqs::{create_queue_pair, SqsQueue};
pub use transport::sdk_http_client;

use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::SharedCredentialsProvider;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::error::Error;

/// The SDK configuration from the variables Lambda sets: region (`AWS_REGION`), credentials
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) and, when
/// `AWS_ENDPOINT_URL` is set, the endpoint to talk to instead of AWS, so one build runs on
/// Lambda and against a local emulator alike. Requests go through [`sdk_http_client`];
/// retries and timeouts are the SDK's defaults for the latest behavior version.
///
/// Read from those variables alone rather than through `aws_config::defaults`: its chains
/// of providers (profile files, STS web identity and role assumption, container and
/// instance metadata) have nothing to find on Lambda, yet would be linked into every
/// function and consulted at start.
pub async fn sdk_config() -> SdkConfig {
    let region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|name| non_empty_var(name))
        .map(Region::new);
    let credentials = EnvironmentVariableCredentialsProvider::new();
    let mut config = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(sdk_http_client())
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .region(region);
    if let Some(url) = non_empty_var("AWS_ENDPOINT_URL") {
        config = config.endpoint_url(url);
    }
    config.build()
}

fn non_empty_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A backend error from a failed SDK call. The SDK's own `Display` says only "service
/// error", so a service's refusal is told by its code and message, and any other failure
/// (timeout, connection, …) by its whole chain of causes.
pub(crate) fn sdk_error<E, R>(context: &'static str, e: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let detail = match e.as_service_error() {
        Some(refusal) => format!(
            "{}: {}",
            refusal.code().unwrap_or("unknown error"),
            refusal.message().unwrap_or("no message")
        ),
        None => DisplayErrorContext(&e).to_string(),
    };
    Error::backend(context, detail)
}
