//! The HTTP edge shared by the api and ingest routers: their state, error bodies
//! (`{"error": {"code", "message"}}`), JSON bodies read with a size cap, callers
//! identified by their API key, the answers for unknown routes and panicking handlers, and
//! each request's id, log line and metrics.

use std::any::Any;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{FromRef, FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::header::{
    AUTHORIZATION, CONTENT_TYPE, ETAG, IF_MATCH, RETRY_AFTER, WWW_AUTHENTICATE,
};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use utoipa::ToSchema;

use crate::client::Sender;
use crate::config::CoreConfig;
use crate::envelope::json_error;
use crate::error::{panic_message, Error};
use crate::ids::{ApiKeyId, TenantId};
use crate::keys::KeyHash;
use crate::model::{Millis, PageQuery};
use crate::ports::{SharedClock, SharedQueue, SharedStore};

/// Largest request body read (API Gateway's own limit is 10 MB; Lambda's 6 MB).
pub const MAX_BODY: usize = 6 * 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: SharedStore,
    pub queue: SharedQueue,
    pub clock: SharedClock,
    pub config: Arc<CoreConfig>,
    /// Hash of the operator key; `None` disables operator routes.
    pub operator_key: Option<KeyHash>,
    /// The client for test sends; `None` where the function may not send (ingest).
    pub sender: Option<Arc<Sender>>,
    /// The dead-letter queue of the operator's routes; `None` where there is none to
    /// read (they answer 404 then).
    pub dead_letters: Option<crate::ports::SharedDeadLetters>,
}

/// An [`Error`] on its way out as an HTTP response.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match &self.0 {
            Error::Invalid { .. } => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Conflict { .. } => StatusCode::CONFLICT,
            Error::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::EndpointTest { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Backend { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self.0 {
            Error::Backend { .. } => {
                tracing::error!(error = %self.0, "request failed");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        let receiver = match &self.0 {
            // What the receiver answered, for programs to act on.
            Error::EndpointTest {
                status,
                error,
                response,
                ..
            } => Some(ReceiverAnswer {
                status: *status,
                error: error.clone(),
                response: (!response.is_empty()).then(|| response.clone()),
            }),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.0.code().to_string(),
                message,
                receiver,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Error::Overloaded { retry_after } = &self.0 {
            let seconds = retry_after.as_secs().max(1);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The body of every error answer of the JSON API.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a machine-readable `code` and a message for people.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    #[schema(example = "not_found")]
    pub code: String,
    #[schema(example = "endpoint not found")]
    pub message: String,
    /// Only with `endpoint_test_failed`: what the receiver of the test event answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver: Option<ReceiverAnswer>,
}

/// The answer to a test send: the HTTP status, or why there was none.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReceiverAnswer {
    pub status: Option<u16>,
    /// `timeout`, `connect`, `blocked`, `tls`, … when no status was received.
    pub error: Option<String>,
    /// The start of the receiver's answer body, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
}

/// A JSON request body, read up to [`MAX_BODY`] and parsed with errors in our format.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = RawBody::from_request(req, state).await?.0;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError(json_error(e)))
    }
}

/// A request body as bytes, after the media type and size checks.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
            let essence = ct.split(';').next().unwrap_or_default().trim();
            if essence != "application/json" && !essence.ends_with("+json") {
                return Err(ApiError(Error::invalid(
                    "unsupported_media_type",
                    "send the body as application/json",
                )));
            }
        }
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|_| {
                ApiError(Error::TooLarge(format!(
                    "request body is over {MAX_BODY} bytes"
                )))
            })?;
        Ok(RawBody(bytes))
    }
}

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Operator,
    Tenant { tenant: TenantId, key: ApiKeyId },
}

impl Caller {
    /// The tenant whose data this caller works on; the operator has none.
    pub fn tenant(&self) -> Result<TenantId, ApiError> {
        match self {
            Caller::Tenant { tenant, .. } => Ok(*tenant),
            Caller::Operator => Err(ApiError(Error::Forbidden(
                "this route needs a tenant API key, not the operator key",
            ))),
        }
    }

    pub fn require_operator(&self) -> Result<(), ApiError> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Tenant { .. } => Err(ApiError(Error::Forbidden(
                "this route needs the operator key",
            ))),
        }
    }

    /// The operator may act on any tenant; a tenant only on itself. Another tenant's id
    /// is "not found", never "forbidden", so ids cannot be probed.
    pub fn may_act_on(&self, tenant: TenantId) -> Result<(), ApiError> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Tenant { tenant: own, .. } if *own == tenant => Ok(()),
            Caller::Tenant { .. } => Err(ApiError(Error::NotFound("tenant"))),
        }
    }
}

/// Finds the caller of a key: the operator, or the tenant owning a live API key.
pub async fn identify(state: &AppState, key: &str) -> Result<Caller, Error> {
    let hash = KeyHash::of(key);
    if state.operator_key.as_ref() == Some(&hash) {
        return Ok(Caller::Operator);
    }
    match state.store.find_api_key(&hash).await? {
        Some(record) if record.revoked_at.is_none() => Ok(Caller::Tenant {
            tenant: record.tenant,
            key: record.id,
        }),
        _ => Err(Error::Unauthorized("invalid or revoked API key")),
    }
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AppState::from_ref(state);
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or(ApiError(Error::Unauthorized(
                "missing Authorization header",
            )))?;
        let key = header
            .to_str()
            .ok()
            .and_then(|h| {
                let (scheme, rest) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|k| !k.is_empty())
            .ok_or(ApiError(Error::Unauthorized(
                "expected Authorization: Bearer <key>",
            )))?;
        let caller = identify(&state, key).await?;
        if let (Caller::Tenant { tenant, .. }, Some(slot)) =
            (caller, parts.extensions.get::<RequestTenant>())
        {
            slot.set(tenant);
        }
        Ok(caller)
    }
}

/// The tenant a request acts as, once its key is known: filled in by whatever identifies
/// the caller, and read by the request's log line after the answer.
#[derive(Debug, Clone, Default)]
pub struct RequestTenant(Arc<OnceLock<TenantId>>);

impl RequestTenant {
    pub fn set(&self, tenant: TenantId) {
        let _ = self.0.set(tenant);
    }

    pub fn get(&self) -> Option<TenantId> {
        self.0.get().copied()
    }
}

/// The header carrying a request's id, in the request and in its answer.
pub const REQUEST_ID: &str = "x-request-id";

/// A new request id: a ULID, sortable by time like every other id of the service.
#[derive(Debug, Clone, Copy, Default)]
struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&ulid::Ulid::new().to_string())
            .ok()
            .map(RequestId::new)
    }
}

/// Counts, times and logs one answered request: one line with its id, method, route
/// template, status, latency and tenant. Never the path itself (ids are in the route's
/// place), a header or a body: keys, secrets and payloads stay out of the log.
async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = request.method().clone();
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let tenant = RequestTenant::default();
    request.extensions_mut().insert(tenant.clone());
    let response = next.run(request).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    let route = route.as_deref().unwrap_or(crate::metrics::UNMATCHED_ROUTE);
    crate::metrics::api_request(route, status, took);
    let tenant = tenant.get().map(|t| t.to_string());
    tracing::info!(
        target: "hookline::request",
        request_id = %id,
        method = %method,
        route,
        status,
        latency_ms = took.as_secs_f64() * 1000.0,
        tenant = tenant.as_deref(),
        "request"
    );
    response
}

/// Adds the JSON 404/405 answers, a JSON 500 for a handler that panics where panics
/// unwind (local mode's release build; the Lambda functions abort), and around them all
/// each request's id (`x-request-id`, the caller's when it sends one), log line and
/// metrics. Apply once to the final, merged router: the layers cover only the routes added
/// before them.
pub fn with_fallbacks(router: axum::Router) -> axum::Router {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(panicked))
        .layer(axum::middleware::from_fn(observe))
        .layer(PropagateRequestIdLayer::new(
            axum::http::HeaderName::from_static(REQUEST_ID),
        ))
        .layer(SetRequestIdLayer::new(
            axum::http::HeaderName::from_static(REQUEST_ID),
            NewRequestId,
        ))
}

/// JSON 404 for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError(Error::NotFound("route"))
}

/// JSON 405 for known routes with the wrong method.
pub async fn method_not_allowed() -> Response {
    let body = json!({"error": {"code": "method_not_allowed", "message": "method not allowed"}});
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

/// The answer to a request whose handler panicked: what the panic said goes to the log,
/// the caller gets a bare 500 like any internal error.
fn panicked(panic: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!(
        panic = panic_message(panic.as_ref()),
        "request handler panicked"
    );
    let body = json!({"error": {"code": "internal_error", "message": "internal error"}});
    (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
}

/// Formats a timestamp as RFC 3339 with milliseconds, in UTC.
pub fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An empty 204 response.
pub fn no_content() -> Response {
    (StatusCode::NO_CONTENT, Body::empty()).into_response()
}

// ---- revisions: ETag and If-Match -------------------------------------------------------

/// The entity tag of a record at one revision: a strong tag, quoted as HTTP wants it.
/// `revision` names the state of the record (its version, or what identifies an
/// immutable one), so any change gives another tag.
pub fn etag(revision: &str) -> String {
    format!("\"{revision}\"")
}

/// A response with the `ETag` of the record it shows.
pub fn with_etag(revision: &str, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    if let Ok(value) = HeaderValue::from_str(&etag(revision)) {
        response.headers_mut().insert(ETAG, value);
    }
    response
}

/// The `If-Match` of a request: `None` when absent (the change applies to whatever is
/// current), else the tags the caller accepts (`*`: any current revision).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IfMatch(Option<Vec<String>>);

impl IfMatch {
    /// Whether the request names revisions at all.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Passes when the header is absent or names the current revision (or `*`); else a
    /// 412. Weak tags never match: If-Match compares strongly.
    pub fn check(&self, current_revision: &str) -> Result<(), Error> {
        let Some(tags) = &self.0 else {
            return Ok(());
        };
        let current = etag(current_revision);
        if tags.iter().any(|t| t == "*" || *t == current) {
            Ok(())
        } else {
            Err(Error::PreconditionFailed(
                "the resource changed since the ETag given in If-Match; read it again",
            ))
        }
    }

    /// Parses the header's value: `*`, or comma-separated entity tags.
    pub fn parse(value: &str) -> Result<Self, Error> {
        let tags: Vec<String> = value
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        let well_formed = |t: &String| {
            t == "*"
                || (t.len() >= 2 && t.ends_with('"') && {
                    let opaque = t.strip_prefix("W/").unwrap_or(t);
                    opaque.len() >= 2 && opaque.starts_with('"')
                })
        };
        if tags.is_empty() || !tags.iter().all(well_formed) {
            return Err(Error::invalid(
                "invalid_if_match",
                "If-Match must be * or quoted entity tags, as the ETag header gives them",
            ));
        }
        Ok(IfMatch(Some(tags)))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let text = value
            .to_str()
            .map_err(|_| ApiError(Error::invalid("invalid_if_match", "If-Match must be ASCII")))?;
        Ok(IfMatch::parse(text)?)
    }
}

// ---- paging ------------------------------------------------------------------------------

/// The most items a listing's page holds, whatever `limit` asks.
pub const MAX_LIMIT: usize = 250;
/// Items a page holds when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 50;
/// The most bytes of JSON items one page carries. A page stops early (with a cursor to the
/// rest) rather than pass it, so that no answer comes near what Lambda (6 MB, once its
/// body is escaped into the response) and API Gateway allow; one item is always shown.
pub const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// `?cursor=&limit=` of a listing.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Page size, 1 to 250 (default 50); a page also stops before 2 MiB of items.
    #[serde(default)]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 250)]
    pub limit: Option<String>,
}

impl Paging {
    /// The store's page query: the cursor as given (an empty one is the first page) and
    /// the limit checked.
    pub fn query(&self) -> Result<PageQuery, Error> {
        Ok(PageQuery {
            after: self.cursor.clone().filter(|c| !c.is_empty()),
            limit: parse_limit(self.limit.as_deref())?,
        })
    }
}

/// A `limit` parameter: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
pub fn parse_limit(raw: Option<&str>) -> Result<usize, Error> {
    match raw {
        None => Ok(DEFAULT_LIMIT),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                Error::invalid(
                    "invalid_query",
                    format!("limit must be between 1 and {MAX_LIMIT}"),
                )
            }),
    }
}

/// A page as answered: `{"data": [...], "next_cursor"}`. Items are serialized in order
/// until the next would pass [`MAX_PAGE_BYTES`]; when the page stops there, the cursor
/// is the last shown item's key (`key`), else the store's.
pub fn page_body<T: Serialize>(
    items: &[T],
    next_cursor: Option<String>,
    key: impl Fn(&T) -> String,
) -> serde_json::Value {
    let mut data = Vec::with_capacity(items.len());
    let mut bytes = 0;
    for (i, item) in items.iter().enumerate() {
        let value = serde_json::to_value(item).expect("views serialize");
        let size = value.to_string().len();
        if i > 0 && bytes + size > MAX_PAGE_BYTES {
            let cursor = key(&items[i - 1]);
            return json!({ "data": data, "next_cursor": cursor });
        }
        bytes += size;
        data.push(value);
    }
    json!({ "data": data, "next_cursor": next_cursor })
}

/// Adds handlers annotated with `#[utoipa::path]` to an axum router at the path and methods
/// of their annotations, as `utoipa_axum::routes!` does, without building their
/// documentation: a binary that serves them this way links none of the code that builds
/// the OpenAPI document (hookline-api serves its committed `openapi.json` instead). The
/// calling crate depends on `axum`, `utoipa` and `utoipa-axum`.
#[macro_export]
macro_rules! route_documented {
    ($router:expr, $($handler:path),+ $(,)?) => {{
        use ::utoipa_axum::PathItemExt as _;
        let router = $router;
        $(
            let (path, methods) = ::utoipa_axum::paste! {(
                ::utoipa_axum::routes!(@path [path()] of $handler),
                ::utoipa_axum::routes!(@path [methods()] of $handler),
            )};
            let router = methods.iter().fold(router, |router, method| {
                router.route(&path, ::axum::routing::on(method.to_method_filter(), $handler))
            });
        )+
        router
    }};
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    async fn call(app: &axum::Router, path: &str) -> (StatusCode, Bytes) {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, body)
    }

    async fn panics() -> &'static str {
        panic!("secret internals")
    }

    #[tokio::test]
    async fn a_panicking_handler_gets_a_bare_json_500_and_the_router_serves_on() {
        let app = with_fallbacks(
            axum::Router::new()
                .route("/panics", get(panics))
                .route("/works", get(|| async { "works" })),
        );
        let (status, body) = call(&app, "/panics").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            json!({"error": {"code": "internal_error", "message": "internal error"}})
        );
        let (status, body) = call(&app, "/works").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"works");
    }
}
