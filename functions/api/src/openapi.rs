//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations: its
//! frame (title, security schemes, tags) and the shapes of the bodies that handlers build
//! as JSON values. Routes are registered from their annotations (see `crate::routes`), so
//! a route cannot be served without being documented.

use hookline_core::http::{ErrorBody, ReceiverAnswer};
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::views::{
    ApiKeyView, AttemptView, DeadLetterView, DeliveryView, DomainView, EndpointView, EventTypeView,
    MessageView, TenantView,
};

/// Security scheme of routes a tenant API key (`hk_…`) may call.
pub const TENANT_KEY: &str = "tenant_key";
/// Security scheme of routes the operator key (`hkop_…`) may call.
pub const OPERATOR_KEY: &str = "operator_key";
/// Security scheme of the Mailgun-compatible routes: HTTP Basic, user `api`, a tenant key.
pub const MAILGUN_BASIC: &str = "mailgun_basic";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hookline",
        description = "Webhook delivery for email and messaging providers. Every route but `GET /health` needs \
            `Authorization: Bearer <key>`: a tenant API key (`tenant_key`), the operator key \
            (`operator_key`), or either where both are listed. A tenant key on an \
            operator-only route, and the operator key on a tenant-only route, get 403. \
            Another tenant's ids are 404, like ids that do not exist. Errors are \
            `{\"error\": {\"code\", \"message\"}}`. The Mailgun-compatible `/v3` routes use \
            HTTP Basic auth (user `api`, a tenant API key as the password) and Mailgun's \
            error shape `{\"message\", \"code\"}`."
    ),
    modifiers(&SecuritySchemes),
    components(schemas(ErrorBody, ReceiverAnswer, DeliveryView)),
    tags(
        (name = "tenants", description = "Tenants, sub-accounts and API keys"),
        (name = "domains", description = "Sending domains"),
        (name = "endpoints", description = "Webhook endpoints and their secrets"),
        (name = "messages", description = "The message and attempt log"),
        (name = "event-types", description = "The event-type catalog"),
        (name = "events", description = "Publishing events"),
        (name = "mailgun", description = "Mailgun's webhooks API (form bodies, HTTP Basic auth)"),
        (name = "portal", description = "Magic links into the tenant portal (`/portal/`)"),
        (name = "operations", description = "Health of the service, for operators and load balancers"),
        (name = "operator", description = "The operator's endpoints for Hookline's operational \
            events (`hookline.endpoint.disabled`, `hookline.endpoint.enabled`, \
            `hookline.message.attempt.exhausted`, `hookline.message.attempt.failing`, for every \
            tenant), and the dead-letter queue"),
    )
)]
pub struct ApiDoc;

/// Adds the three security schemes the operations name.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            let mut http = Http::new(HttpAuthScheme::Bearer);
            http.description = Some(description.to_string());
            SecurityScheme::Http(http)
        };
        components.add_security_scheme(TENANT_KEY, bearer("A tenant API key, `hk_…`"));
        components.add_security_scheme(OPERATOR_KEY, bearer("The operator key, `hkop_…`"));
        let mut basic = Http::new(HttpAuthScheme::Basic);
        basic.description = Some("User `api`, a tenant API key as the password".to_string());
        components.add_security_scheme(MAILGUN_BASIC, SecurityScheme::Http(basic));
    }
}

/// A tenant just created, with its first API key (shown only here).
#[derive(Serialize, ToSchema)]
pub struct TenantCreated {
    #[serde(flatten)]
    pub tenant: TenantView,
    #[schema(example = "hk_...")]
    pub api_key: String,
}

/// An API key just created; `api_key` is shown only here.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyCreated {
    #[serde(flatten)]
    pub key: ApiKeyView,
    pub api_key: String,
}

/// A page of a listing.
#[derive(Serialize, ToSchema)]
pub struct TenantList {
    pub data: Vec<TenantView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A page of a listing.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyList {
    pub data: Vec<ApiKeyView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A page of a listing.
#[derive(Serialize, ToSchema)]
pub struct DomainList {
    pub data: Vec<DomainView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A page of a listing.
#[derive(Serialize, ToSchema)]
pub struct EndpointList {
    pub data: Vec<EndpointView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A page of the catalog.
#[derive(Serialize, ToSchema)]
pub struct EventTypeList<'a> {
    pub data: Vec<EventTypeView<'a>>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A page of the log, newest first.
#[derive(Serialize, ToSchema)]
pub struct MessageList<'a> {
    pub data: Vec<MessageView<'a>>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A message with the state of its delivery to each endpoint it fans out to.
#[derive(Serialize, ToSchema)]
pub struct MessageDetail<'a> {
    #[serde(flatten)]
    pub message: MessageView<'a>,
    pub deliveries: Vec<DeliveryView>,
}

/// A page of a listing.
#[derive(Serialize, ToSchema)]
pub struct AttemptList {
    pub data: Vec<AttemptView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A page of the dead letters, oldest first.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterList {
    pub data: Vec<DeadLetterView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// What a redrive put back on the events queue.
#[derive(Serialize, ToSchema)]
pub struct Redriven {
    /// The ids of the dead letters redriven.
    pub redriven: Vec<String>,
}

/// An endpoint's current signing secret.
#[derive(Serialize, ToSchema)]
pub struct SecretKey {
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub key: String,
}

/// A rotation's new signing secret and, for an endpoint with ed25519 keys, its new
/// public key.
#[derive(Serialize, ToSchema)]
pub struct RotatedSecret {
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub key: String,
    /// Absent for an endpoint that has never signed with ed25519.
    #[schema(example = "whpk_ZbHG3ETmpKI4oQMTBq7iEC+8Er1xcu0z6/8kyZvD6ik=")]
    pub public_key: Option<String>,
}

/// An endpoint's ed25519 public keys, to check `v1a` signatures with.
#[derive(Serialize, ToSchema)]
pub struct PublicKeys {
    /// The current key: `whpk_` and the base64 of its 32 bytes.
    #[schema(example = "whpk_ZbHG3ETmpKI4oQMTBq7iEC+8Er1xcu0z6/8kyZvD6ik=")]
    pub key: String,
    /// Keys retired by a rotation that still sign, beside the current one, until they
    /// expire.
    pub previous: Vec<RetiredPublicKey>,
}

/// A public key retired by a rotation.
#[derive(Serialize, ToSchema)]
pub struct RetiredPublicKey {
    pub key: String,
    /// When it stops signing (RFC 3339).
    pub expires_at: String,
}

/// What the receiver answered to a test event.
#[derive(Serialize, ToSchema)]
pub struct TestResult {
    /// True when the receiver answered 2xx.
    pub ok: bool,
    /// The `webhook-id` the test event was sent with.
    pub webhook_id: String,
    pub event_type: String,
    pub status: Option<u16>,
    /// Why nothing was answered (`timeout`, `connect`, `blocked`, `tls`, …).
    pub error: Option<String>,
    pub latency_ms: u64,
    /// The start of the receiver's answer.
    pub response: String,
}

/// The URLs of one Mailgun webhook name.
#[derive(Serialize, ToSchema)]
pub struct MailgunUrls {
    pub urls: Vec<String>,
}

/// `GET /v3/domains/{domain}/webhooks`: the names that have URLs.
#[derive(Serialize, ToSchema)]
pub struct MailgunWebhookList {
    #[schema(additional_properties)]
    pub webhooks: std::collections::BTreeMap<String, MailgunUrls>,
}

/// One Mailgun webhook.
#[derive(Serialize, ToSchema)]
pub struct MailgunWebhook {
    pub webhook: MailgunUrls,
}

/// The answer to a Mailgun create, update or delete.
#[derive(Serialize, ToSchema)]
pub struct MailgunChanged {
    #[schema(example = "Webhook has been created")]
    pub message: String,
    pub webhook: MailgunUrls,
}

/// Mailgun's error shape, with Hookline's machine-readable code beside the message.
#[derive(Serialize, ToSchema)]
pub struct MailgunErrorBody {
    pub message: String,
    pub code: String,
}

/// The form fields of a Mailgun webhook create: `id` (the name) and `url`, repeated.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"id": "delivered", "url": ["http://127.0.0.1:9000/mailgun"]}))]
pub struct MailgunCreateForm {
    #[schema(example = "delivered")]
    pub id: String,
    #[schema(example = json!(["http://127.0.0.1:9000/mailgun"]))]
    pub url: Vec<String>,
}

/// The form fields of a Mailgun webhook update: `url`, repeated; it replaces the list.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"url": ["http://127.0.0.1:9000/mailgun"]}))]
pub struct MailgunUpdateForm {
    #[schema(example = json!(["http://127.0.0.1:9000/mailgun"]))]
    pub url: Vec<String>,
}

/// The form field of a Mailgun webhook test: the one `url` the test event goes to.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"url": "http://127.0.0.1:9000/mailgun"}))]
pub struct MailgunTestForm {
    #[schema(example = "http://127.0.0.1:9000/mailgun")]
    pub url: String,
}

/// The answer to a Mailgun webhook test: what the receiver answered.
#[derive(Serialize, ToSchema)]
pub struct MailgunTestResult {
    /// The receiver's HTTP status; 0 when it gave none (timeout, connection refused, …).
    #[schema(example = 200)]
    pub code: u16,
    /// The start of the receiver's body, or why nothing came back.
    #[schema(example = "ok")]
    pub message: String,
}

/// The body formats of an endpoint (see the README's Delivery section). Only documents the
/// values; the handlers parse them as text.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FormatName {
    Raw,
    Envelope,
    Mailgun,
}

/// The signatures an endpoint's requests carry: `v1,` (HMAC-SHA256), `v1a,` (ed25519) or
/// both. Only documents the values.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SigningName {
    Hmac,
    Ed25519,
    Both,
}

/// How an endpoint's messages are delivered: `none` side by side, `strict` one at a time
/// in the order accepted (per ordering key). Only documents the values.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderingName {
    None,
    Strict,
}

/// The status of an endpoint. Only documents the values.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusName {
    Active,
    Disabled,
}

/// A payload filter: one object with exactly one of `and`, `or` (arrays of filters), `not`
/// (a filter), or `path` with exactly one operator. At most 8 deep, 64 nodes, 8 KiB.
/// Only documents the shape; the handlers check it (422 `invalid_filter`, naming the node
/// by JSON pointer). See the README's "Payload filters".
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"and": [
    {"path": "event", "in": ["delivered", "opened"]},
    {"not": {"path": "recipient", "prefix": "test@"}}
]}))]
pub struct FilterNode {
    /// Filters that must all hold (1 to 32).
    #[schema(value_type = Option<Vec<Object>>)]
    and: Option<()>,
    /// Filters of which one must hold (1 to 32).
    #[schema(value_type = Option<Vec<Object>>)]
    or: Option<()>,
    /// A filter that must not hold.
    #[schema(value_type = Option<Object>)]
    not: Option<()>,
    /// Dotted keys into the payload: `a.b`; on an array, digits take an element
    /// (`items.0.sku`) and any other key looks in every element (`items.sku`, any match).
    #[schema(example = "data.items.sku")]
    path: Option<String>,
    /// The value there is this string, number, boolean or null (on an array: an element is).
    #[schema(value_type = Option<serde_json::Value>)]
    equals: Option<()>,
    /// The value there is one of these (1 to 100 strings, numbers, booleans or nulls).
    #[serde(rename = "in")]
    #[schema(value_type = Option<Vec<serde_json::Value>>)]
    in_: Option<()>,
    /// `true`: the path reaches a value (`null` included); `false`: it reaches none.
    exists: Option<bool>,
    /// The value there is a string starting with this.
    prefix: Option<String>,
    /// The value there is a number greater than this.
    gt: Option<f64>,
    /// The value there is a number at least this.
    gte: Option<f64>,
    /// The value there is a number less than this.
    lt: Option<f64>,
    /// The value there is a number at most this.
    lte: Option<f64>,
}

/// Receiver authentication, by `type`: `basic` (`username`, `password`), `bearer` (`token`)
/// or `oauth2_client_credentials` (`token_url`, `client_id`, `client_secret`, `scope`?: a
/// token is fetched from `token_url`, under the same URL policy as deliveries, cached until
/// shortly before it expires and fetched again after a 401). Write-only: kept sealed with
/// the deployment's credentials key; no answer shows a password, token or secret. Faults
/// are 422 `invalid_auth` naming the field (`auth.password`).
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"type": "oauth2_client_credentials",
    "token_url": "https://id.example.com/oauth/token", "client_id": "hookline",
    "client_secret": "…", "scope": "webhooks"}))]
pub struct AuthInput {
    /// `basic`, `bearer` or `oauth2_client_credentials`.
    #[serde(rename = "type")]
    kind: String,
    /// `basic`: the user name (no `:`).
    username: Option<String>,
    /// `basic`: the password.
    password: Option<String>,
    /// `bearer`: the token (visible ASCII).
    token: Option<String>,
    /// `oauth2_client_credentials`: where tokens are fetched (client credentials grant,
    /// the client authenticated with HTTP Basic).
    token_url: Option<String>,
    /// `oauth2_client_credentials`: the client id.
    client_id: Option<String>,
    /// `oauth2_client_credentials`: the client secret.
    client_secret: Option<String>,
    /// `oauth2_client_credentials`: the scope asked for, if any.
    scope: Option<String>,
}

/// What a view shows of an endpoint's receiver authentication: its `type`, and the
/// `username` (basic) or `token_url`, `client_id` and `scope` (OAuth2). Never a password,
/// token or client secret.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"type": "oauth2_client_credentials",
    "token_url": "https://id.example.com/oauth/token", "client_id": "hookline"}))]
pub struct AuthView {
    /// `basic`, `bearer` or `oauth2_client_credentials`.
    #[serde(rename = "type")]
    kind: String,
    username: Option<String>,
    token_url: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
}
