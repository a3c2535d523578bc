//! The tenant portal under `/portal/`: pages a provider's customers open by a magic link
//! (`POST /v1/portal/sessions`), held by a session cookie, over the same store and the same
//! rules as `/v1` (its handlers are called for every change). Assets are compiled in.

mod pages;
pub(crate) mod session;

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hookline_core::http::{rfc3339, ApiError, AppState, IfMatch, JsonBody, RawBody};
use hookline_core::ids::{EndpointId, MessageId, TenantId};
use hookline_core::model::{
    Delivery, DeliveryStatus, Endpoint, EndpointStatus, Message, MessageQuery, Millis,
};
use hookline_core::Error;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{endpoints, mailgun, replay};
use session::{Form, Portal};

/// The portal's script and styles, served from `/portal/assets/` (the CSP allows scripts
/// and styles from the portal's own origin only, so nothing is inline).
const SCRIPT: &str = include_str!("assets/portal.js");
const STYLES: &str = include_str!("assets/portal.css");

/// Messages read at most to fill one page of a filtered log; past it the page ends early
/// with a link to go on, so one request never reads the whole log.
const MAX_SCAN: usize = 2000;
/// Log entries on one page.
const PAGE_SIZE: usize = 50;
/// Recent messages read for an endpoint's success chart and recent deliveries.
const RECENT: usize = 500;
const HOUR_MS: Millis = 3_600_000;

/// The `/portal/` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/portal", get(|| async { see_other("/portal/endpoints") }))
        .route("/portal/", get(|| async { see_other("/portal/endpoints") }))
        .route("/portal/login", get(session::login))
        .route("/portal/expired", get(session::expired))
        .route("/portal/logout", post(session::logout))
        .route("/portal/switch", post(session::switch))
        .route("/portal/assets/portal.js", get(script))
        .route("/portal/assets/portal.css", get(styles))
        .route("/portal/assets/theme.css", get(theme))
        .route(
            "/portal/endpoints",
            get(endpoint_list).post(endpoint_create),
        )
        .route(
            "/portal/endpoints/{id}",
            get(endpoint_page).post(endpoint_action),
        )
        .route("/portal/messages", get(message_list))
        .route("/portal/messages/{id}", get(message_page))
        .route("/portal/messages/{id}/replay", post(message_replay))
        .route("/portal/event-types", get(event_types))
        .route("/portal/domains", get(domains))
        .layer(axum::middleware::from_fn(guard))
}

/// Headers every portal answer carries: the page may run only the portal's own script and
/// styles, be framed only where the deployment says, and leak no URL (a magic link's
/// token) to other sites.
async fn guard(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The Content-Security-Policy of the portal's pages.
fn csp(state: &AppState) -> String {
    let portal = &state.config.portal;
    let logo = portal
        .logo_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .map(|u| format!(" {}", u.origin().ascii_serialization()))
        .unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'{logo}; \
         connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors {}",
        portal.frame_ancestors
    )
}

/// An HTML page with the portal's policy.
fn html(state: &AppState, status: StatusCode, body: maud::Markup) -> Response {
    let mut response = (
        status,
        [(CONTENT_TYPE, "text/html; charset=utf-8")],
        body.into_string(),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&csp(state)) {
        response.headers_mut().insert(CONTENT_SECURITY_POLICY, v);
    }
    response
}

fn see_other(to: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(LOCATION, HeaderValue::from_str(to).expect("a portal path"))],
    )
        .into_response()
}

fn asset(content_type: &'static str, body: String) -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (CACHE_CONTROL, HeaderValue::from_static("max-age=300")),
        ],
        body,
    )
        .into_response()
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT.to_string())
}

async fn styles() -> Response {
    asset("text/css; charset=utf-8", STYLES.to_string())
}

/// The configured accent colour as a stylesheet (a checked `#rrggbb`).
async fn theme(State(state): State<AppState>) -> Response {
    asset(
        "text/css; charset=utf-8",
        format!(":root {{ --accent: {}; }}\n", state.config.portal.accent),
    )
}

/// A page that shows an error in words: a missing record is 404, as in the API.
fn error_page(state: &AppState, portal: &Portal, e: Error) -> Response {
    let api = ApiError(e);
    let status = api.status();
    let message = match &api.0 {
        Error::Backend { .. } => {
            tracing::error!(error = %api.0, "portal request failed");
            "Something went wrong on our side; try again in a moment.".to_string()
        }
        Error::NotFound(what) => format!("No such {what}."),
        other => other.to_string(),
    };
    html(
        state,
        status,
        pages::layout(
            &portal.view(state),
            "Not available",
            pages::message_box(&message),
        ),
    )
}

/// A page shown in place of the one asked for (an error, a refused form); boxed, as
/// results carry it through every handler.
pub(crate) struct Shown(Box<Response>);

impl From<Response> for Shown {
    fn from(r: Response) -> Self {
        Shown(Box::new(r))
    }
}

impl IntoResponse for Shown {
    fn into_response(self) -> Response {
        *self.0
    }
}

type PageResult = Result<Response, Shown>;

/// Turns a store or rule error into its page.
trait OrPage<T> {
    fn or_page(self, state: &AppState, portal: &Portal) -> Result<T, Shown>;
}

impl<T, E: Into<ApiError>> OrPage<T> for Result<T, E> {
    fn or_page(self, state: &AppState, portal: &Portal) -> Result<T, Shown> {
        self.map_err(|e| error_page(state, portal, e.into().0).into())
    }
}

/// The body of a `/v1` handler's JSON answer.
async fn json_of(response: Response) -> Value {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

// ---- endpoints ---------------------------------------------------------------------------

/// The success rate of each endpoint by hour over the last day, from its deliveries of
/// the most recent messages (at most [`RECENT`]).
pub(crate) struct Health {
    /// Per endpoint: 24 hours, oldest first, as (succeeded, failed).
    pub hours: HashMap<EndpointId, [(u32, u32); 24]>,
}

/// The tenant's messages received since `since`, newest first, with their deliveries: at
/// most [`RECENT`]. Message ids are ULIDs made at receipt, so the log is in time order and
/// the read stops at the first older message.
async fn recent(
    state: &AppState,
    portal: &Portal,
    since: Millis,
) -> Result<Vec<(Message, Vec<Delivery>)>, Error> {
    let mut out = Vec::new();
    let mut log = LogWalk::new(state, portal.tenant, None, None);
    while let Some(m) = log.next().await? {
        if m.received_at < since || out.len() >= RECENT {
            break;
        }
        let deliveries = state.store.list_deliveries(m.id).await?;
        out.push((m, deliveries));
    }
    Ok(out)
}

/// The endpoint's deliveries of the messages received since `since`, newest first: at
/// most 20, reading at most [`MAX_SCAN`] messages (a message names its targets, so only
/// the endpoint's own deliveries are read).
async fn recent_deliveries(
    state: &AppState,
    portal: &Portal,
    endpoint: &Endpoint,
    since: Millis,
) -> Result<Vec<(Message, Delivery)>, Error> {
    const SHOWN: usize = 20;
    let mut out = Vec::new();
    let mut scanned = 0;
    let mut log = LogWalk::new(state, portal.tenant, None, None);
    while let Some(m) = log.next().await? {
        scanned += 1;
        if m.received_at < since || out.len() >= SHOWN || scanned > MAX_SCAN {
            break;
        }
        if !m.targets.contains(&endpoint.id) {
            continue;
        }
        let d = state
            .store
            .get_delivery(m.id, endpoint.id)
            .await?
            .unwrap_or_else(|| Delivery::fresh(m.id, endpoint.id, m.tenant, m.received_at));
        out.push((m, d));
    }
    Ok(out)
}

/// A tenant's log read newest first, one store page of 100 at a time and only as far as
/// its reader goes.
struct LogWalk<'a> {
    state: &'a AppState,
    tenant: TenantId,
    event_type: Option<String>,
    /// The last message handed out: where the next store page starts.
    before: Option<MessageId>,
    page: std::vec::IntoIter<Message>,
    more: bool,
}

impl<'a> LogWalk<'a> {
    fn new(
        state: &'a AppState,
        tenant: TenantId,
        event_type: Option<String>,
        before: Option<MessageId>,
    ) -> Self {
        LogWalk {
            state,
            tenant,
            event_type,
            before,
            page: Vec::new().into_iter(),
            more: true,
        }
    }

    async fn next(&mut self) -> Result<Option<Message>, Error> {
        loop {
            if let Some(m) = self.page.next() {
                self.before = Some(m.id);
                return Ok(Some(m));
            }
            if !self.more {
                return Ok(None);
            }
            let page = self
                .state
                .store
                .list_messages(
                    self.tenant,
                    &MessageQuery {
                        before: self.before,
                        limit: 100,
                        event_type: self.event_type.clone(),
                    },
                )
                .await?;
            self.more = page.next_cursor.is_some();
            self.page = page.items.into_iter();
        }
    }
}

fn health(recent: &[(Message, Vec<Delivery>)], now: Millis) -> Health {
    let mut hours: HashMap<EndpointId, [(u32, u32); 24]> = HashMap::new();
    for (m, deliveries) in recent {
        let age = (now - m.received_at).max(0) / HOUR_MS;
        if age >= 24 {
            continue;
        }
        let slot = 23 - age as usize;
        for d in deliveries {
            let counts = &mut hours.entry(d.endpoint).or_insert([(0, 0); 24])[slot];
            match d.status {
                DeliveryStatus::Succeeded => counts.0 += 1,
                DeliveryStatus::Failed => counts.1 += 1,
                _ => {}
            }
        }
    }
    Health { hours }
}

async fn endpoint_list(State(state): State<AppState>, portal: Portal) -> PageResult {
    render_endpoint_list(&state, &portal, pages::EndpointForm::default(), None).await
}

async fn render_endpoint_list(
    state: &AppState,
    portal: &Portal,
    form: pages::EndpointForm,
    status: Option<StatusCode>,
) -> PageResult {
    let endpoints = state
        .store
        .list_endpoints(portal.tenant)
        .await
        .or_page(state, portal)?;
    let now = state.clock.now();
    let recent = recent(state, portal, now - 24 * HOUR_MS)
        .await
        .or_page(state, portal)?;
    let health = health(&recent, now);
    let choices = pages::Choices::load(state, portal)
        .await
        .or_page(state, portal)?;
    Ok(html(
        state,
        status.unwrap_or(StatusCode::OK),
        pages::endpoint_list(&portal.view(state), &endpoints, &health, &choices, &form),
    ))
}

/// The `/v1` body of an endpoint form: what `POST /v1/endpoints` and `PATCH` read, so the
/// same rules judge it. An empty filter is `null` (none); text that is not JSON at all is
/// refused here, as the API refuses a bad filter (422 `invalid_filter`). `update`: a PATCH,
/// where empty headers and "None" remove them and "keep" leaves the stored credentials
/// alone.
fn endpoint_body(form: &Form, verify: bool, update: bool) -> Result<Value, Error> {
    let types: Vec<&str> = form.all("event_types");
    let domain = form.get("domain").filter(|d| !d.is_empty());
    let rate_limit = form
        .get("rate_limit")
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| r.parse::<i64>().map(Value::from).unwrap_or(json!(r)));
    let filter = match form.get("filter").map(str::trim).filter(|f| !f.is_empty()) {
        None => Value::Null,
        Some(text) => serde_json::from_str::<Value>(text).map_err(|e| {
            Error::unprocessable("invalid_filter", format!("the filter is not JSON: {e}"))
        })?,
    };
    let mut body = json!({
        "url": form.get("url").unwrap_or_default().trim(),
        "description": form.get("description").unwrap_or_default(),
        "event_types": (!types.is_empty()).then_some(types),
        "domain": domain,
        "format": form.get("format").filter(|f| !f.is_empty()),
        "rate_limit": rate_limit,
        "verify": verify,
        "signing": form.get("signing").filter(|s| !s.is_empty()),
        "filter": filter,
        "ordering": form.get("ordering").filter(|o| !o.is_empty()),
    });
    let headers = form_headers(form.get("headers").unwrap_or_default());
    if update || headers.as_object().is_some_and(|h| !h.is_empty()) {
        body["headers"] = headers;
    }
    match form_auth(form) {
        Some(Value::Null) if !update => {}
        Some(auth) => body["auth"] = auth,
        None => {}
    }
    Ok(body)
}

/// `Name: value` lines as a headers object; a line without `:` names a header without a
/// value (`null`), which the API refuses by name.
fn form_headers(text: &str) -> Value {
    let headers: serde_json::Map<String, Value> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| match line.split_once(':') {
            Some((name, value)) => (name.trim().to_string(), json!(value.trim())),
            None => (line.to_string(), Value::Null),
        })
        .collect();
    Value::Object(headers)
}

/// The form's credentials as an `auth` value: `None` to keep the stored ones, `null` for
/// none. Empty fields are left out, so the API names the one missing.
fn form_auth(form: &Form) -> Option<Value> {
    let kind = form.get("auth_type").unwrap_or_default();
    let fields: &[&str] = match kind {
        "keep" => return None,
        "" => return Some(Value::Null),
        "basic" => &["username", "password"],
        "bearer" => &["token"],
        _ => &["token_url", "client_id", "client_secret", "scope"],
    };
    let mut auth = json!({ "type": kind });
    for field in fields {
        if let Some(v) = form.get(&format!("auth_{field}")).filter(|v| !v.is_empty()) {
            auth[*field] = json!(v);
        }
    }
    Some(auth)
}

/// Which field of the endpoint form an error concerns, by its code.
fn field_of(code: &str) -> &'static str {
    if code.contains("url") {
        "url"
    } else if code.contains("event_type") {
        "event_types"
    } else if code.contains("domain") {
        "domain"
    } else if code.contains("description") {
        "description"
    } else if code.contains("format") {
        "format"
    } else if code.contains("rate_limit") {
        "rate_limit"
    } else if code.contains("headers") {
        "headers"
    } else if code.contains("auth") {
        "auth"
    } else if code.contains("ordering") {
        "ordering"
    } else if code.contains("endpoint_test") {
        "verify"
    } else if code.contains("signing") {
        "signing"
    } else if code.contains("filter") {
        "filter"
    } else {
        ""
    }
}

fn form_error(e: Error) -> pages::FieldError {
    let receiver = match &e {
        Error::EndpointTest {
            status,
            error,
            response,
            ..
        } => Some(pages::ReceiverAnswer {
            status: *status,
            error: error.clone(),
            response: response.clone(),
        }),
        _ => None,
    };
    pages::FieldError {
        field: field_of(e.code()),
        message: e.to_string(),
        receiver,
    }
}

async fn endpoint_create(State(state): State<AppState>, portal: Portal, form: Form) -> PageResult {
    portal.check_csrf(&state, &form)?;
    let verify = form.get("verify").is_some();
    let created = match endpoint_body(&form, verify, false) {
        Ok(body) => {
            let req = serde_json::from_value(body).map_err(|e| {
                error_page(
                    &state,
                    &portal,
                    Error::invalid("invalid_form", e.to_string()),
                )
            })?;
            endpoints::create(State(state.clone()), portal.caller(), JsonBody(req))
                .await
                .map(drop)
        }
        Err(e) => Err(ApiError(e)),
    };
    match created {
        Ok(()) => Ok(see_other("/portal/endpoints?created=1")),
        Err(ApiError(e)) if matches!(e, Error::Backend { .. }) => {
            Err(error_page(&state, &portal, e).into())
        }
        Err(api) => {
            let status = api.status();
            let filled = pages::EndpointForm::from_form(&form, Some(form_error(api.0)));
            render_endpoint_list(&state, &portal, filled, Some(status)).await
        }
    }
}

async fn load_endpoint(state: &AppState, portal: &Portal, id: &str) -> Result<Endpoint, Shown> {
    let id = EndpointId::parse(id)
        .ok_or(Error::NotFound("endpoint"))
        .or_page(state, portal)?;
    state
        .store
        .get_endpoint(portal.tenant, id)
        .await
        .or_page(state, portal)?
        .ok_or(Error::NotFound("endpoint"))
        .or_page(state, portal)
}

#[derive(Deserialize, Default)]
struct EndpointPageQuery {
    #[serde(default)]
    replayed: Option<usize>,
    #[serde(default)]
    saved: Option<String>,
}

async fn endpoint_page(
    State(state): State<AppState>,
    portal: Portal,
    Path(id): Path<String>,
    query: Result<Query<EndpointPageQuery>, QueryRejection>,
) -> PageResult {
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let notice = match (q.replayed, q.saved.is_some()) {
        (Some(n), _) => Some(format!("Queued {n} failed deliveries again.")),
        (None, true) => Some("Saved.".to_string()),
        _ => None,
    };
    render_endpoint(
        &state,
        &portal,
        &id,
        pages::EndpointExtras {
            notice,
            ..Default::default()
        },
    )
    .await
}

async fn render_endpoint(
    state: &AppState,
    portal: &Portal,
    id: &str,
    extras: pages::EndpointExtras,
) -> PageResult {
    let endpoint = load_endpoint(state, portal, id).await?;
    let since = state.clock.now() - 7 * 24 * HOUR_MS;
    let recent = recent_deliveries(state, portal, &endpoint, since)
        .await
        .or_page(state, portal)?;
    let deliveries: Vec<(&Message, &Delivery)> = recent.iter().map(|(m, d)| (m, d)).collect();
    let choices = pages::Choices::load(state, portal)
        .await
        .or_page(state, portal)?;
    let status = extras.status;
    Ok(html(
        state,
        status.unwrap_or(StatusCode::OK),
        pages::endpoint_page(
            &portal.view(state),
            &endpoint,
            &deliveries,
            &choices,
            &extras,
        ),
    ))
}

/// One form per action on an endpoint, each with the session's token.
async fn endpoint_action(
    State(state): State<AppState>,
    portal: Portal,
    Path(id): Path<String>,
    form: Form,
) -> PageResult {
    portal.check_csrf(&state, &form)?;
    let endpoint = load_endpoint(&state, &portal, &id).await?;
    let back = format!("/portal/endpoints/{}", endpoint.id);
    let caller = portal.caller();
    let path = Path(endpoint.id.to_string());
    let mut extras = pages::EndpointExtras::default();
    match form.get("action").unwrap_or_default() {
        "update" => {
            // An empty picker is `null`: every event, as in the API.
            let updated = match endpoint_body(&form, form.get("verify").is_some(), true) {
                Ok(body) => {
                    let req = serde_json::from_value(body)
                        .map_err(|e| Error::invalid("invalid_form", e.to_string()))
                        .or_page(&state, &portal)?;
                    endpoints::update(
                        State(state.clone()),
                        caller,
                        IfMatch::default(),
                        path,
                        JsonBody(req),
                    )
                    .await
                    .map(drop)
                }
                Err(e) => Err(ApiError(e)),
            };
            match updated {
                Ok(()) => return Ok(see_other(&format!("{back}?saved=1"))),
                Err(ApiError(e)) if matches!(e, Error::Backend { .. }) => {
                    return Err(error_page(&state, &portal, e).into())
                }
                Err(api) => {
                    extras.status = Some(api.status());
                    extras.form = Some(pages::EndpointForm::from_form(
                        &form,
                        Some(form_error(api.0)),
                    ));
                }
            }
        }
        action @ ("disable" | "enable") => {
            let status = if action == "disable" {
                "disabled"
            } else {
                "active"
            };
            let req = serde_json::from_value(json!({ "status": status })).expect("a valid patch");
            endpoints::update(
                State(state.clone()),
                caller,
                IfMatch::default(),
                path,
                JsonBody(req),
            )
            .await
            .or_page(&state, &portal)?;
            return Ok(see_other(&format!("{back}?saved=1")));
        }
        "delete" => {
            if form.get("confirm") != Some("yes") {
                extras.confirm_delete = true;
            } else {
                endpoints::delete(State(state.clone()), caller, IfMatch::default(), path)
                    .await
                    .or_page(&state, &portal)?;
                return Ok(see_other("/portal/endpoints?deleted=1"));
            }
        }
        "reveal" => extras.secret = Some(endpoint.secrets.current.expose().to_string()),
        "rotate" => {
            let response = endpoints::rotate(
                State(state.clone()),
                caller,
                IfMatch::default(),
                path,
                RawBody(Bytes::new()),
            )
            .await
            .or_page(&state, &portal)?;
            extras.secret = json_of(response)
                .await
                .get("key")
                .and_then(Value::as_str)
                .map(str::to_string);
            extras.notice = Some(
                "A new signing secret (and ed25519 key, if it has one) is current; the old ones \
                 sign for the grace period too."
                    .into(),
            );
        }
        "test" => {
            let event_type = form.get("event_type").filter(|t| !t.is_empty());
            let body = Bytes::from(json!({ "event_type": event_type }).to_string());
            match endpoints::test(State(state.clone()), caller, path, RawBody(body)).await {
                Ok(answer) => extras.test = Some(answer.0),
                Err(ApiError(e)) => extras.error = Some(e.to_string()),
            }
        }
        "replay" => {
            let since = form.get("since").unwrap_or_default();
            match parse_local_time(since) {
                None => {
                    extras.error =
                        Some("Give the time to replay from, e.g. 2026-11-30T09:00 (UTC).".into());
                    extras.status = Some(StatusCode::BAD_REQUEST);
                }
                Some(ms) => {
                    let body = Bytes::from(json!({ "since": rfc3339(ms) }).to_string());
                    match replay::endpoint(State(state.clone()), caller, path, RawBody(body)).await
                    {
                        Ok((_, answer)) => {
                            return Ok(see_other(&format!("{back}?replayed={}", answer.0.queued)))
                        }
                        Err(ApiError(e)) if matches!(e, Error::Backend { .. }) => {
                            return Err(error_page(&state, &portal, e).into())
                        }
                        Err(api) => {
                            extras.status = Some(api.status());
                            extras.error = Some(api.0.to_string());
                        }
                    }
                }
            }
        }
        _ => {
            extras.error = Some("Unknown action.".into());
            extras.status = Some(StatusCode::BAD_REQUEST);
        }
    }
    render_endpoint(&state, &portal, &back["/portal/endpoints/".len()..], extras).await
}

/// A `datetime-local` value (or RFC 3339), read as UTC.
fn parse_local_time(s: &str) -> Option<Millis> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
        .map(|t| t.and_utc().timestamp_millis())
}

// ---- messages ---------------------------------------------------------------------------

/// The log's filters, as given in the page's query.
#[derive(Deserialize, Default, Clone)]
pub(crate) struct LogFilter {
    #[serde(default, rename = "type")]
    pub event_type: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub until: Option<String>,
    #[serde(default)]
    pub cursor: Option<String>,
}

impl LogFilter {
    fn text(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }

    /// The query of the next page: these filters from `cursor` on.
    pub fn with_cursor(&self, cursor: &str) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("type", &self.event_type),
            ("status", &self.status),
            ("endpoint", &self.endpoint),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if let Some(v) = Self::text(v) {
                q.append_pair(k, v);
            }
        }
        q.append_pair("cursor", cursor);
        q.finish()
    }
}

/// One page of the log under the filters: the store pages by id, newest first, and filters
/// by event type; the rest is filtered here, reading at most [`MAX_SCAN`] messages.
pub(crate) async fn log_page(
    state: &AppState,
    tenant: TenantId,
    filter: &LogFilter,
) -> Result<(Vec<(Message, Vec<Delivery>)>, Option<String>), Error> {
    let status = LogFilter::text(&filter.status)
        .map(|s| {
            DeliveryStatus::parse(s)
                .ok_or_else(|| Error::invalid("invalid_status", format!("unknown status {s:?}")))
        })
        .transpose()?;
    let endpoint = LogFilter::text(&filter.endpoint)
        .map(|e| EndpointId::parse(e).ok_or(Error::NotFound("endpoint")))
        .transpose()?;
    let since = LogFilter::text(&filter.since)
        .map(|s| {
            parse_local_time(s).ok_or_else(|| Error::invalid("invalid_time", "since is not a time"))
        })
        .transpose()?;
    let until = LogFilter::text(&filter.until)
        .map(|s| {
            parse_local_time(s).ok_or_else(|| Error::invalid("invalid_time", "until is not a time"))
        })
        .transpose()?;
    let before = LogFilter::text(&filter.cursor)
        .map(|c| {
            MessageId::parse(c)
                .ok_or_else(|| Error::invalid("invalid_cursor", "cursor is not one we issued"))
        })
        .transpose()?;
    let event_type = LogFilter::text(&filter.event_type).map(str::to_string);
    let mut log = LogWalk::new(state, tenant, event_type, before);
    let mut out = Vec::new();
    let mut scanned = 0;
    while let Some(m) = log.next().await? {
        scanned += 1;
        let id = m.id;
        let in_time =
            since.is_none_or(|s| m.received_at >= s) && until.is_none_or(|u| m.received_at < u);
        let to_endpoint = endpoint.is_none_or(|e| m.targets.contains(&e));
        if in_time && to_endpoint {
            let deliveries = state.store.list_deliveries(m.id).await?;
            let shown = status.is_none_or(|s| {
                m.targets.iter().any(|t| {
                    endpoint.is_none_or(|e| e == *t)
                        && deliveries
                            .iter()
                            .find(|d| d.endpoint == *t)
                            .map_or(DeliveryStatus::Pending, |d| d.status)
                            == s
                })
            });
            if shown {
                out.push((m, deliveries));
            }
        }
        if out.len() == PAGE_SIZE || scanned >= MAX_SCAN {
            return Ok((out, Some(id.to_string())));
        }
    }
    Ok((out, None))
}

async fn message_list(
    State(state): State<AppState>,
    portal: Portal,
    query: Result<Query<LogFilter>, QueryRejection>,
) -> PageResult {
    let filter = query.map(|Query(q)| q).unwrap_or_default();
    let (rows, next) = log_page(&state, portal.tenant, &filter)
        .await
        .or_page(&state, &portal)?;
    let endpoints = state
        .store
        .list_endpoints(portal.tenant)
        .await
        .or_page(&state, &portal)?;
    let choices = pages::Choices::load(&state, &portal)
        .await
        .or_page(&state, &portal)?;
    Ok(html(
        &state,
        StatusCode::OK,
        pages::message_list(
            &portal.view(&state),
            &rows,
            next.as_deref(),
            &filter,
            &endpoints,
            &choices,
        ),
    ))
}

#[derive(Deserialize, Default)]
struct MessagePageQuery {
    #[serde(default)]
    replayed: Option<usize>,
}

async fn message_page(
    State(state): State<AppState>,
    portal: Portal,
    Path(id): Path<String>,
    query: Result<Query<MessagePageQuery>, QueryRejection>,
) -> PageResult {
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let id = MessageId::parse(&id)
        .ok_or(Error::NotFound("message"))
        .or_page(&state, &portal)?;
    let message = state
        .store
        .get_message(portal.tenant, id)
        .await
        .or_page(&state, &portal)?
        .ok_or(Error::NotFound("message"))
        .or_page(&state, &portal)?;
    let deliveries = state
        .store
        .list_deliveries(message.id)
        .await
        .or_page(&state, &portal)?;
    let attempts = state
        .store
        .list_attempts(portal.tenant, message.id)
        .await
        .or_page(&state, &portal)?;
    let endpoints = state
        .store
        .list_endpoints(portal.tenant)
        .await
        .or_page(&state, &portal)?;
    let notice = q.replayed.map(|n| format!("Queued {n} deliveries again."));
    Ok(html(
        &state,
        StatusCode::OK,
        pages::message_page(
            &portal.view(&state),
            &message,
            &deliveries,
            &attempts,
            &endpoints,
            notice.as_deref(),
        ),
    ))
}

async fn message_replay(
    State(state): State<AppState>,
    portal: Portal,
    Path(id): Path<String>,
    form: Form,
) -> PageResult {
    portal.check_csrf(&state, &form)?;
    let body = json!({ "endpoint_id": form.get("endpoint_id").filter(|e| !e.is_empty()) });
    let (_, answer) = replay::message(
        State(state.clone()),
        portal.caller(),
        Path(id.clone()),
        RawBody(Bytes::from(body.to_string())),
    )
    .await
    .or_page(&state, &portal)?;
    let id = MessageId::parse(&id).expect("the replay found the message");
    Ok(see_other(&format!(
        "/portal/messages/{id}?replayed={}",
        answer.0.queued
    )))
}

// ---- catalog and domains ------------------------------------------------------------------

async fn event_types(State(state): State<AppState>, portal: Portal) -> PageResult {
    let choices = pages::Choices::load(&state, &portal)
        .await
        .or_page(&state, &portal)?;
    Ok(html(
        &state,
        StatusCode::OK,
        pages::event_types(&portal.view(&state), &choices),
    ))
}

async fn domains(State(state): State<AppState>, portal: Portal) -> PageResult {
    let choices = pages::Choices::load(&state, &portal)
        .await
        .or_page(&state, &portal)?;
    let mut views = Vec::new();
    for domain in &choices.domains {
        let hooks = mailgun::webhook_urls(&state, portal.tenant, domain)
            .await
            .or_page(&state, &portal)?;
        views.push((domain.clone(), hooks));
    }
    Ok(html(
        &state,
        StatusCode::OK,
        pages::domains(&portal.view(&state), &views),
    ))
}

/// The status an endpoint is shown with.
pub(crate) fn status_name(e: &Endpoint) -> &'static str {
    match e.status {
        EndpointStatus::Active if e.failing_since.is_some() => "failing",
        EndpointStatus::Active => "active",
        EndpointStatus::Disabled => "disabled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_as_utc_from_the_browsers_picker_or_rfc_3339() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-30T09:15:00Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(parse_local_time("2026-11-30T09:15"), Some(at));
        assert_eq!(parse_local_time(" 2026-11-30T09:15:00 "), Some(at));
        assert_eq!(parse_local_time("2026-11-30T10:15:00+01:00"), Some(at));
        assert_eq!(parse_local_time("yesterday"), None);
        assert_eq!(parse_local_time(""), None);
    }

    #[test]
    fn errors_are_shown_next_to_the_field_they_concern() {
        assert_eq!(field_of("invalid_url"), "url");
        assert_eq!(field_of("unknown_event_type"), "event_types");
        assert_eq!(field_of("invalid_event_types"), "event_types");
        assert_eq!(field_of("unknown_domain"), "domain");
        assert_eq!(field_of("invalid_description"), "description");
        assert_eq!(field_of("invalid_format"), "format");
        assert_eq!(field_of("invalid_rate_limit"), "rate_limit");
        assert_eq!(field_of("invalid_ordering"), "ordering");
        assert_eq!(field_of("ordering_unavailable"), "ordering");
        assert_eq!(field_of("endpoint_test_failed"), "verify");
        assert_eq!(field_of("invalid_signing"), "signing");
        assert_eq!(field_of("invalid_filter"), "filter");
        assert_eq!(field_of("too_many_endpoints"), "");
        assert_eq!(field_of("invalid_headers"), "headers");
        assert_eq!(field_of("invalid_auth"), "auth");
        assert_eq!(field_of("auth_unavailable"), "auth");
    }

    #[test]
    fn the_next_page_keeps_the_filters() {
        let filter = LogFilter {
            event_type: Some("delivered".into()),
            status: Some(" ".into()),
            endpoint: None,
            since: Some("2026-11-30T09:00".into()),
            until: None,
            cursor: Some("old".into()),
        };
        assert_eq!(
            filter.with_cursor("msg_1"),
            "type=delivered&since=2026-11-30T09%3A00&cursor=msg_1"
        );
    }
}
