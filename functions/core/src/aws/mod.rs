//! The ports on AWS: [`DynamoStore`] keeps every record in one DynamoDB table and
//! [`SqsQueue`] carries delivery tasks on SQS. Both take ready-made SDK clients; the
//! endpoint, region and credentials come from the standard AWS configuration chain.

pub mod dynamo;
pub mod sqs;
#[cfg(feature = "contract")]
pub mod testing;

pub use dynamo::{create_table, DynamoStore};
pub use sqs::{create_queue_pair, SqsQueue};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::error::Error;

/// The SDK configuration from the environment: region, credentials and, when
/// `AWS_ENDPOINT_URL` (or a service-specific `AWS_ENDPOINT_URL_<SERVICE>`) is set, the
/// endpoint to talk to instead of AWS, so one build runs on Lambda and against a local
/// emulator alike.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
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
