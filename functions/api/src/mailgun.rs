//! Mailgun's webhooks API (`/v3/domains/{domain}/webhooks`), so that Mailgun's clients and
//! scripts manage Hookline webhooks unchanged: HTTP Basic auth (`api` and a tenant API key),
//! form bodies (multipart or urlencoded, `url` repeated), Mailgun's response shapes.
//!
//! Underneath, a Mailgun webhook is one ordinary endpoint per URL: scoped to the domain,
//! subscribed to exactly the webhook's event type, in the `mailgun` body format. This
//! module manages exactly those endpoints of a domain (`event_types == [name]`, format
//! `mailgun`); they show up in `/v1/endpoints` like any other.

use axum::extract::{FromRef, FromRequest, FromRequestParts, Multipart, Path, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hookline_core::fields::{domain_name, EndpointUrl};
use hookline_core::http::{identify, with_etag, ApiError, AppState, IfMatch, RequestTenant};
use hookline_core::ids::{EndpointId, TenantId};
use hookline_core::model::{BodyFormat, Endpoint, EndpointStatus, Millis};
use hookline_core::ports::Written;
use hookline_core::signing::{EndpointSecrets, Secret};
use hookline_core::Error;
use serde_json::{json, Map, Value};

use crate::endpoints::{send_test, validate_url, IF_MATCH_DOC};
use crate::openapi::{
    MailgunChanged, MailgunCreateForm, MailgunErrorBody, MailgunTestForm, MailgunTestResult,
    MailgunUpdateForm, MailgunWebhook, MailgunWebhookList,
};

/// Mailgun's limit of URLs per webhook name and domain.
const MAX_URLS: usize = 3;
/// Tries of a change whose webhook keeps changing under it before it gives up.
const MAX_TRIES: usize = 5;
/// Largest form body read, multipart or urlencoded.
const MAX_FORM: usize = 64 * 1024;

/// The webhook names, in Mailgun's spelling; each is also a Hookline event type.
const NAMES: [&str; 8] = [
    "accepted",
    "delivered",
    "opened",
    "clicked",
    "unsubscribed",
    "complained",
    "permanent_fail",
    "temporary_fail",
];

/// A webhook name or one of the aliases Mailgun's docs list, as its canonical name.
fn canonical(name: &str) -> Option<&'static str> {
    let alias = match name {
        "click" => "clicked",
        "open" => "opened",
        "unsubscribe" => "unsubscribed",
        "deliver" => "delivered",
        "bounce" | "drop" => "permanent_fail",
        "spam" => "complained",
        other => other,
    };
    NAMES.iter().copied().find(|n| *n == alias)
}

/// An error in Mailgun's shape, `{"message"}`, with Hookline's machine-readable `"code"`
/// beside it (an `error` object would replace the message in Mailgun's clients).
#[derive(Debug)]
pub struct MailgunError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

type MailgunResult<T> = Result<T, MailgunError>;

impl MailgunError {
    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        MailgunError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        MailgunError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
        }
    }
}

impl From<Error> for MailgunError {
    fn from(e: Error) -> Self {
        let api = ApiError(e);
        let status = api.status();
        let e = api.0;
        let message = match &e {
            Error::Backend { .. } => {
                tracing::error!(error = %e, "request failed");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        MailgunError {
            status,
            code: e.code(),
            message,
        }
    }
}

impl From<ApiError> for MailgunError {
    fn from(e: ApiError) -> Self {
        MailgunError::from(e.0)
    }
}

impl IntoResponse for MailgunError {
    fn into_response(self) -> Response {
        // Mailgun's shape, `message`, which its clients show; the machine-readable code sits
        // beside it as `code`. (An `error` object would replace the message in mailgun.js.)
        let body = json!({"message": self.message, "code": self.code});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Hookline\""),
            );
        }
        response
    }
}

/// The tenant of a request, from `Authorization: Basic` with the user `api` and a tenant
/// API key as the password, as Mailgun's clients send it.
pub struct MailgunTenant(pub TenantId);

impl<S> FromRequestParts<S> for MailgunTenant
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = MailgunError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> MailgunResult<Self> {
        let state = AppState::from_ref(state);
        let key = basic_password(&parts.headers)?;
        let caller = identify(&state, &key).await?;
        let tenant = caller.tenant()?;
        if let Some(slot) = parts.extensions.get::<RequestTenant>() {
            slot.set(tenant);
        }
        Ok(MailgunTenant(tenant))
    }
}

/// `If-Match`, refused in Mailgun's error shape when malformed.
pub struct MailgunIfMatch(IfMatch);

impl<S: Send + Sync> FromRequestParts<S> for MailgunIfMatch {
    type Rejection = MailgunError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> MailgunResult<Self> {
        Ok(MailgunIfMatch(
            IfMatch::from_request_parts(parts, state).await?,
        ))
    }
}

/// The API key of `Authorization: Basic base64("api:<key>")`.
fn basic_password(headers: &HeaderMap) -> MailgunResult<String> {
    let header = headers
        .get(AUTHORIZATION)
        .ok_or(Error::Unauthorized("missing Authorization header"))?;
    let expected = Error::Unauthorized("expected HTTP Basic auth with the user api and an API key");
    let credentials = header
        .to_str()
        .ok()
        .and_then(|h| {
            let (scheme, rest) = h.split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then(|| rest.trim())
        })
        .and_then(|b64| STANDARD.decode(b64).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let Some(credentials) = credentials else {
        return Err(expected.into());
    };
    match credentials.split_once(':') {
        Some(("api", key)) if !key.is_empty() => Ok(key.to_string()),
        _ => Err(expected.into()),
    }
}

/// A form body: its fields in order, repeated names kept.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Form(Vec<(String, String)>);

impl Form {
    /// The fields as sent: names and values, in order.
    pub fn fields(&self) -> &[(String, String)] {
        &self.0
    }

    fn first(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a `multipart/form-data` or `application/x-www-form-urlencoded` body (a request
/// without a body is an empty form) of at most [`MAX_FORM`] bytes.
async fn read_form(req: Request) -> MailgunResult<Form> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // An unsupported type is refused before its body is read.
    form_kind(content_type.as_deref())?;
    let bytes = axum::body::to_bytes(req.into_body(), MAX_FORM)
        .await
        .map_err(|_| Error::TooLarge(format!("form body is over {MAX_FORM} bytes")))?;
    parse_form(content_type.as_deref(), &bytes).await
}

/// The two form encodings Mailgun's clients send.
enum FormKind {
    Multipart,
    Urlencoded,
}

/// The encoding a `Content-Type` names; none at all is read as urlencoded.
fn form_kind(content_type: Option<&str>) -> MailgunResult<FormKind> {
    let essence = content_type.map(|ct| {
        ct.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    match essence.as_deref() {
        Some("multipart/form-data") => Ok(FormKind::Multipart),
        None | Some("application/x-www-form-urlencoded") => Ok(FormKind::Urlencoded),
        Some(_) => Err(MailgunError::bad(
            "unsupported_media_type",
            "send the form as multipart/form-data or application/x-www-form-urlencoded",
        )),
    }
}

/// Parses a form body already read in full, given its `Content-Type`. Every refusal is a
/// 400 with a code; nothing here touches storage.
pub async fn parse_form(content_type: Option<&str>, body: &[u8]) -> MailgunResult<Form> {
    match form_kind(content_type)? {
        FormKind::Multipart => {
            let malformed = |e: axum::extract::multipart::MultipartError| {
                MailgunError::bad("invalid_form", format!("malformed multipart body: {e}"))
            };
            let header = content_type
                .and_then(|ct| HeaderValue::from_str(ct).ok())
                .ok_or_else(|| MailgunError::bad("invalid_form", "malformed Content-Type"))?;
            let mut req = Request::new(axum::body::Body::from(body.to_vec()));
            req.headers_mut().insert(CONTENT_TYPE, header);
            let mut multipart = Multipart::from_request(req, &())
                .await
                .map_err(|e| MailgunError::bad("invalid_form", e.body_text()))?;
            let mut fields = Vec::new();
            while let Some(field) = multipart.next_field().await.map_err(malformed)? {
                let name = field.name().unwrap_or_default().to_string();
                let value = field.text().await.map_err(malformed)?;
                fields.push((name, value));
            }
            Ok(Form(fields))
        }
        FormKind::Urlencoded => Ok(Form(
            url::form_urlencoded::parse(body).into_owned().collect(),
        )),
    }
}

/// The domain's name, if the tenant has it.
async fn known_domain(state: &AppState, tenant: TenantId, name: &str) -> MailgunResult<String> {
    let name = domain_name(name);
    match state.store.get_domain(tenant, &name).await? {
        Some(_) => Ok(name),
        None => Err(MailgunError::not_found("Domain not found")),
    }
}

/// The endpoints standing for the domain's Mailgun webhooks, oldest first.
async fn webhooks(
    state: &AppState,
    tenant: TenantId,
    domain: &str,
) -> hookline_core::Result<Vec<Endpoint>> {
    let mut all = state.store.list_endpoints(tenant).await?;
    all.retain(|e| {
        e.format == BodyFormat::Mailgun
            && e.domain.as_deref() == Some(domain)
            && webhook_name(e).is_some()
    });
    Ok(all)
}

/// The webhook an endpoint stands for: its one event type, if that is a webhook name.
fn webhook_name(e: &Endpoint) -> Option<&'static str> {
    match e.event_types.as_deref() {
        Some([one]) => NAMES.iter().copied().find(|n| n == one),
        _ => None,
    }
}

fn named<'a>(hooks: &'a [Endpoint], name: &str) -> Vec<&'a Endpoint> {
    hooks
        .iter()
        .filter(|e| webhook_name(e) == Some(name))
        .collect()
}

fn unknown_name(name: &str) -> String {
    format!(
        "unknown webhook name {name:?}; valid names are {}",
        NAMES.join(", ")
    )
}

/// The `url` fields: at least one, at most [`MAX_URLS`], each allowed by the URL policy;
/// repeats are dropped, and they are sorted as [`urls_of`] lists them.
fn form_urls(state: &AppState, form: &Form) -> MailgunResult<Vec<String>> {
    let given: Vec<&str> = form
        .all("url")
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    if given.is_empty() {
        return Err(MailgunError::bad("missing_url", "url is required"));
    }
    let mut urls: Vec<String> = Vec::with_capacity(given.len());
    for url in given {
        let url = EndpointUrl::parse(&state.config.url_policy, url)?.into_string();
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    urls.sort();
    if urls.len() > MAX_URLS {
        return Err(MailgunError::bad(
            "too_many_urls",
            format!("a webhook takes at most {MAX_URLS} urls"),
        ));
    }
    Ok(urls)
}

/// The group of endpoints standing for a webhook: each change of them is conditional on
/// its version, so concurrent changes cannot interleave (two creates cannot both add URLs,
/// so the limit of [`MAX_URLS`] holds).
fn group(domain: &str, name: &str) -> String {
    format!("mailgun#{domain}#{name}")
}

/// The revision a webhook's `ETag` names.
fn group_revision(version: u64) -> String {
    format!("g{version}")
}

/// A new endpoint standing for one URL of a webhook.
fn new_endpoint(
    state: &AppState,
    tenant: TenantId,
    domain: &str,
    name: &str,
    url: &str,
) -> Endpoint {
    let secrets = EndpointSecrets::new(Secret::generate());
    webhook_endpoint(tenant, domain, name, url, secrets, state.clock.now())
}

/// An unsaved endpoint in a webhook's shape: one URL of webhook `name` of `domain`.
fn webhook_endpoint(
    tenant: TenantId,
    domain: &str,
    name: &str,
    url: &str,
    secrets: EndpointSecrets,
    now: Millis,
) -> Endpoint {
    Endpoint {
        id: EndpointId::new(),
        tenant,
        url: url.to_string(),
        description: format!("mailgun webhook {name}"),
        event_types: Some(vec![name.to_string()]),
        domain: Some(domain.to_string()),
        format: BodyFormat::Mailgun,
        secrets,
        status: EndpointStatus::Active,
        disabled_reason: None,
        disabled_at: None,
        failing_since: None,
        rate_limit: None,
        filter: None,
        created_at: now,
        updated_at: now,
        version: 1,
        headers: Default::default(),
        auth: None,
        ordering: Default::default(),
    }
}

/// A webhook's endpoints and the version of its group, read together; `change` says
/// what to remove and add given them (or refuses), and the change is written if neither
/// moved meanwhile, else read and decided again. Returns the endpoints it replaced and
/// the group's new version.
async fn change_webhook<F>(
    state: &AppState,
    tenant: TenantId,
    domain: &str,
    name: &str,
    if_match: &IfMatch,
    change: F,
) -> MailgunResult<(Vec<Endpoint>, u64)>
where
    F: Fn(&[Endpoint]) -> MailgunResult<(Vec<Endpoint>, Vec<String>)>,
{
    let group = group(domain, name);
    for _ in 0..MAX_TRIES {
        let version = state.store.endpoint_group_version(tenant, &group).await?;
        if_match.check(&group_revision(version))?;
        let hooks = webhooks(state, tenant, domain).await?;
        let current: Vec<Endpoint> = named(&hooks, name).into_iter().cloned().collect();
        let (remove, add_urls) = change(&current)?;
        let add: Vec<Endpoint> = add_urls
            .iter()
            .map(|url| new_endpoint(state, tenant, domain, name, url))
            .collect();
        let written = state
            .store
            .update_endpoint_group(
                tenant,
                &group,
                version,
                &remove,
                &add,
                state.config.max_endpoints,
            )
            .await?;
        if written == Written::Done {
            for e in &add {
                tracing::info!(tenant = %tenant, endpoint = %e.id, webhook = name, "mailgun webhook url added");
            }
            return Ok((current, version + 1));
        }
    }
    Err(Error::conflict(
        "concurrent_update",
        "the webhook kept changing under this request; try again",
    )
    .into())
}

/// A webhook's URLs, sorted: endpoints made in the same millisecond have no set order.
fn urls_of(hooks: &[&Endpoint]) -> Vec<String> {
    let mut urls: Vec<String> = hooks.iter().map(|e| e.url.clone()).collect();
    urls.sort();
    urls
}

/// `GET /v3/domains/{domain}/webhooks`: every webhook name that has URLs.
#[utoipa::path(
    get,
    path = "/v3/domains/{domain}/webhooks",
    tag = "mailgun",
    operation_id = "mailgun_list_webhooks",
    params(("domain" = String, Path, description = "Domain name")),
    responses(
        (status = 200, description = "The names that have URLs", body = MailgunWebhookList),
        (status = 401, description = "No valid credentials", body = MailgunErrorBody),
        (status = 403, description = "The operator key", body = MailgunErrorBody),
        (status = 404, description = "Not one of the caller's domains", body = MailgunErrorBody),
    ),
    security(("mailgun_basic" = []))
)]
pub async fn list(
    MailgunTenant(tenant): MailgunTenant,
    State(state): State<AppState>,
    Path(domain): Path<String>,
) -> MailgunResult<Json<Value>> {
    let domain = known_domain(&state, tenant, &domain).await?;
    let mut out = Map::new();
    for (name, urls) in webhook_urls(&state, tenant, &domain).await? {
        out.insert(name.to_string(), json!({ "urls": urls }));
    }
    Ok(Json(json!({ "webhooks": out })))
}

/// Each webhook name of a domain that has URLs, with its URLs, in Mailgun's name order
/// (what the portal's view of a domain shows too).
pub(crate) async fn webhook_urls(
    state: &AppState,
    tenant: TenantId,
    domain: &str,
) -> hookline_core::Result<Vec<(&'static str, Vec<String>)>> {
    let hooks = webhooks(state, tenant, domain).await?;
    Ok(NAMES
        .iter()
        .map(|name| (*name, urls_of(&named(&hooks, name))))
        .filter(|(_, urls)| !urls.is_empty())
        .collect())
}

/// `POST /v3/domains/{domain}/webhooks` with the fields `id` (the name) and `url`.
#[utoipa::path(
    post,
    path = "/v3/domains/{domain}/webhooks",
    tag = "mailgun",
    operation_id = "mailgun_create_webhook",
    params(("domain" = String, Path, description = "Domain name")),
    request_body(content(
        (MailgunCreateForm = "application/x-www-form-urlencoded"),
        (MailgunCreateForm = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "Created", body = MailgunChanged,
            headers(("ETag" = String, description = "The webhook's revision, for `If-Match`"))),
        (status = 400, description = "Bad form, name or URL, more than 3 URLs, or the name has URLs", body = MailgunErrorBody),
        (status = 401, description = "No valid credentials", body = MailgunErrorBody),
        (status = 403, description = "The operator key", body = MailgunErrorBody),
        (status = 404, description = "Not one of the caller's domains", body = MailgunErrorBody),
        (status = 413, description = "Form too large", body = MailgunErrorBody),
    ),
    security(("mailgun_basic" = []))
)]
pub async fn create(
    MailgunTenant(tenant): MailgunTenant,
    State(state): State<AppState>,
    Path(domain): Path<String>,
    req: Request,
) -> MailgunResult<Response> {
    let domain = known_domain(&state, tenant, &domain).await?;
    let form = read_form(req).await?;
    let given = form
        .first("id")
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| MailgunError::bad("missing_id", "id (the webhook name) is required"))?;
    let name = canonical(given)
        .ok_or_else(|| MailgunError::bad("unknown_webhook", unknown_name(given)))?;
    let urls = form_urls(&state, &form)?;
    let (_, version) = change_webhook(
        &state,
        tenant,
        &domain,
        name,
        &IfMatch::default(),
        |current| {
            if !current.is_empty() {
                return Err(MailgunError::bad(
                    "webhook_exists",
                    "Webhook already exists",
                ));
            }
            Ok((Vec::new(), urls.clone()))
        },
    )
    .await?;
    Ok(with_etag(
        &group_revision(version),
        Json(json!({
            "message": "Webhook has been created",
            "webhook": {"urls": urls},
        })),
    ))
}

/// `GET /v3/domains/{domain}/webhooks/{name}`.
#[utoipa::path(
    get,
    path = "/v3/domains/{domain}/webhooks/{name}",
    tag = "mailgun",
    operation_id = "mailgun_get_webhook",
    params(
        ("domain" = String, Path, description = "Domain name"),
        ("name" = String, Path, description = "Webhook name, e.g. `delivered`"),
    ),
    responses(
        (status = 200, description = "The webhook's URLs", body = MailgunWebhook,
            headers(("ETag" = String, description = "The webhook's revision, for `If-Match`"))),
        (status = 401, description = "No valid credentials", body = MailgunErrorBody),
        (status = 403, description = "The operator key", body = MailgunErrorBody),
        (status = 404, description = "Unknown domain or name, or a name without URLs", body = MailgunErrorBody),
    ),
    security(("mailgun_basic" = []))
)]
pub async fn get(
    MailgunTenant(tenant): MailgunTenant,
    State(state): State<AppState>,
    Path((domain, name)): Path<(String, String)>,
) -> MailgunResult<Response> {
    let domain = known_domain(&state, tenant, &domain).await?;
    let name = canonical(&name).ok_or_else(|| MailgunError::not_found(unknown_name(&name)))?;
    // The version first: a change after it shows in the URLs or moves it, so the tag
    // never names URLs it did not see.
    let version = state
        .store
        .endpoint_group_version(tenant, &group(&domain, name))
        .await?;
    let hooks = webhooks(&state, tenant, &domain).await?;
    let urls = urls_of(&named(&hooks, name));
    if urls.is_empty() {
        return Err(MailgunError::not_found("Webhook not found"));
    }
    Ok(with_etag(
        &group_revision(version),
        Json(json!({ "webhook": {"urls": urls} })),
    ))
}

/// `PUT /v3/domains/{domain}/webhooks/{name}`: replaces the URL list. Endpoints whose URL
/// stays keep their id and secret.
#[utoipa::path(
    put,
    path = "/v3/domains/{domain}/webhooks/{name}",
    tag = "mailgun",
    operation_id = "mailgun_update_webhook",
    params(
        ("domain" = String, Path, description = "Domain name"),
        ("name" = String, Path, description = "Webhook name, e.g. `delivered`"),
        ("If-Match" = Option<String>, Header, description = IF_MATCH_DOC),
    ),
    request_body(content(
        (MailgunUpdateForm = "application/x-www-form-urlencoded"),
        (MailgunUpdateForm = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "Updated", body = MailgunChanged,
            headers(("ETag" = String, description = "The webhook's new revision"))),
        (status = 400, description = "Bad form, name, URL or If-Match, or more than 3 URLs", body = MailgunErrorBody),
        (status = 401, description = "No valid credentials", body = MailgunErrorBody),
        (status = 403, description = "The operator key", body = MailgunErrorBody),
        (status = 404, description = "Not one of the caller's domains", body = MailgunErrorBody),
        (status = 409, description = "The tenant has as many endpoints as the deployment allows", body = MailgunErrorBody),
        (status = 412, description = "The webhook is no longer at the `If-Match` revision; nothing was changed", body = MailgunErrorBody),
        (status = 413, description = "Form too large", body = MailgunErrorBody),
    ),
    security(("mailgun_basic" = []))
)]
pub async fn update(
    MailgunTenant(tenant): MailgunTenant,
    State(state): State<AppState>,
    if_match: MailgunIfMatch,
    Path((domain, name)): Path<(String, String)>,
    req: Request,
) -> MailgunResult<Response> {
    let domain = known_domain(&state, tenant, &domain).await?;
    let name = canonical(&name)
        .ok_or_else(|| MailgunError::bad("unknown_webhook", unknown_name(&name)))?;
    let form = read_form(req).await?;
    let urls = form_urls(&state, &form)?;
    let (_, version) = change_webhook(&state, tenant, &domain, name, &if_match.0, |current| {
        let remove = current
            .iter()
            .filter(|e| !urls.contains(&e.url))
            .cloned()
            .collect();
        let add = urls
            .iter()
            .filter(|url| !current.iter().any(|e| &e.url == *url))
            .cloned()
            .collect();
        Ok((remove, add))
    })
    .await?;
    Ok(with_etag(
        &group_revision(version),
        Json(json!({
            "message": "Webhook has been updated",
            "webhook": {"urls": urls},
        })),
    ))
}

/// `DELETE /v3/domains/{domain}/webhooks/{name}`: removes every URL, and tells which.
#[utoipa::path(
    delete,
    path = "/v3/domains/{domain}/webhooks/{name}",
    tag = "mailgun",
    operation_id = "mailgun_delete_webhook",
    params(
        ("domain" = String, Path, description = "Domain name"),
        ("name" = String, Path, description = "Webhook name, e.g. `delivered`"),
        ("If-Match" = Option<String>, Header, description = IF_MATCH_DOC),
    ),
    responses(
        (status = 200, description = "Deleted, with the removed URLs", body = MailgunChanged),
        (status = 400, description = "Invalid If-Match", body = MailgunErrorBody),
        (status = 401, description = "No valid credentials", body = MailgunErrorBody),
        (status = 403, description = "The operator key", body = MailgunErrorBody),
        (status = 404, description = "Unknown domain or name, or a name without URLs", body = MailgunErrorBody),
        (status = 412, description = "The webhook is no longer at the `If-Match` revision; nothing was deleted", body = MailgunErrorBody),
    ),
    security(("mailgun_basic" = []))
)]
pub async fn delete(
    MailgunTenant(tenant): MailgunTenant,
    State(state): State<AppState>,
    if_match: MailgunIfMatch,
    Path((domain, name)): Path<(String, String)>,
) -> MailgunResult<Json<Value>> {
    let domain = known_domain(&state, tenant, &domain).await?;
    let name = canonical(&name).ok_or_else(|| MailgunError::not_found(unknown_name(&name)))?;
    let (removed, _) = change_webhook(&state, tenant, &domain, name, &if_match.0, |current| {
        if current.is_empty() {
            return Err(MailgunError::not_found("Webhook not found"));
        }
        Ok((current.to_vec(), Vec::new()))
    })
    .await?;
    tracing::info!(tenant = %tenant, webhook = name, "mailgun webhook deleted");
    let removed: Vec<&Endpoint> = removed.iter().collect();
    Ok(Json(json!({
        "message": "Webhook has been deleted",
        "webhook": {"urls": urls_of(&removed)},
    })))
}

/// The one `url` field of a test call, allowed by the URL policy.
fn test_url(state: &AppState, form: &Form) -> MailgunResult<String> {
    let mut given: Vec<&str> = form
        .all("url")
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    given.dedup();
    match given.as_slice() {
        [] => Err(MailgunError::bad("missing_url", "url is required")),
        [url] => Ok(validate_url(&state.config.url_policy, url)?),
        _ => Err(MailgunError::bad(
            "too_many_urls",
            "a test call takes one url",
        )),
    }
}

/// What a test event to `url` for the webhook `name` is sent as: the webhook's own endpoint
/// for that URL if it has one, so the receiver gets exactly what deliveries will bring.
/// Otherwise an unsaved endpoint in the webhook's shape, signed with the key of another of
/// the domain's webhooks at the same URL (the key that receiver already holds), or else
/// with a key made for this one call.
fn test_target(
    tenant: TenantId,
    domain: &str,
    name: &str,
    url: &str,
    hooks: &[Endpoint],
    now: Millis,
) -> Endpoint {
    if let Some(own) = named(hooks, name).into_iter().find(|e| e.url == url) {
        return own.clone();
    }
    let secrets = hooks
        .iter()
        .find(|e| e.url == url)
        .map(|e| e.secrets.clone())
        .unwrap_or_else(|| EndpointSecrets::new(Secret::generate()));
    webhook_endpoint(tenant, domain, name, url, secrets, now)
}

/// `PUT /v3/domains/{domain}/webhooks/{name}/test` with the field `url`: sends the sample
/// event of the webhook's type to the URL, in Mailgun's body format and signed as
/// deliveries are, and answers Mailgun's `{"code", "message"}` with the receiver's status
/// and the start of its answer. Nothing is stored.
#[utoipa::path(
    put,
    path = "/v3/domains/{domain}/webhooks/{name}/test",
    tag = "mailgun",
    operation_id = "mailgun_test_webhook",
    params(
        ("domain" = String, Path, description = "Domain name"),
        ("name" = String, Path, description = "Webhook name, e.g. `delivered`"),
    ),
    request_body(content(
        (MailgunTestForm = "application/x-www-form-urlencoded"),
        (MailgunTestForm = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "What the receiver answered: its status as `code` (0 when it gave none) and the start of its body, or why nothing came back, as `message`", body = MailgunTestResult),
        (status = 400, description = "Bad form or name, no URL or more than one, or a URL the URL policy refuses", body = MailgunErrorBody),
        (status = 401, description = "No valid credentials", body = MailgunErrorBody),
        (status = 403, description = "The operator key", body = MailgunErrorBody),
        (status = 404, description = "Not one of the caller's domains", body = MailgunErrorBody),
        (status = 413, description = "Form too large", body = MailgunErrorBody),
    ),
    security(("mailgun_basic" = []))
)]
pub async fn test(
    MailgunTenant(tenant): MailgunTenant,
    State(state): State<AppState>,
    Path((domain, name)): Path<(String, String)>,
    req: Request,
) -> MailgunResult<Json<Value>> {
    let domain = known_domain(&state, tenant, &domain).await?;
    let name = canonical(&name)
        .ok_or_else(|| MailgunError::bad("unknown_webhook", unknown_name(&name)))?;
    let form = read_form(req).await?;
    let url = test_url(&state, &form)?;
    let hooks = webhooks(&state, tenant, &domain).await?;
    let target = test_target(tenant, &domain, name, &url, &hooks, state.clock.now());
    let sent = send_test(&state, &target, Some(name)).await?;
    let r = sent.response;
    let (code, message) = match (r.status, r.error.as_deref()) {
        (Some(status), _) => (status, r.excerpt),
        // The policy refused an address the name resolved to: the URL is as bad as a
        // private address written out, which is refused above.
        (None, Some("blocked")) => {
            return Err(MailgunError::bad(
                "invalid_url",
                format!("url refused: {}", r.excerpt),
            ))
        }
        (None, kind) => (
            0,
            format!("no answer ({}): {}", kind.unwrap_or("request"), r.excerpt),
        ),
    };
    tracing::info!(tenant = %tenant, webhook = name, code, "mailgun webhook test sent");
    Ok(Json(json!({ "code": code, "message": message })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_map_to_canonical_names_and_others_are_unknown() {
        for name in NAMES {
            assert_eq!(canonical(name), Some(name));
        }
        for (alias, name) in [
            ("click", "clicked"),
            ("open", "opened"),
            ("unsubscribe", "unsubscribed"),
            ("deliver", "delivered"),
            ("bounce", "permanent_fail"),
            ("drop", "permanent_fail"),
            ("spam", "complained"),
        ] {
            assert_eq!(canonical(alias), Some(name));
        }
        for unknown in ["state_change", "Delivered", "", "failed"] {
            assert_eq!(canonical(unknown), None);
        }
    }

    #[test]
    fn basic_auth_needs_the_user_api_and_a_key() {
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            basic_password(&h)
        };
        let b64 = |s: &str| format!("Basic {}", STANDARD.encode(s));
        assert_eq!(with(&b64("api:hk_123")).unwrap(), "hk_123");
        assert_eq!(with(&b64("api:a:b")).unwrap(), "a:b");
        for bad in [
            b64("user:hk_123"),
            b64("api:"),
            b64("api"),
            "Bearer hk_1".into(),
        ] {
            assert_eq!(with(&bad).unwrap_err().status, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(
            basic_password(&HeaderMap::new()).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
    }

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn forms_keep_repeated_fields_in_order_in_both_encodings() {
        let expected = fields(&[("id", "delivered"), ("url", "https://a/"), ("url", "b c")]);
        let urlencoded = b"id=delivered&url=https%3A%2F%2Fa%2F&url=b+c";
        for ct in [
            None,
            Some("application/x-www-form-urlencoded; charset=utf-8"),
        ] {
            let form = parse_form(ct, urlencoded).await.unwrap();
            assert_eq!(form.fields(), expected.as_slice(), "{ct:?}");
        }
        let multipart = "--XyZ\r\n\
            Content-Disposition: form-data; name=\"id\"\r\n\r\ndelivered\r\n\
            --XyZ\r\n\
            Content-Disposition: form-data; name=\"url\"\r\n\r\nhttps://a/\r\n\
            --XyZ\r\n\
            Content-Disposition: form-data; name=\"url\"\r\n\r\nb c\r\n\
            --XyZ--\r\n";
        let form = parse_form(
            Some("multipart/form-data; boundary=XyZ"),
            multipart.as_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(form.fields(), expected.as_slice());
        assert_eq!(parse_form(None, b"").await.unwrap(), Form::default());
    }

    #[tokio::test]
    async fn unreadable_forms_are_400s_with_a_code() {
        for (ct, body, code) in [
            (
                Some("application/json"),
                &b"{}"[..],
                "unsupported_media_type",
            ),
            (Some("multipart/form-data"), b"--x\r\n", "invalid_form"),
            (
                Some("multipart/form-data; boundary=x"),
                b"garbage",
                "invalid_form",
            ),
            (
                Some("multipart/form-data; boundary=x"),
                b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunterminated",
                "invalid_form",
            ),
            (
                Some("multipart/form-data; boundary=\u{7f}"),
                b"",
                "invalid_form",
            ),
        ] {
            let e = parse_form(ct, body).await.unwrap_err();
            assert_eq!(
                (e.status, e.code),
                (StatusCode::BAD_REQUEST, code),
                "{ct:?}"
            );
        }
    }
}
