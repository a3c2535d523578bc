//! The AWS SDK's HTTP client on reqwest, with the TLS settings of outbound deliveries
//! ([`crate::client::tls_config`]).
//!
//! The SDK's own default client would bring a second HTTP stack into every Lambda binary
//! (hyper-rustls with HTTP/2, aws-lc as the crypto provider) and read the system's
//! certificate store on the first call. This one reuses the stack the binaries already hold
//! for deliveries. DynamoDB and SQS speak HTTP/1.1 with small JSON bodies, so each request
//! body is in memory and each response is read whole before it is handed to the SDK.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;

use crate::client::{tls_config, ClientError};

/// The SDK's HTTP client: one reqwest client per set of connector timeouts (in practice
/// one, since every SDK client of a function shares its settings), built on first use.
pub fn sdk_http_client() -> SharedHttpClient {
    SharedHttpClient::new(ReqwestHttpClient::default())
}

/// Connector timeouts as the SDK sets them; the key of the client cache.
type Timeouts = (Option<Duration>, Option<Duration>);

#[derive(Debug, Default)]
struct ReqwestHttpClient {
    connectors: Mutex<HashMap<Timeouts, SharedHttpConnector>>,
}

impl HttpClient for ReqwestHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let key = (settings.connect_timeout(), settings.read_timeout());
        // A poisoned lock only means another thread panicked while inserting; the map is
        // still usable.
        let mut connectors = self
            .connectors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        connectors
            .entry(key)
            .or_insert_with(|| SharedHttpConnector::new(Connector::new(key)))
            .clone()
    }
}

/// Sends the SDK's requests; holds the reqwest client, or why it could not be built (then
/// every call fails with that reason, which the SDK reports as a dispatch failure).
#[derive(Debug)]
struct Connector {
    client: Result<reqwest::Client, Arc<ClientError>>,
}

impl Connector {
    fn new((connect_timeout, read_timeout): Timeouts) -> Self {
        let client = build_client(connect_timeout, read_timeout).map_err(Arc::new);
        Connector { client }
    }
}

fn build_client(
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .tls_backend_preconfigured(tls_config(Vec::new())?);
    if let Some(timeout) = connect_timeout {
        builder = builder.connect_timeout(timeout);
    }
    if let Some(timeout) = read_timeout {
        builder = builder.read_timeout(timeout);
    }
    Ok(builder.build()?)
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(e) => {
                return HttpConnectorFuture::ready(Err(ConnectorError::user(e.to_string().into())))
            }
        };
        HttpConnectorFuture::new(send(client, request))
    }
}

async fn send(
    client: reqwest::Client,
    request: HttpRequest,
) -> Result<HttpResponse, ConnectorError> {
    let request = request
        .try_into_http1x()
        .map_err(|e| ConnectorError::user(e.into()))?;
    let (parts, body) = request.into_parts();
    let body = body
        .bytes()
        .ok_or_else(|| ConnectorError::user("streaming request bodies are not supported".into()))?
        .to_vec();
    let response = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(connector_error)?;
    let mut answer = http::Response::builder().status(response.status());
    if let Some(headers) = answer.headers_mut() {
        *headers = response.headers().clone();
    }
    let body = response.bytes().await.map_err(connector_error)?;
    let answer = answer
        .body(SdkBody::from(body))
        .map_err(|e| ConnectorError::other(e.into(), None))?;
    HttpResponse::try_from(answer).map_err(|e| ConnectorError::other(e.into(), None))
}

/// Classifies a failed exchange for the SDK's retry strategy: timeouts and transport
/// failures (connection refused or reset, a broken body) are transient; a request reqwest
/// could not build is the caller's.
fn connector_error(e: reqwest::Error) -> ConnectorError {
    if e.is_timeout() {
        ConnectorError::timeout(e.into())
    } else if e.is_builder() {
        ConnectorError::user(e.into())
    } else {
        ConnectorError::io(e.into())
    }
}
