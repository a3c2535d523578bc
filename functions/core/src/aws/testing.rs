//! Test support for the AWS adapters: SDK settings for moto on loopback, and unique names
//! so tests can share one moto_server. Only built with the `contract` feature.

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::config::{Credentials, Region};

/// Where moto listens; `./scripts/test.sh` starts it and sets this.
pub const ENDPOINT_VAR: &str = "HOOKLINE_TEST_AWS_ENDPOINT";

/// SDK settings for moto. Given to the loader rather than put in the process environment,
/// so nothing in a test can reach a real AWS account whatever the environment holds.
pub async fn moto_sdk_config() -> SdkConfig {
    let endpoint = std::env::var(ENDPOINT_VAR).unwrap_or_else(|_| {
        panic!(
            "{ENDPOINT_VAR} is not set: these tests need moto_server. Run the test command \
             of the README (./scripts/test.sh), which starts moto and sets it, or start \
             `moto_server -H 127.0.0.1 -p PORT` and set {ENDPOINT_VAR}=http://127.0.0.1:PORT"
        )
    });
    sdk_config_at(&endpoint).await
}

/// SDK settings for an emulator (or a dead address) at `endpoint`.
pub async fn sdk_config_at(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(super::sdk_http_client())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "moto"))
        .load()
        .await
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", ulid::Ulid::new().to_string().to_lowercase())
}
