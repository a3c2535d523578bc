//! Portal access: magic links (`POST /v1/portal/sessions`), the session cookie they turn
//! into, the form token every state-changing request carries, the sub-account a parent's
//! session is looking at, and signing out.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::header::{COOKIE, HOST, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cookie::{Cookie, SameSite};
use hookline_core::envelope::json_or_default;
use hookline_core::http::{rfc3339, ApiResult, AppState, Caller, ErrorBody, RawBody};
use hookline_core::ids::{ApiKeyId, TenantId};
use hookline_core::keys::KeyHash;
use hookline_core::model::{PageQuery, PortalSession, Tenant};
use hookline_core::Error;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{error_page, html, pages, see_other, Shown};

const SESSION_COOKIE: &str = "hookline_portal";
/// The sub-account a parent's session shows; checked against the session at every request.
const VIEW_COOKIE: &str = "hookline_portal_view";
const COOKIE_PATH: &str = "/portal";
/// The largest portal form read.
const MAX_FORM: usize = 64 * 1024;
/// Sub-accounts a session can switch to (the first ones, by id).
const MAX_SUB_ACCOUNTS: usize = 200;
/// How much longer the browser keeps the session cookie than the server keeps the session,
/// so that a session that ran out is told "expired" rather than "not signed in".
const COOKIE_GRACE_MS: i64 = 3_600_000;

/// 256 random bits, URL-safe: a magic link's token, a session's cookie, a form token.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({}))]
pub struct CreatePortalSession {
    /// With the operator key: the tenant the link opens (`tn_…`). With a tenant key:
    /// absent, or the caller itself.
    #[serde(default)]
    #[schema(example = "tn_01JQ8C9HT5N6R0D4X5W1V2Z3YK")]
    tenant: Option<String>,
}

/// A magic link into the portal.
#[derive(Serialize, ToSchema)]
pub struct PortalLink {
    /// Opens the portal once, until `expires_at`; hand it to the tenant's user at once.
    #[schema(example = "https://hooks.example.com/portal/login?token=…")]
    pub url: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// Where magic links point: the configured base URL, else the host this request came to
/// (plain HTTP only on a loopback address).
fn base_url(state: &AppState, headers: &HeaderMap) -> Result<String, Error> {
    if let Some(base) = &state.config.portal.base_url {
        return Ok(base.clone());
    }
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.parse::<axum::http::uri::Authority>().is_ok())
        .ok_or_else(|| {
            Error::invalid(
                "missing_host",
                "the request has no valid Host header to build the link from",
            )
        })?;
    let scheme = if is_loopback(host) { "http" } else { "https" };
    Ok(format!("{scheme}://{host}"))
}

fn is_loopback(host: &str) -> bool {
    match url::Url::parse(&format!("http://{host}")) {
        Ok(u) => match u.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        Err(_) => false,
    }
}

/// Cookies are `Secure` except when the portal is reached over plain HTTP on loopback.
fn secure(state: &AppState, headers: &HeaderMap) -> bool {
    match &state.config.portal.base_url {
        Some(base) => base.starts_with("https://"),
        None => !headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(is_loopback),
    }
}

fn cookie_header(
    name: &'static str,
    value: String,
    max_age: Option<i64>,
    secure: bool,
) -> HeaderValue {
    let mut c = Cookie::build((name, value))
        .path(COOKIE_PATH)
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure);
    c = match max_age {
        Some(ms) => c.max_age(cookie::time::Duration::milliseconds(ms)),
        None => c.max_age(cookie::time::Duration::ZERO),
    };
    HeaderValue::from_str(&c.build().to_string()).expect("a cookie is a valid header")
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

/// Makes a magic link into the portal for a tenant: single use, valid for
/// `HOOKLINE_PORTAL_LINK_TTL` (10 minutes by default). Opening it signs the browser in
/// for `HOOKLINE_PORTAL_SESSION_TTL` (24 hours by default).
#[utoipa::path(
    post,
    path = "/v1/portal/sessions",
    tag = "portal",
    operation_id = "create_portal_session",
    request_body = Option<CreatePortalSession>,
    responses(
        (status = 201, description = "The link", body = PortalLink),
        (status = 400, description = "Invalid body, or the operator key without `tenant`", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such tenant, or another tenant's id with a tenant key", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ),
    security(("tenant_key" = []), ("operator_key" = []))
)]
pub async fn create_session(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<(StatusCode, Json<PortalLink>)> {
    let req: CreatePortalSession = json_or_default(&body)?;
    let tenant = match (caller, req.tenant.as_deref()) {
        (Caller::Operator, None) => {
            return Err(Error::invalid(
                "missing_tenant",
                "with the operator key, name the tenant: {\"tenant\": \"tn_…\"}",
            )
            .into())
        }
        (Caller::Tenant { tenant, .. }, None) => tenant,
        (_, Some(id)) => {
            let id = TenantId::parse(id).ok_or(Error::NotFound("tenant"))?;
            caller.may_act_on(id)?;
            id
        }
    };
    state
        .store
        .get_tenant(tenant)
        .await?
        .ok_or(Error::NotFound("tenant"))?;
    let base = base_url(&state, &headers)?;
    let token = random_token();
    let expires_at = state
        .clock
        .now()
        .saturating_add(millis(state.config.portal.link_ttl));
    state
        .store
        .insert_login_token(&KeyHash::of(&token), tenant, expires_at)
        .await?;
    tracing::info!(tenant = %tenant, "portal link created");
    Ok((
        StatusCode::CREATED,
        Json(PortalLink {
            url: format!("{base}/portal/login?token={token}"),
            expires_at: rfc3339(expires_at),
        }),
    ))
}

#[derive(Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    token: Option<String>,
}

/// Opens a magic link: uses up its token and starts a session.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<LoginQuery>, QueryRejection>,
) -> Response {
    let token = query.ok().and_then(|Query(q)| q.token).unwrap_or_default();
    let now = state.clock.now();
    let tenant = if token.is_empty() {
        Ok(None)
    } else {
        state
            .store
            .take_login_token(&KeyHash::of(&token), now)
            .await
    };
    let tenant = match tenant {
        Ok(Some(tenant)) => tenant,
        Ok(None) => {
            return html(
                &state,
                StatusCode::FORBIDDEN,
                pages::signed_out(
                    &state.config.portal,
                    "This link has expired or was already used",
                    "A portal link opens once, for a few minutes. Open the portal again from \
                     the dashboard that sent you here to get a new one.",
                ),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "portal login failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
        }
    };
    let cookie = random_token();
    let session = PortalSession {
        tenant,
        csrf: random_token(),
        created_at: now,
        expires_at: now.saturating_add(millis(state.config.portal.session_ttl)),
    };
    if let Err(e) = state
        .store
        .insert_portal_session(&KeyHash::of(&cookie), &session)
        .await
    {
        tracing::error!(error = %e, "portal session not stored");
        return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
    }
    tracing::info!(tenant = %tenant, "portal session started");
    let secure = secure(&state, &headers);
    let mut response = see_other("/portal/endpoints");
    let h = response.headers_mut();
    h.append(
        SET_COOKIE,
        cookie_header(
            SESSION_COOKIE,
            cookie,
            Some(millis(state.config.portal.session_ttl).saturating_add(COOKIE_GRACE_MS)),
            secure,
        ),
    );
    h.append(
        SET_COOKIE,
        cookie_header(VIEW_COOKIE, String::new(), None, secure),
    );
    response
}

/// Where a request with an ended or expired session is sent.
pub async fn expired(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let mut response = html(
        &state,
        StatusCode::UNAUTHORIZED,
        pages::signed_out(
            &state.config.portal,
            "Your link has expired",
            "Your portal session has ended. Open the portal again from the dashboard that sent \
             you here to get a new link.",
        ),
    );
    let secure = secure(&state, &headers);
    response.headers_mut().append(
        SET_COOKIE,
        cookie_header(SESSION_COOKIE, String::new(), None, secure),
    );
    response
}

/// A signed-in request: its session, and the tenant whose data it shows (the session's,
/// or one of its sub-accounts).
pub struct Portal {
    hash: KeyHash,
    session: PortalSession,
    pub home: Tenant,
    pub acting: Tenant,
    pub sub_accounts: Vec<Tenant>,
    /// `acting.id`: the tenant every read and change is made for.
    pub tenant: TenantId,
    secure: bool,
}

impl FromRequestParts<AppState> for Portal {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Some(cookie) = cookie_value(&parts.headers, SESSION_COOKIE).filter(|c| !c.is_empty())
        else {
            return Err(html(
                state,
                StatusCode::UNAUTHORIZED,
                pages::signed_out(
                    &state.config.portal,
                    "You are not signed in",
                    "Open the portal from the dashboard that sent you here.",
                ),
            ));
        };
        let hash = KeyHash::of(&cookie);
        let backend = |e: Error| {
            tracing::error!(error = %e, "portal session not read");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        };
        let now = state.clock.now();
        let Some(session) = state
            .store
            .get_portal_session(&hash, now)
            .await
            .map_err(backend)?
        else {
            return Err(see_other("/portal/expired"));
        };
        let Some(home) = state
            .store
            .get_tenant(session.tenant)
            .await
            .map_err(backend)?
        else {
            return Err(see_other("/portal/expired"));
        };
        let sub_accounts = state
            .store
            .list_sub_accounts(home.id, &PageQuery::first(MAX_SUB_ACCOUNTS))
            .await
            .map_err(backend)?
            .items;
        let wanted = cookie_value(&parts.headers, VIEW_COOKIE).and_then(|v| TenantId::parse(&v));
        let acting = wanted
            .and_then(|id| sub_accounts.iter().find(|t| t.id == id).cloned())
            .unwrap_or_else(|| home.clone());
        Ok(Portal {
            hash,
            session,
            tenant: acting.id,
            home,
            acting,
            sub_accounts,
            secure: secure(state, &parts.headers),
        })
    }
}

impl Portal {
    /// The `/v1` caller this session acts as: the tenant it shows. A session holds no API
    /// key; the key id is the nil id, which no key has.
    pub fn caller(&self) -> Caller {
        Caller::Tenant {
            tenant: self.tenant,
            key: ApiKeyId::from_ulid(ulid::Ulid::nil()),
        }
    }

    /// What every page's frame shows.
    pub fn view<'a>(&'a self, state: &'a AppState) -> pages::View<'a> {
        pages::View {
            portal: &state.config.portal,
            csrf: &self.session.csrf,
            home: &self.home,
            acting: &self.acting,
            sub_accounts: &self.sub_accounts,
        }
    }

    /// Refuses a state-changing form without this session's token.
    pub fn check_csrf(&self, state: &AppState, form: &Form) -> Result<(), Shown> {
        // Compared as hashes, so the time taken says nothing about the token.
        let given = KeyHash::of(form.get("_csrf").unwrap_or_default());
        if given == KeyHash::of(&self.session.csrf) {
            return Ok(());
        }
        tracing::info!(tenant = %self.home.id, "portal form without its token refused");
        Err(Shown::from(html(
            state,
            StatusCode::FORBIDDEN,
            pages::layout(
                &self.view(state),
                "Form refused",
                pages::message_box(
                    "This form was not sent from the portal page it belongs to, or the page is \
                     too old. Reload the page and try again.",
                ),
            ),
        )))
    }
}

/// A `application/x-www-form-urlencoded` body, its fields in order (a field may repeat).
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

impl FromRequest<AppState> for Form {
    type Rejection = Response;

    async fn from_request(req: Request, _state: &AppState) -> Result<Self, Response> {
        let bytes: Bytes = axum::body::to_bytes(req.into_body(), MAX_FORM)
            .await
            .map_err(|_| (StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response())?;
        Ok(Form(
            url::form_urlencoded::parse(&bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }
}

/// Ends the session.
pub async fn logout(State(state): State<AppState>, portal: Portal, form: Form) -> Response {
    if let Err(refused) = portal.check_csrf(&state, &form) {
        return refused.into_response();
    }
    if let Err(e) = state.store.delete_portal_session(&portal.hash).await {
        return error_page(&state, &portal, e);
    }
    tracing::info!(tenant = %portal.home.id, "portal session ended");
    let mut response = html(
        &state,
        StatusCode::OK,
        pages::signed_out(
            &state.config.portal,
            "You are signed out",
            "Open the portal again from the dashboard that sent you here.",
        ),
    );
    let h = response.headers_mut();
    h.append(
        SET_COOKIE,
        cookie_header(SESSION_COOKIE, String::new(), None, portal.secure),
    );
    h.append(
        SET_COOKIE,
        cookie_header(VIEW_COOKIE, String::new(), None, portal.secure),
    );
    response
}

/// Shows a sub-account (or the session's own tenant again).
pub async fn switch(State(state): State<AppState>, portal: Portal, form: Form) -> Response {
    if let Err(refused) = portal.check_csrf(&state, &form) {
        return refused.into_response();
    }
    let wanted = form.get("tenant").and_then(TenantId::parse);
    let value = match wanted {
        Some(id) if portal.sub_accounts.iter().any(|t| t.id == id) => id.to_string(),
        Some(id) if id == portal.home.id => String::new(),
        _ => return error_page(&state, &portal, Error::NotFound("tenant")),
    };
    let mut response = see_other("/portal/endpoints");
    let max_age = (portal.session.expires_at - state.clock.now()).max(0);
    response.headers_mut().append(
        SET_COOKIE,
        cookie_header(VIEW_COOKIE, value, Some(max_age), portal.secure),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_get_plain_http() {
        for host in [
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:3000",
            "[::1]:80",
            "127.9.9.9",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "hooks.example.com",
            "10.0.0.1:80",
            "localhost.example.com",
            "",
            "a b",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn tokens_are_256_random_bits() {
        let a = random_token();
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
        assert_ne!(a, random_token());
    }

    #[test]
    fn the_session_cookie_is_http_only_and_lax() {
        let c = cookie_header(SESSION_COOKIE, "v".into(), Some(60_000), true);
        let c = c.to_str().unwrap();
        for part in [
            "hookline_portal=v",
            "HttpOnly",
            "SameSite=Lax",
            "Secure",
            "Path=/portal",
            "Max-Age=60",
        ] {
            assert!(c.contains(part), "{c} lacks {part}");
        }
        let plain = cookie_header(SESSION_COOKIE, "v".into(), Some(60_000), false);
        assert!(!plain.to_str().unwrap().contains("Secure"));
        let cleared = cookie_header(SESSION_COOKIE, String::new(), None, false);
        assert!(cleared.to_str().unwrap().contains("Max-Age=0"));
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("a=1; hookline_portal=abc; b=2"),
        );
        assert_eq!(
            cookie_value(&headers, SESSION_COOKIE).as_deref(),
            Some("abc")
        );
        assert_eq!(cookie_value(&headers, VIEW_COOKIE), None);
    }
}
