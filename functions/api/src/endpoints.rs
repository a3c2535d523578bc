//! Endpoints: where a tenant's messages go, which of them, in what format, signed with
//! which secret or key.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use axum::Json;
use hookline_core::catalog;
use hookline_core::credentials::{CustomHeaders, SealedAuth};
use hookline_core::envelope::json_or_default;
use hookline_core::fields::{self, EndpointUrl, EventFilter};
use hookline_core::filter::Filter;
use hookline_core::http::{
    no_content, page_body, rfc3339, with_etag, ApiResult, AppState, Caller, ErrorBody, IfMatch,
    JsonBody, Paging, RawBody,
};
use hookline_core::ids::{EndpointId, MessageId, TenantId};
use hookline_core::model::{BodyFormat, Endpoint, EndpointStatus, Millis, Ordering};
use hookline_core::operational::{self, Operational};
use hookline_core::ports::Written;
use hookline_core::signing::{EndpointSecrets, Secret, Signing};
use hookline_core::urlpolicy::UrlPolicy;
use hookline_core::verdict::is_success;
use hookline_core::webhook::{render, Outbound};
use hookline_core::{Error, Result};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::openapi::{
    EndpointList, FormatName, OrderingName, PublicKeys, RotatedSecret, SecretKey, SigningName,
    StatusName, TestResult,
};
use crate::views::EndpointView;

/// Tries of a change whose endpoint keeps changing under it before it gives up (409).
const MAX_TRIES: usize = 5;

/// The revision an endpoint's `ETag` names.
pub fn revision(e: &Endpoint) -> String {
    format!("v{}", e.version)
}

/// The `If-Match` header of the routes that change a record.
pub const IF_MATCH_DOC: &str =
    "Only if the record is still at this `ETag` (412 otherwise; nothing is stored)";

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
    /// A condition on the payload a message must meet to be sent here; absent or `null`
    /// for every message. See the README's "Payload filters".
    #[serde(default)]
    #[schema(value_type = Option<crate::openapi::FilterNode>)]
    filter: Option<Value>,
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
    /// The signatures in `webhook-signature`: `hmac` (`v1,`, the default), `ed25519`
    /// (`v1a,`, checked with the key of `GET /v1/endpoints/{id}/public-key`) or `both`.
    #[serde(default)]
    #[schema(value_type = Option<SigningName>)]
    signing: Option<String>,
    /// Extra headers every request carries, names to values (at most 20, 8 KiB in all).
    /// Reserved, refused with 422 `invalid_headers`: `webhook-*`, `hookline-*`,
    /// `content-type`, `content-length`, `content-encoding`, `host`, `user-agent`, the
    /// hop-by-hop headers and `proxy-*`, and `authorization` when `auth` is set.
    #[serde(default)]
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>)]
    headers: Option<Value>,
    /// How requests authenticate to the receiver. Write-only: views show its kind and
    /// names, never a password, token or secret. See the README's "Receiver authentication".
    #[serde(default)]
    #[schema(value_type = Option<crate::openapi::AuthInput>)]
    auth: Option<Value>,
    /// `strict`: one message at a time, in the order accepted (per ordering key), each
    /// waiting for the one before to succeed or run out of retries; `none` when absent.
    /// See the README's "Ordered delivery".
    #[serde(default)]
    #[schema(value_type = Option<OrderingName>)]
    ordering: Option<String>,
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
    /// A payload filter; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<crate::openapi::FilterNode>)]
    filter: Option<Option<Value>>,
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
    /// `hmac`, `ed25519` or `both`; a key pair is made the first time ed25519 is chosen.
    #[serde(default)]
    #[schema(value_type = Option<SigningName>)]
    signing: Option<String>,
    /// Extra headers, replacing all of them; `null` or `{}` removes them.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>)]
    headers: Option<Option<Value>>,
    /// Receiver authentication, replacing the credentials; `null` removes them.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<crate::openapi::AuthInput>)]
    auth: Option<Option<Value>>,
    /// `strict` or `none`. Messages queued while strict stay in their sequence.
    #[serde(default)]
    #[schema(value_type = Option<OrderingName>)]
    ordering: Option<String>,
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
    EndpointUrl::parse(policy, url).map(EndpointUrl::into_string)
}

/// A PATCH, its fields parsed and checked once: what it sets, applied to whichever copy
/// of the endpoint is current when it is written.
struct Patch {
    url: Option<String>,
    event_types: Option<Option<Vec<String>>>,
    domain: Option<Option<String>>,
    filter: Option<Option<Filter>>,
    description: Option<String>,
    format: Option<BodyFormat>,
    status: Option<EndpointStatus>,
    rate_limit: Option<Option<u32>>,
    signing: Option<Signing>,
    headers: Option<CustomHeaders>,
    auth: Option<Option<SealedAuth>>,
    ordering: Option<Ordering>,
}

impl Patch {
    async fn parse(
        state: &AppState,
        tenant: TenantId,
        id: EndpointId,
        req: UpdateEndpoint,
    ) -> Result<Self> {
        // Whether the headers may hold `authorization` is settled on the patched endpoint.
        let headers = req
            .headers
            .map(|h| fields::headers(h.as_ref(), false))
            .transpose()?;
        let auth = req
            .auth
            .map(|a| {
                fields::auth(
                    a.as_ref(),
                    &state.config.url_policy,
                    state.config.credentials_key.as_ref(),
                    id,
                )
            })
            .transpose()?;
        let rate_limit = req
            .rate_limit
            .map(|limit| fields::rate_limit(limit.as_ref()))
            .transpose()?;
        let url = req
            .url
            .map(|url| validate_url(&state.config.url_policy, &url))
            .transpose()?;
        let filter = req.filter.map(|f| fields::filter(f.as_ref())).transpose()?;
        let event_types = match req.event_types {
            Some(types) => Some(
                EventFilter::parse(state.store.as_ref(), types)
                    .await?
                    .into_inner(),
            ),
            None => None,
        };
        let description = req
            .description
            .map(|d| fields::description(Some(d)))
            .transpose()?;
        let format = req.format.map(|f| fields::format(Some(&f))).transpose()?;
        let status = req.status.map(|s| fields::status(&s)).transpose()?;
        let ordering = req
            .ordering
            .map(|o| fields::ordering(Some(&o), state.queue.keeps_order()))
            .transpose()?;
        let domain = match req.domain {
            Some(domain) => Some(fields::scope(state.store.as_ref(), tenant, domain).await?),
            None => None,
        };
        let signing = req.signing.map(|s| fields::signing(Some(&s))).transpose()?;
        Ok(Patch {
            url,
            event_types,
            domain,
            filter,
            description,
            format,
            status,
            rate_limit,
            signing,
            headers,
            auth,
            ordering,
        })
    }

    /// The endpoint with this patch's fields set.
    fn apply(&self, mut endpoint: Endpoint, now: Millis) -> Endpoint {
        if let Some(limit) = self.rate_limit {
            endpoint.rate_limit = limit;
        }
        if let Some(url) = &self.url {
            endpoint.url = url.clone();
        }
        if let Some(types) = &self.event_types {
            endpoint.event_types = types.clone();
        }
        if let Some(description) = &self.description {
            endpoint.description = description.clone();
        }
        if let Some(format) = self.format {
            endpoint.format = format;
        }
        if let Some(domain) = &self.domain {
            endpoint.domain = domain.clone();
        }
        if let Some(filter) = &self.filter {
            endpoint.filter = filter.clone();
        }
        if let Some(signing) = self.signing {
            endpoint.secrets.set_signing(signing);
        }
        if let Some(headers) = &self.headers {
            endpoint.headers = headers.clone();
        }
        if let Some(auth) = &self.auth {
            endpoint.auth = auth.clone();
        }
        if let Some(ordering) = self.ordering {
            endpoint.ordering = ordering;
        }
        match self.status {
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
                    endpoint.disabled_at = Some(now);
                }
                endpoint.status = EndpointStatus::Disabled;
            }
            None => {}
        }
        endpoint.updated_at = now;
        endpoint
    }

    /// The first field this patch sets that another change made between `read` and
    /// `fresh` changed too: applying the patch over it would silently undo that change.
    fn clashes_with(&self, read: &Endpoint, fresh: &Endpoint) -> Option<&'static str> {
        let touched = [
            ("url", self.url.is_some() && read.url != fresh.url),
            (
                "event_types",
                self.event_types.is_some() && read.event_types != fresh.event_types,
            ),
            (
                "domain",
                self.domain.is_some() && read.domain != fresh.domain,
            ),
            (
                "filter",
                self.filter.is_some() && read.filter != fresh.filter,
            ),
            (
                "description",
                self.description.is_some() && read.description != fresh.description,
            ),
            (
                "format",
                self.format.is_some() && read.format != fresh.format,
            ),
            (
                "status",
                self.status.is_some() && read.status != fresh.status,
            ),
            (
                "rate_limit",
                self.rate_limit.is_some() && read.rate_limit != fresh.rate_limit,
            ),
            (
                "signing",
                self.signing.is_some() && read.secrets.signing() != fresh.secrets.signing(),
            ),
            (
                "headers",
                self.headers.is_some() && read.headers != fresh.headers,
            ),
            ("auth", self.auth.is_some() && read.auth != fresh.auth),
            (
                "ordering",
                self.ordering.is_some() && read.ordering != fresh.ordering,
            ),
        ];
        touched
            .into_iter()
            .find(|(_, clash)| *clash)
            .map(|(name, _)| name)
    }
}

/// What a test event to an endpoint depends on: verified once, a copy that agrees on all
/// of it needs no second test.
fn test_target(e: &Endpoint) -> TestTarget {
    (
        e.url.clone(),
        e.format,
        e.secrets.current.expose().to_string(),
        e.event_types.as_ref().and_then(|t| t.first().cloned()),
        e.secrets.signing(),
        e.headers.clone(),
        e.auth.as_ref().map(|a| a.sealed.clone()),
    )
}

type TestTarget = (
    String,
    BodyFormat,
    String,
    Option<String>,
    Signing,
    CustomHeaders,
    Option<Vec<u8>>,
);

fn clash(field: &str) -> Error {
    Error::conflict(
        "concurrent_update",
        format!(
            "the endpoint's {field} was changed by another request meanwhile; read it again \
             and retry"
        ),
    )
}

fn still_changing() -> Error {
    Error::conflict(
        "concurrent_update",
        "the endpoint kept changing under this request; read it again and retry",
    )
}

#[utoipa::path(
    post,
    path = "/v1/endpoints",
    tag = "endpoints",
    operation_id = "create_endpoint",
    request_body = CreateEndpoint,
    responses(
        (status = 201, description = "The endpoint", body = EndpointView,
            headers(("ETag" = String, description = "The endpoint's revision, for `If-Match`"))),
        (status = 400, description = "Invalid body, URL, event type, domain, format, secret or signing", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
        (status = 409, description = "`too_many_endpoints`: the tenant has as many endpoints as the deployment allows (`HOOKLINE_MAX_ENDPOINTS`); nothing was stored", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "`invalid_ordering`, `ordering_unavailable` (no ordered queue), `rate_limit` out of range, `invalid_filter` (the message names the node by JSON pointer and the fault), `invalid_headers` or `invalid_auth` (the message names the field, e.g. `headers.connection` or `auth.password`), `auth_unavailable` (the deployment has no credentials key), or `verify`: the test event got no 2xx; nothing was saved", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<CreateEndpoint>,
) -> ApiResult<Response> {
    create_for(&state, caller.tenant()?, req).await
}

/// Creates an endpoint of `tenant`'s (the operator's, under its reserved tenant).
pub(crate) async fn create_for(
    state: &AppState,
    tenant: TenantId,
    req: CreateEndpoint,
) -> ApiResult<Response> {
    let rate_limit = fields::rate_limit(req.rate_limit.as_ref())?;
    let url = validate_url(&state.config.url_policy, &req.url)?;
    let filter = fields::filter(req.filter.as_ref())?;
    let event_types = EventFilter::parse(state.store.as_ref(), req.event_types)
        .await?
        .into_inner();
    let description = fields::description(req.description)?;
    let format = fields::format(req.format.as_deref())?;
    let secret = match req.secret.as_deref() {
        Some(s) => fields::secret(s)?,
        None => Secret::generate(),
    };
    let domain = fields::scope(state.store.as_ref(), tenant, req.domain).await?;
    let mut secrets = EndpointSecrets::new(secret);
    secrets.set_signing(fields::signing(req.signing.as_deref())?);
    let id = EndpointId::new();
    let auth = fields::auth(
        req.auth.as_ref(),
        &state.config.url_policy,
        state.config.credentials_key.as_ref(),
        id,
    )?;
    let headers = fields::headers(req.headers.as_ref(), auth.is_some())?;
    let ordering = fields::ordering(req.ordering.as_deref(), state.queue.keeps_order())?;
    let now = state.clock.now();
    let endpoint = Endpoint {
        id,
        tenant,
        url,
        description,
        event_types,
        domain,
        filter,
        format,
        secrets,
        status: EndpointStatus::Active,
        disabled_reason: None,
        disabled_at: None,
        failing_since: None,
        rate_limit,
        created_at: now,
        updated_at: now,
        version: 1,
        headers,
        auth,
        ordering,
    };
    if req.verify {
        verify(state, &endpoint).await?;
    }
    state
        .store
        .create_endpoint(&endpoint, state.config.max_endpoints)
        .await?;
    tracing::info!(tenant = %tenant, endpoint = %endpoint.id, "endpoint created");
    Ok(with_etag(
        &revision(&endpoint),
        (StatusCode::CREATED, Json(EndpointView::from(&endpoint))),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/endpoints",
    tag = "endpoints",
    operation_id = "list_endpoints",
    params(Paging),
    responses(
        (status = 200, description = "A page of the caller's endpoints, oldest first", body = EndpointList),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<Paging>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    list_for(&state, caller.tenant()?, query).await
}

pub(crate) async fn list_for(
    state: &AppState,
    tenant: TenantId,
    query: Result<Query<Paging>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let paging = paging(query)?;
    let page = state
        .store
        .list_endpoints_page(tenant, &paging.query()?)
        .await?;
    let views: Vec<EndpointView> = page.items.iter().map(EndpointView::from).collect();
    Ok(Json(page_body(&views, page.next_cursor, |v| {
        v.id.to_string()
    })))
}

/// A listing's `?cursor=&limit=`, refused with our error body when malformed.
pub fn paging(query: Result<Query<Paging>, QueryRejection>) -> Result<Paging> {
    query
        .map(|Query(q)| q)
        .map_err(|e| Error::invalid("invalid_query", e.body_text()))
}

async fn load(state: &AppState, tenant: TenantId, id: &str) -> ApiResult<Endpoint> {
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
        (status = 200, description = "The endpoint", body = EndpointView,
            headers(("ETag" = String, description = "The endpoint's revision, for `If-Match`"))),
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
) -> ApiResult<Response> {
    get_for(&state, caller.tenant()?, &id).await
}

pub(crate) async fn get_for(state: &AppState, tenant: TenantId, id: &str) -> ApiResult<Response> {
    let endpoint = load(state, tenant, id).await?;
    Ok(with_etag(
        &revision(&endpoint),
        Json(EndpointView::from(&endpoint)),
    ))
}

/// Changes the fields given. Made on the endpoint as it is when the change is written:
/// a change made meanwhile to other fields (another request, the worker's health updates)
/// is kept; one made to a field this request sets too gets this request a 409, and with
/// `If-Match` any change made since that revision gets it a 412. Nothing is stored then.
#[utoipa::path(
    patch,
    path = "/v1/endpoints/{id}",
    tag = "endpoints",
    operation_id = "update_endpoint",
    params(
        ("id" = String, Path, description = "Endpoint id (`ep_…`)"),
        ("If-Match" = Option<String>, Header, description = IF_MATCH_DOC),
    ),
    request_body = UpdateEndpoint,
    responses(
        (status = 200, description = "The changed endpoint", body = EndpointView,
            headers(("ETag" = String, description = "The endpoint's new revision"))),
        (status = 400, description = "Invalid body, field or If-Match", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
        (status = 404, description = "Not one of the caller's endpoints (or deleted meanwhile)", body = ErrorBody),
        (status = 409, description = "`concurrent_update`: another request changed a field this one sets; nothing was saved", body = ErrorBody),
        (status = 412, description = "`precondition_failed`: the endpoint is no longer at the `If-Match` revision; nothing was saved", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "`invalid_ordering`, `ordering_unavailable` (no ordered queue), `rate_limit` out of range, `invalid_filter` (the message names the node by JSON pointer and the fault), `invalid_headers` or `invalid_auth` (the message names the field, e.g. `headers.connection` or `auth.password`), `auth_unavailable` (the deployment has no credentials key), or `verify`: the test event got no 2xx; nothing was saved", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    if_match: IfMatch,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<UpdateEndpoint>,
) -> ApiResult<Response> {
    update_for(&state, caller.tenant()?, &if_match, &id, req).await
}

pub(crate) async fn update_for(
    state: &AppState,
    tenant: TenantId,
    if_match: &IfMatch,
    id: &str,
    req: UpdateEndpoint,
) -> ApiResult<Response> {
    let mut read = load(state, tenant, id).await?;
    let verify_first = req.verify;
    let patch = Patch::parse(state, read.tenant, read.id, req).await?;
    let mut verified = None;
    for _ in 0..MAX_TRIES {
        if_match.check(&revision(&read))?;
        let next = patch.apply(read.clone(), state.clock.now());
        fields::headers_agree(&next.headers, next.auth.is_some())?;
        if verify_first && verified.as_ref() != Some(&test_target(&next)) {
            verify(state, &next).await?;
            verified = Some(test_target(&next));
        }
        match state.store.update_endpoint(&next, read.version).await? {
            Written::Done => {
                let stored = Endpoint {
                    version: read.version + 1,
                    ..next
                };
                // Told once per change, by the request that made it (the others found the
                // endpoint changed and read it again), as delivery tells its own disabling.
                let change = match (read.status, stored.status) {
                    (EndpointStatus::Disabled, EndpointStatus::Active) => {
                        Some(Operational::EndpointEnabled {
                            endpoint: stored.id,
                            at: stored.updated_at,
                        })
                    }
                    (EndpointStatus::Active, EndpointStatus::Disabled) => {
                        Some(Operational::EndpointDisabled {
                            endpoint: stored.id,
                            reason: stored.disabled_reason.clone().unwrap_or_default(),
                            failing_since: stored.failing_since,
                            at: stored.disabled_at.unwrap_or(stored.updated_at),
                        })
                    }
                    _ => None,
                };
                if let Some(event) = change {
                    operational::publish(state.queue.as_ref(), stored.tenant, event).await;
                }
                return Ok(with_etag(
                    &revision(&stored),
                    Json(EndpointView::from(&stored)),
                ));
            }
            Written::Missing => return Err(Error::NotFound("endpoint").into()),
            Written::Stale => {
                let fresh = load(state, tenant, id).await?;
                if_match.check(&revision(&fresh))?;
                if let Some(field) = patch.clashes_with(&read, &fresh) {
                    return Err(clash(field).into());
                }
                read = fresh;
            }
        }
    }
    Err(still_changing().into())
}

#[utoipa::path(
    delete,
    path = "/v1/endpoints/{id}",
    tag = "endpoints",
    operation_id = "delete_endpoint",
    params(
        ("id" = String, Path, description = "Endpoint id (`ep_…`)"),
        ("If-Match" = Option<String>, Header, description = IF_MATCH_DOC),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid If-Match", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
        (status = 404, description = "Not one of the caller's endpoints", body = ErrorBody),
        (status = 412, description = "`precondition_failed`: the endpoint is no longer at the `If-Match` revision; nothing was deleted", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    if_match: IfMatch,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    delete_for(&state, caller.tenant()?, &if_match, &id).await
}

pub(crate) async fn delete_for(
    state: &AppState,
    tenant: TenantId,
    if_match: &IfMatch,
    id: &str,
) -> ApiResult<Response> {
    let endpoint = load(state, tenant, id).await?;
    if_match.check(&revision(&endpoint))?;
    let expected = if_match.is_set().then_some(endpoint.version);
    match state
        .store
        .delete_endpoint(endpoint.tenant, endpoint.id, expected)
        .await?
    {
        Written::Done => {}
        Written::Missing => return Err(Error::NotFound("endpoint").into()),
        Written::Stale => {
            return Err(Error::PreconditionFailed(
                "the endpoint changed since the ETag given in If-Match; read it again",
            )
            .into())
        }
    }
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
    secret_for(&state, caller.tenant()?, &id).await
}

pub(crate) async fn secret_for(
    state: &AppState,
    tenant: TenantId,
    id: &str,
) -> ApiResult<Json<Value>> {
    let endpoint = load(state, tenant, id).await?;
    Ok(Json(json!({ "key": endpoint.secrets.current.expose() })))
}

/// The endpoint's ed25519 public key (`whpk_…`), to check its `v1a` signatures with, and
/// the keys retired by a rotation that still sign until their expiry.
#[utoipa::path(
    get,
    path = "/v1/endpoints/{id}/public-key",
    tag = "endpoints",
    operation_id = "get_endpoint_public_key",
    params(("id" = String, Path, description = "Endpoint id (`ep_…`)")),
    responses(
        (status = 200, description = "The current public key and those still signing after a rotation", body = PublicKeys),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
        (status = 404, description = "Not one of the caller's endpoints", body = ErrorBody),
        (status = 409, description = "`no_public_key`: the endpoint has never signed with ed25519 (set `signing` to `ed25519` or `both`)", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn public_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let endpoint = load(&state, caller.tenant()?, &id).await?;
    Ok(Json(public_keys(&endpoint, state.clock.now())?))
}

/// `{"key", "previous": [{"key", "expires_at"}]}` of an endpoint with ed25519 keys.
pub(crate) fn public_keys(endpoint: &Endpoint, now: Millis) -> Result<Value> {
    let (current, previous) = endpoint.secrets.public_keys(now).ok_or_else(|| {
        Error::conflict(
            "no_public_key",
            "the endpoint has never signed with ed25519; set its signing to ed25519 or both",
        )
    })?;
    let previous: Vec<Value> = previous
        .iter()
        .map(|p| json!({"key": p.key.expose(), "expires_at": p.expires_at.map(rfc3339)}))
        .collect();
    Ok(json!({ "key": current.expose(), "previous": previous }))
}

/// Makes a new secret current, and a new ed25519 key if the endpoint has one. The old
/// ones keep signing for the grace period, so receivers can switch without dropping a
/// message. Two rotations at once: the later one
/// gets a 409 rather than retire a secret nobody was shown.
#[utoipa::path(
    post,
    path = "/v1/endpoints/{id}/secret/rotate",
    tag = "endpoints",
    operation_id = "rotate_endpoint_secret",
    params(
        ("id" = String, Path, description = "Endpoint id (`ep_…`)"),
        ("If-Match" = Option<String>, Header, description = IF_MATCH_DOC),
    ),
    request_body = Option<RotateSecret>,
    responses(
        (status = 200, description = "The new current secret (and public key); the old ones sign for the grace period too", body = RotatedSecret,
            headers(("ETag" = String, description = "The endpoint's new revision"))),
        (status = 400, description = "Invalid body, secret or If-Match", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
        (status = 404, description = "Not one of the caller's endpoints", body = ErrorBody),
        (status = 409, description = "`concurrent_update`: the secret was rotated by another request meanwhile", body = ErrorBody),
        (status = 412, description = "`precondition_failed`: the endpoint is no longer at the `If-Match` revision", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    if_match: IfMatch,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let tenant = caller.tenant()?;
    let mut read = load(&state, tenant, &id).await?;
    let req: RotateSecret = json_or_default(&body)?;
    let next_secret = match req.key.as_deref() {
        Some(s) => fields::secret(s)?,
        None => Secret::generate(),
    };
    let grace = state.config.secret_grace.as_millis() as i64;
    for _ in 0..MAX_TRIES {
        if_match.check(&revision(&read))?;
        let now = state.clock.now();
        let mut next = read.clone();
        next.secrets.rotate(next_secret.clone(), now, grace);
        next.updated_at = now;
        match state.store.update_endpoint(&next, read.version).await? {
            Written::Done => {
                tracing::info!(tenant = %next.tenant, endpoint = %next.id, "endpoint secret rotated");
                let stored = Endpoint {
                    version: read.version + 1,
                    ..next
                };
                let mut body = json!({ "key": stored.secrets.current.expose() });
                if let Some((public, _)) = stored.secrets.public_keys(now) {
                    body["public_key"] = json!(public.expose());
                }
                return Ok(with_etag(&revision(&stored), Json(body)));
            }
            Written::Missing => return Err(Error::NotFound("endpoint").into()),
            Written::Stale => {
                let fresh = load(&state, tenant, &id).await?;
                if_match.check(&revision(&fresh))?;
                if fresh.secrets != read.secrets {
                    return Err(clash("secret").into());
                }
                read = fresh;
            }
        }
    }
    Err(still_changing().into())
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
    let endpoint = load(&state, caller.tenant()?, &id).await?;
    let req: TestRequest = json_or_default(&body)?;
    let sent = send_test(&state, &endpoint, req.event_type.as_deref()).await?;
    let ok = is_success(sent.response.status);
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
    let response = sender
        .deliver(
            endpoint,
            state.config.credentials_key.as_ref(),
            headers,
            body,
        )
        .await;
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
    if is_success(r.status) {
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
        response: r.excerpt,
    }
    .into())
}
