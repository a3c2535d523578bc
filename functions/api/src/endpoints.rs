//! Endpoints: where a tenant's messages go, which of them, in what format, signed with
//! which secret.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use axum::Json;
use hookline_core::catalog;
use hookline_core::envelope::json_or_default;
use hookline_core::http::{no_content, ApiResult, AppState, Caller, ErrorBody, JsonBody, RawBody};
use hookline_core::ids::{EndpointId, MessageId, TenantId};
use hookline_core::model::{BodyFormat, Endpoint, EndpointStatus};
use hookline_core::signing::{EndpointSecrets, Secret};
use hookline_core::urlpolicy::UrlPolicy;
use hookline_core::webhook::{render, Outbound};
use hookline_core::{Error, Result};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::openapi::{EndpointList, FormatName, SecretKey, StatusName, TestResult};
use crate::replay::Refusal;
use crate::views::EndpointView;

const MAX_DESCRIPTION: usize = 1024;
const MAX_EVENT_TYPES: usize = 256;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "url": "http://127.0.0.1:9000/webhooks",
    "event_types": ["delivered", "permanent_fail"],
    "description": "delivery events",
    "format": "raw"
}))]
pub struct CreateEndpoint {
    /// `https` (or `http` where the deployment allows it) to a public address.
    url: String,
    /// Event types to receive; absent or `null` for every event.
    #[serde(default)]
    event_types: Option<Vec<String>>,
    /// A registered domain to scope it to; absent or `null` for organisation-wide.
    #[serde(default)]
    domain: Option<String>,
    /// At most 1024 characters.
    #[serde(default)]
    description: Option<String>,
    /// `raw` when absent.
    #[serde(default)]
    #[schema(value_type = Option<FormatName>)]
    format: Option<String>,
    /// A secret of the owner's choosing (`whsec_…`); generated when absent.
    #[serde(default)]
    secret: Option<String>,
    /// At most this many requests per second (1 to 10000); absent or `null` for no limit.
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    rate_limit: Option<Value>,
    /// Send a test event first and save only if the receiver answers 2xx.
    #[serde(default)]
    verify: bool,
}

/// A partial update. For `event_types` and `domain`, `null` means "all events" and
/// "organisation-wide"; an absent field is left as it is.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"description": "every event", "event_types": null, "status": "active"}))]
pub struct UpdateEndpoint {
    #[serde(default)]
    url: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    event_types: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    domain: Option<Option<String>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<FormatName>)]
    format: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<StatusName>)]
    status: Option<String>,
    /// Requests per second (1 to 10000); `null` removes the limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    rate_limit: Option<Option<Value>>,
    /// Send a test event to the changed endpoint first and save only on a 2xx.
    #[serde(default)]
    verify: bool,
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({}))]
pub struct RotateSecret {
    /// The new secret (`whsec_…`); generated when absent.
    #[serde(default)]
    key: Option<String>,
}

/// Tells a present `null` from an absent field.
fn present<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Checks an endpoint URL against the deployment's policy.
pub fn validate_url(policy: &UrlPolicy, url: &str) -> Result<String> {
    policy
        .check_url(url)
        .map(|u| u.to_string())
        .map_err(|e| Error::invalid("invalid_url", e))
}

/// An endpoint's event types: each built in or added by the operator, without repeats.
async fn validate_event_types(
    state: &AppState,
    types: Option<Vec<String>>,
) -> Result<Option<Vec<String>>> {
    let Some(types) = types else {
        return Ok(None);
    };
    if types.is_empty() {
        return Err(Error::invalid(
            "invalid_event_types",
            "event_types must not be empty; omit it or set null to receive every event",
        ));
    }
    if types.len() > MAX_EVENT_TYPES {
        return Err(Error::invalid(
            "invalid_event_types",
            format!("at most {MAX_EVENT_TYPES} event types"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(types.len());
    for t in types {
        if !catalog::resolve(state.store.as_ref(), &t).await? {
            return Err(catalog::unknown(&t));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(Some(out))
}

async fn validate_domain(
    state: &AppState,
    tenant: TenantId,
    domain: Option<String>,
) -> Result<Option<String>> {
    let Some(domain) = domain else {
        return Ok(None);
    };
    let name = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    if state.store.get_domain(tenant, &name).await?.is_none() {
        return Err(Error::invalid(
            "unknown_domain",
            format!("domain {name:?} is not registered; create it with POST /v1/domains"),
        ));
    }
    Ok(Some(name))
}

fn validate_description(d: Option<String>) -> Result<String> {
    let d = d.unwrap_or_default();
    if d.chars().count() > MAX_DESCRIPTION {
        return Err(Error::invalid(
            "invalid_description",
            format!("description is limited to {MAX_DESCRIPTION} characters"),
        ));
    }
    Ok(d)
}

fn validate_format(f: Option<&str>) -> Result<BodyFormat> {
    match f {
        None => Ok(BodyFormat::default()),
        Some(s) => BodyFormat::parse(s)
            .ok_or_else(|| Error::invalid("invalid_format", format!("unknown format {s:?}"))),
    }
}

/// Highest accepted `rate_limit`, in requests per second.
const MAX_RATE_LIMIT: u64 = 10_000;

/// A rate limit: `null` for none, else a whole number of requests per second; anything
/// else is refused with 422.
fn validate_rate_limit(value: Option<&Value>) -> std::result::Result<Option<u32>, Refusal> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_RATE_LIMIT).contains(n))
            .map(|n| Some(n as u32))
            .ok_or_else(|| {
                Refusal::unprocessable(
                    "invalid_rate_limit",
                    format!(
                        "rate_limit must be a whole number of requests per second from 1 to \
                         {MAX_RATE_LIMIT}, or null for no limit"
                    ),
                )
            }),
    }
}

fn validate_secret(s: &str) -> Result<Secret> {
    Secret::parse(s).ok_or_else(|| {
        Error::invalid(
            "invalid_secret",
            "secret must be whsec_ followed by 16 to 64 base64-encoded bytes",
        )
    })
}

#[utoipa::path(
    post,
    path = "/v1/endpoints",
    tag = "endpoints",
    operation_id = "create_endpoint",
    request_body = CreateEndpoint,
    responses(
        (status = 201, description = "The endpoint", body = EndpointView),
        (status = 400, description = "Invalid body, URL, event type, domain, format or secret", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "`rate_limit` out of range, or `verify`: the test event got no 2xx; nothing was saved", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<CreateEndpoint>,
) -> std::result::Result<(StatusCode, Json<EndpointView>), Refusal> {
    let tenant = caller.tenant()?;
    let rate_limit = validate_rate_limit(req.rate_limit.as_ref())?;
    let url = validate_url(&state.config.url_policy, &req.url)?;
    let event_types = validate_event_types(&state, req.event_types).await?;
    let description = validate_description(req.description)?;
    let format = validate_format(req.format.as_deref())?;
    let secret = match req.secret.as_deref() {
        Some(s) => validate_secret(s)?,
        None => Secret::generate(),
    };
    let domain = validate_domain(&state, tenant, req.domain).await?;
    let now = state.clock.now();
    let endpoint = Endpoint {
        id: EndpointId::new(),
        tenant,
        url,
        description,
        event_types,
        domain,
        format,
        secrets: EndpointSecrets::new(secret),
        status: EndpointStatus::Active,
        disabled_reason: None,
        disabled_at: None,
        failing_since: None,
        rate_limit,
        created_at: now,
        updated_at: now,
    };
    if req.verify {
        verify(&state, &endpoint).await?;
    }
    state.store.put_endpoint(&endpoint).await?;
    tracing::info!(tenant = %tenant, endpoint = %endpoint.id, "endpoint created");
    Ok((StatusCode::CREATED, Json(EndpointView::from(&endpoint))))
}

#[utoipa::path(
    get,
    path = "/v1/endpoints",
    tag = "endpoints",
    operation_id = "list_endpoints",
    responses(
        (status = 200, description = "The caller's endpoints", body = EndpointList),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant()?;
    let endpoints = state.store.list_endpoints(tenant).await?;
    let data: Vec<EndpointView> = endpoints.iter().map(EndpointView::from).collect();
    Ok(Json(json!({ "data": data })))
}

async fn load(state: &AppState, caller: Caller, id: &str) -> ApiResult<Endpoint> {
    let tenant = caller.tenant()?;
    let id = EndpointId::parse(id).ok_or(Error::NotFound("endpoint"))?;
    Ok(state
        .store
        .get_endpoint(tenant, id)
        .await?
        .ok_or(Error::NotFound("endpoint"))?)
}

#[utoipa::path(
    get,
    path = "/v1/endpoints/{id}",
    tag = "endpoints",
    operation_id = "get_endpoint",
    params(("id" = String, Path, description = "Endpoint id (`ep_…`)")),
    responses(
        (status = 200, description = "The endpoint", body = EndpointView),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
        (status = 404, description = "Not one of the caller's endpoints", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<EndpointView>> {
    let endpoint = load(&state, caller, &id).await?;
    Ok(Json(EndpointView::from(&endpoint)))
}

#[utoipa::path(
    patch,
    path = "/v1/endpoints/{id}",
    tag = "endpoints",
    operation_id = "update_endpoint",
    params(("id" = String, Path, description = "Endpoint id (`ep_…`)")),
    request_body = UpdateEndpoint,
    responses(
        (status = 200, description = "The changed endpoint", body = EndpointView),
        (status = 400, description = "Invalid body or field", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
        (status = 404, description = "Not one of the caller's endpoints", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "`rate_limit` out of range, or `verify`: the test event got no 2xx; nothing was saved", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<UpdateEndpoint>,
) -> std::result::Result<Json<EndpointView>, Refusal> {
    let mut endpoint = load(&state, caller, &id).await?;
    if let Some(limit) = req.rate_limit {
        endpoint.rate_limit = validate_rate_limit(limit.as_ref())?;
    }
    if let Some(url) = req.url {
        endpoint.url = validate_url(&state.config.url_policy, &url)?;
    }
    if let Some(types) = req.event_types {
        endpoint.event_types = validate_event_types(&state, types).await?;
    }
    if let Some(description) = req.description {
        endpoint.description = validate_description(Some(description))?;
    }
    if let Some(format) = req.format {
        endpoint.format = validate_format(Some(&format))?;
    }
    if let Some(status) = req.status {
        match EndpointStatus::parse(&status) {
            Some(EndpointStatus::Active) => {
                if endpoint.status != EndpointStatus::Active {
                    // Re-enabled: its failure clock starts again.
                    endpoint.failing_since = None;
                }
                endpoint.status = EndpointStatus::Active;
                endpoint.disabled_reason = None;
                endpoint.disabled_at = None;
            }
            Some(EndpointStatus::Disabled) => {
                if endpoint.status != EndpointStatus::Disabled {
                    endpoint.disabled_reason = Some("disabled through the API".into());
                    endpoint.disabled_at = Some(state.clock.now());
                }
                endpoint.status = EndpointStatus::Disabled;
            }
            None => {
                return Err(Error::invalid(
                    "invalid_status",
                    "status must be \"active\" or \"disabled\"",
                )
                .into())
            }
        }
    }
    if let Some(domain) = req.domain {
        endpoint.domain = validate_domain(&state, endpoint.tenant, domain).await?;
    }
    endpoint.updated_at = state.clock.now();
    if req.verify {
        verify(&state, &endpoint).await?;
    }
    state.store.put_endpoint(&endpoint).await?;
    Ok(Json(EndpointView::from(&endpoint)))
}

#[utoipa::path(
    delete,
    path = "/v1/endpoints/{id}",
    tag = "endpoints",
    operation_id = "delete_endpoint",
    params(("id" = String, Path, description = "Endpoint id (`ep_…`)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
        (status = 404, description = "Not one of the caller's endpoints", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let endpoint = load(&state, caller, &id).await?;
    state
        .store
        .delete_endpoint(endpoint.tenant, endpoint.id)
        .await?;
    tracing::info!(tenant = %endpoint.tenant, endpoint = %endpoint.id, "endpoint deleted");
    Ok(no_content())
}

#[utoipa::path(
    get,
    path = "/v1/endpoints/{id}/secret",
    tag = "endpoints",
    operation_id = "get_endpoint_secret",
    params(("id" = String, Path, description = "Endpoint id (`ep_…`)")),
    responses(
        (status = 200, description = "The current signing secret", body = SecretKey),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
        (status = 404, description = "Not one of the caller's endpoints", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let endpoint = load(&state, caller, &id).await?;
    Ok(Json(json!({ "key": endpoint.secrets.current.expose() })))
}

/// Makes a new secret current. The old one keeps signing for the grace period, so
/// receivers can switch without dropping a message.
#[utoipa::path(
    post,
    path = "/v1/endpoints/{id}/secret/rotate",
    tag = "endpoints",
    operation_id = "rotate_endpoint_secret",
    params(("id" = String, Path, description = "Endpoint id (`ep_…`)")),
    request_body = Option<RotateSecret>,
    responses(
        (status = 200, description = "The new current secret; the old one signs for the grace period too", body = SecretKey),
        (status = 400, description = "Invalid body or secret", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
        (status = 404, description = "Not one of the caller's endpoints", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> ApiResult<Json<Value>> {
    let mut endpoint = load(&state, caller, &id).await?;
    let req: RotateSecret = json_or_default(&body)?;
    let next = match req.key.as_deref() {
        Some(s) => validate_secret(s)?,
        None => Secret::generate(),
    };
    let now = state.clock.now();
    let grace = state.config.secret_grace.as_millis() as i64;
    endpoint.secrets.rotate(next, now, grace);
    endpoint.updated_at = now;
    state.store.put_endpoint(&endpoint).await?;
    tracing::info!(tenant = %endpoint.tenant, endpoint = %endpoint.id, "endpoint secret rotated");
    Ok(Json(json!({ "key": endpoint.secrets.current.expose() })))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"event_type": "delivered"}))]
pub struct TestRequest {
    /// The event type whose sample is sent; the endpoint's first one when absent.
    #[serde(default)]
    event_type: Option<String>,
}

/// Sends a test event to a saved endpoint and tells what the receiver answered.
#[utoipa::path(
    post,
    path = "/v1/endpoints/{id}/test",
    tag = "endpoints",
    operation_id = "test_endpoint",
    params(("id" = String, Path, description = "Endpoint id (`ep_…`)")),
    request_body = Option<TestRequest>,
    responses(
        (status = 200, description = "What the receiver answered (or why it did not)", body = TestResult),
        (status = 400, description = "Invalid body or unknown event type", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
        (status = 404, description = "Not one of the caller's endpoints", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn test(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> ApiResult<Json<Value>> {
    let endpoint = load(&state, caller, &id).await?;
    let req: TestRequest = json_or_default(&body)?;
    let sent = send_test(&state, &endpoint, req.event_type.as_deref()).await?;
    let ok = sent
        .response
        .status
        .is_some_and(|s| (200..300).contains(&s));
    Ok(Json(json!({
        "ok": ok,
        "webhook_id": sent.webhook_id,
        "event_type": sent.event_type,
        "status": sent.response.status,
        "error": sent.response.error,
        "latency_ms": sent.response.latency.as_millis() as u64,
        "response": sent.response.excerpt,
    })))
}

pub(crate) struct TestSend {
    pub(crate) webhook_id: String,
    pub(crate) event_type: String,
    pub(crate) response: hookline_core::client::Response,
}

/// Sends the sample payload of an event type (by default the endpoint's first, or the
/// catalog's first for an endpoint taking every event), signed like a delivery and marked
/// with `hookline-test: true`.
pub(crate) async fn send_test(
    state: &AppState,
    endpoint: &Endpoint,
    event_type: Option<&str>,
) -> ApiResult<TestSend> {
    let sender = state
        .sender
        .as_ref()
        .ok_or(Error::Forbidden("this function does not send test events"))?;
    let name = match event_type {
        Some(name) => name.to_string(),
        None => endpoint
            .event_types
            .as_ref()
            .and_then(|t| t.first().cloned())
            .unwrap_or_else(|| catalog::builtin()[0].name.clone()),
    };
    let sample = catalog::sample(state.store.as_ref(), &name)
        .await?
        .ok_or_else(|| catalog::unknown(&name))?;
    let outbound = Outbound {
        id: MessageId::new().to_string(),
        event_type: &name,
        payload: &sample,
    };
    let (mut headers, body) = render(&outbound, endpoint, state.clock.now());
    headers.insert(
        HeaderName::from_static("hookline-test"),
        HeaderValue::from_static("true"),
    );
    let response = sender.post(&endpoint.url, headers, body).await;
    Ok(TestSend {
        webhook_id: outbound.id.clone(),
        event_type: name,
        response,
    })
}

/// Test before save: a 2xx from the receiver, or a 422 saying what it answered.
async fn verify(state: &AppState, endpoint: &Endpoint) -> ApiResult<()> {
    let sent = send_test(state, endpoint, None).await?;
    let r = sent.response;
    if r.status.is_some_and(|s| (200..300).contains(&s)) {
        return Ok(());
    }
    let message = match (r.status, r.error.as_deref()) {
        (Some(status), _) => format!("the test event got HTTP {status}; nothing was saved"),
        (None, Some(kind)) => format!("the test event failed ({kind}); nothing was saved"),
        (None, None) => "the test event failed; nothing was saved".to_string(),
    };
    Err(Error::EndpointTest {
        message,
        status: r.status,
        error: r.error,
    }
    .into())
}
