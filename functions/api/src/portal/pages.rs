//! The portal's pages as maud templates. Every value is written through maud's escaping;
//! URLs from tenants and receivers are shown as text, never used as links, and nothing is
//! written into a script or a style.

use std::collections::HashMap;

use hookline_core::catalog;
use hookline_core::config::PortalConfig;
use hookline_core::credentials::AuthSummary;
use hookline_core::http::{rfc3339, AppState};
use hookline_core::ids::EndpointId;
use hookline_core::model::{
    Attempt, Delivery, DeliveryStatus, Endpoint, EndpointStatus, Message, Millis, PageQuery, Tenant,
};
use hookline_core::Error;
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

use super::session::{Form, Portal};
use super::{status_name, Health, LogFilter};

/// What the frame of every signed-in page shows.
pub struct View<'a> {
    pub portal: &'a PortalConfig,
    pub csrf: &'a str,
    pub home: &'a Tenant,
    pub acting: &'a Tenant,
    pub sub_accounts: &'a [Tenant],
}

/// A time as people read it, in UTC (the script shows it in the reader's zone).
fn when(ms: Millis) -> Markup {
    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    html! { time datetime=(rfc3339(ms)) { (t.format("%Y-%m-%d %H:%M:%S UTC")) } }
}

fn csrf(view: &View<'_>) -> Markup {
    html! { input type="hidden" name="_csrf" value=(view.csrf); }
}

fn head(portal: &PortalConfig, title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · " (portal.title) }
            link rel="stylesheet" href="/portal/assets/portal.css";
            link rel="stylesheet" href="/portal/assets/theme.css";
            script src="/portal/assets/portal.js" defer {}
        }
    }
}

fn brand(portal: &PortalConfig) -> Markup {
    html! {
        span.brand {
            @if let Some(logo) = &portal.logo_url {
                img src=(logo) alt="" height="28";
            }
            (portal.title)
        }
    }
}

/// The frame of a signed-in page: brand, navigation, account switcher, sign-out.
pub fn layout(view: &View<'_>, title: &str, body: Markup) -> Markup {
    let nav = [
        ("/portal/endpoints", "Endpoints"),
        ("/portal/messages", "Messages"),
        ("/portal/event-types", "Event types"),
        ("/portal/domains", "Domains"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(view.portal, title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    (brand(view.portal))
                    nav aria-label="Portal" {
                        ul {
                            @for (href, name) in nav {
                                li { a href=(href) { (name) } }
                            }
                        }
                    }
                    div.account {
                        @if !view.sub_accounts.is_empty() {
                            form method="post" action="/portal/switch" .switch {
                                (csrf(view))
                                label for="tenant-switch" { "Account" }
                                select id="tenant-switch" name="tenant" {
                                    option value=(view.home.id) selected[view.acting.id == view.home.id] {
                                        (view.home.name)
                                    }
                                    @for t in view.sub_accounts {
                                        option value=(t.id) selected[view.acting.id == t.id] {
                                            "↳ " (t.name)
                                        }
                                    }
                                }
                                button type="submit" { "Switch" }
                            }
                        } @else {
                            span.tenant { (view.acting.name) }
                        }
                        form method="post" action="/portal/logout" {
                            (csrf(view))
                            button type="submit" .link { "Sign out" }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

pub fn message_box(text: &str) -> Markup {
    html! { p.notice role="status" { (text) } }
}

/// A page for a browser without a session: a refused link, an expired session, signed out.
pub fn signed_out(portal: &PortalConfig, heading: &str, text: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(portal, heading))
            body {
                header.top { (brand(portal)) }
                main id="main" .narrow {
                    h1 { (heading) }
                    p { (text) }
                }
            }
        }
    }
}

// ---- shared pieces --------------------------------------------------------------------

/// What the forms offer: the event-type catalog and the tenant's domains.
pub struct Choices {
    /// Name, description and the sample pretty-printed.
    pub event_types: Vec<(String, String, String)>,
    pub domains: Vec<String>,
}

fn pretty(raw: &str) -> String {
    serde_json::from_str::<Value>(raw)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| raw.to_string())
}

impl Choices {
    pub async fn load(state: &AppState, portal: &Portal) -> Result<Choices, Error> {
        let mut event_types: Vec<(String, String, String)> = catalog::builtin()
            .iter()
            .map(|d| {
                (
                    d.name.clone(),
                    d.description.clone(),
                    pretty(d.sample.get()),
                )
            })
            .collect();
        let added = state
            .store
            .list_event_types(&PageQuery::first(hookline_core::ports::MAX_PAGE))
            .await?;
        event_types.extend(
            added
                .items
                .into_iter()
                .map(|d| (d.name, d.description, pretty(d.sample.get()))),
        );
        let domains = state
            .store
            .list_domains(
                portal.tenant,
                &PageQuery::first(hookline_core::ports::MAX_PAGE),
            )
            .await?
            .items
            .into_iter()
            .map(|d| d.name)
            .collect();
        Ok(Choices {
            event_types,
            domains,
        })
    }
}

/// What a receiver answered a test event.
pub struct ReceiverAnswer {
    pub status: Option<u16>,
    pub error: Option<String>,
    pub response: String,
}

/// An error about one field of the endpoint form (`field` empty: the whole form).
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
    pub receiver: Option<ReceiverAnswer>,
}

/// The endpoint form's values, as given or as stored.
pub struct EndpointForm {
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub domain: String,
    pub format: String,
    pub rate_limit: String,
    pub verify: bool,
    pub error: Option<FieldError>,
    pub signing: String,
    /// The payload filter as JSON text; empty: none.
    pub filter: String,
    /// Extra headers, one `Name: value` a line.
    pub headers: String,
    /// The credentials' kind: `keep` (the stored ones), empty for none, or an `auth` type.
    pub auth_type: String,
    /// What the stored credentials are, for the edit form's "keep" choice.
    pub auth_stored: Option<String>,
    /// The credentials' names (never their secrets, which no form is filled with).
    pub auth_username: String,
    pub auth_token_url: String,
    pub auth_client_id: String,
    pub auth_scope: String,
    pub ordering: String,
}

impl Default for EndpointForm {
    fn default() -> Self {
        EndpointForm {
            url: String::new(),
            description: String::new(),
            event_types: Vec::new(),
            domain: String::new(),
            format: "raw".into(),
            rate_limit: String::new(),
            verify: true,
            error: None,
            signing: "hmac".into(),
            filter: String::new(),
            headers: String::new(),
            auth_type: String::new(),
            auth_stored: None,
            auth_username: String::new(),
            auth_token_url: String::new(),
            auth_client_id: String::new(),
            auth_scope: String::new(),
            ordering: "none".into(),
        }
    }
}

impl EndpointForm {
    pub fn from_form(form: &Form, error: Option<FieldError>) -> Self {
        let text = |name: &str| form.get(name).unwrap_or_default().to_string();
        EndpointForm {
            url: text("url"),
            description: text("description"),
            event_types: form
                .all("event_types")
                .into_iter()
                .map(String::from)
                .collect(),
            domain: text("domain"),
            format: text("format"),
            rate_limit: text("rate_limit"),
            verify: form.get("verify").is_some(),
            error,
            signing: text("signing"),
            filter: text("filter"),
            headers: text("headers"),
            auth_type: text("auth_type"),
            auth_stored: form.get("auth_stored").map(String::from),
            auth_username: text("auth_username"),
            auth_token_url: text("auth_token_url"),
            auth_client_id: text("auth_client_id"),
            auth_scope: text("auth_scope"),
            ordering: text("ordering"),
        }
    }

    fn from_endpoint(e: &Endpoint) -> Self {
        EndpointForm {
            url: e.url.clone(),
            description: e.description.clone(),
            event_types: e.event_types.clone().unwrap_or_default(),
            domain: e.domain.clone().unwrap_or_default(),
            format: e.format.as_str().to_string(),
            rate_limit: e.rate_limit.map(|r| r.to_string()).unwrap_or_default(),
            verify: false,
            error: None,
            signing: e.secrets.signing().as_str().to_string(),
            filter: e
                .filter
                .as_ref()
                .and_then(|f| serde_json::to_string_pretty(f.source()).ok())
                .unwrap_or_default(),
            headers: e
                .headers
                .iter()
                .map(|(name, value)| format!("{name}: {value}\n"))
                .collect(),
            auth_type: if e.auth.is_some() {
                "keep".into()
            } else {
                String::new()
            },
            auth_stored: e.auth.as_ref().map(|a| auth_text(&a.summary)),
            auth_username: String::new(),
            auth_token_url: String::new(),
            auth_client_id: String::new(),
            auth_scope: String::new(),
            ordering: e.ordering.as_str().to_string(),
        }
    }

    fn error_for(&self, field: &str) -> Option<&FieldError> {
        self.error.as_ref().filter(|e| e.field == field)
    }
}

/// What may be shown of an endpoint's credentials: their kind and names, no secret.
pub fn auth_text(summary: &AuthSummary) -> String {
    match summary {
        AuthSummary::Basic { username } => format!("basic, user {username}"),
        AuthSummary::Bearer => "bearer token".into(),
        AuthSummary::OAuth2 {
            token_url,
            client_id,
            scope,
        } => match scope {
            Some(scope) => {
                format!("OAuth2 client {client_id} at {token_url}, scope {scope}")
            }
            None => format!("OAuth2 client {client_id} at {token_url}"),
        },
    }
}

fn field_error(form: &EndpointForm, prefix: &str, field: &str) -> Markup {
    html! {
        @if let Some(e) = form.error_for(field) {
            p.field-error id=(format!("{prefix}{field}-error")) role="alert" { (e.message) }
            @if let Some(r) = &e.receiver {
                (receiver_answer(r.status, r.error.as_deref(), &r.response))
            }
        }
    }
}

fn receiver_answer(status: Option<u16>, error: Option<&str>, response: &str) -> Markup {
    html! {
        div.receiver {
            p {
                "The receiver answered: "
                @match (status, error) {
                    (Some(s), _) => strong { "HTTP " (s) },
                    (None, Some(kind)) => strong { "no answer (" (kind) ")" },
                    (None, None) => strong { "no answer" },
                }
            }
            @if !response.is_empty() {
                pre.excerpt { (response) }
            }
        }
    }
}

/// The fields of the create and edit forms; `prefix` keeps their ids apart on a page.
fn endpoint_fields(form: &EndpointForm, choices: &Choices, prefix: &str) -> Markup {
    let id = |name: &str| format!("{prefix}{name}");
    let described = |name: &str| {
        form.error_for(name)
            .map(|_| format!("{prefix}{name}-error"))
    };
    html! {
        @if let Some(e) = form.error_for("") {
            p.field-error role="alert" { (e.message) }
        }
        div.field {
            label for=(id("url")) { "URL" }
            input id=(id("url")) name="url" type="url" required value=(form.url)
                aria-describedby=[described("url")] aria-invalid=[described("url").map(|_| "true")];
            (field_error(form, prefix, "url"))
        }
        div.field {
            label for=(id("description")) { "Description" }
            input id=(id("description")) name="description" type="text" maxlength="1024"
                value=(form.description) aria-describedby=[described("description")];
            (field_error(form, prefix, "description"))
        }
        fieldset.field.picker {
            legend { "Event types " span.hint { "(none ticked: every event)" } }
            div.choices {
                @for (name, description, sample) in &choices.event_types {
                    div.choice {
                        label {
                            input type="checkbox" name="event_types" value=(name)
                                checked[form.event_types.iter().any(|t| t == name)];
                            " " code { (name) }
                        }
                        span.hint { (description) }
                        details { summary { "Sample" } pre { (sample) } }
                    }
                }
            }
            (field_error(form, prefix, "event_types"))
        }
        div.row {
            div.field {
                label for=(id("domain")) { "Scope" }
                select id=(id("domain")) name="domain" aria-describedby=[described("domain")] {
                    option value="" selected[form.domain.is_empty()] { "Every domain (organisation-wide)" }
                    @for d in &choices.domains {
                        option value=(d) selected[&form.domain == d] { (d) }
                    }
                }
                (field_error(form, prefix, "domain"))
            }
            div.field {
                label for=(id("format")) { "Format" }
                select id=(id("format")) name="format" aria-describedby=[described("format")] {
                    @for (value, name) in [("raw", "Raw payload"), ("envelope", "Envelope (event_name + payload)"), ("mailgun", "Mailgun")] {
                        option value=(value) selected[form.format == value] { (name) }
                    }
                }
                (field_error(form, prefix, "format"))
            }
            div.field {
                label for=(id("rate_limit")) { "Rate limit (requests/s)" }
                input id=(id("rate_limit")) name="rate_limit" type="number" min="1" max="10000"
                    value=(form.rate_limit) placeholder="no limit"
                    aria-describedby=[described("rate_limit")];
                (field_error(form, prefix, "rate_limit"))
            }
            div.field {
                label for=(id("signing")) { "Signatures" }
                select id=(id("signing")) name="signing" aria-describedby=[described("signing")] {
                    @for (value, name) in [("hmac", "HMAC (v1)"), ("ed25519", "Ed25519 (v1a)"), ("both", "Both")] {
                        option value=(value) selected[form.signing == value] { (name) }
                    }
                }
                (field_error(form, prefix, "signing"))
            }
        }
        div.field {
            label for=(id("filter")) {
                "Payload filter " span.hint { "(JSON, see the README's \"Payload filters\"; empty: every message)" }
            }
            textarea id=(id("filter")) name="filter" rows="4" spellcheck="false"
                placeholder=r#"{"path": "severity", "in": ["permanent"]}"#
                aria-describedby=[described("filter")] aria-invalid=[described("filter").map(|_| "true")] {
                (form.filter)
            }
            (field_error(form, prefix, "filter"))
        }
        div.field {
            label for=(id("headers")) { "Extra headers " span.hint { "(one " code { "Name: value" } " a line)" } }
            textarea id=(id("headers")) name="headers" rows="3" spellcheck="false"
                aria-describedby=[described("headers")] { (form.headers) }
            (field_error(form, prefix, "headers"))
        }
        fieldset.field {
            legend { "Receiver authentication " span.hint { "(write-only: never shown again)" } }
            @if let Some(stored) = &form.auth_stored {
                input type="hidden" name="auth_stored" value=(stored);
            }
            label for=(id("auth_type")) { "Authentication kind" }
            select id=(id("auth_type")) name="auth_type"
                aria-describedby=[described("auth")] {
                @if let Some(stored) = &form.auth_stored {
                    option value="keep" selected[form.auth_type == "keep"] { "Keep the current credentials (" (stored) ")" }
                }
                @for (value, name) in [("", "None"), ("basic", "Basic (user name and password)"), ("bearer", "Bearer token"), ("oauth2_client_credentials", "OAuth2 client credentials")] {
                    option value=(value) selected[form.auth_type == value] { (name) }
                }
            }
            div.row {
                div.field {
                    label for=(id("auth_username")) { "User name " span.hint { "(basic)" } }
                    input id=(id("auth_username")) name="auth_username" type="text" autocomplete="off" value=(form.auth_username);
                }
                div.field {
                    label for=(id("auth_password")) { "Password " span.hint { "(basic)" } }
                    input id=(id("auth_password")) name="auth_password" type="password" autocomplete="new-password";
                }
                div.field {
                    label for=(id("auth_token")) { "Token " span.hint { "(bearer)" } }
                    input id=(id("auth_token")) name="auth_token" type="password" autocomplete="new-password";
                }
            }
            div.row {
                div.field {
                    label for=(id("auth_token_url")) { "Token URL " span.hint { "(OAuth2)" } }
                    input id=(id("auth_token_url")) name="auth_token_url" type="url" value=(form.auth_token_url);
                }
                div.field {
                    label for=(id("auth_client_id")) { "Client id " span.hint { "(OAuth2)" } }
                    input id=(id("auth_client_id")) name="auth_client_id" type="text" autocomplete="off" value=(form.auth_client_id);
                }
                div.field {
                    label for=(id("auth_client_secret")) { "Client secret " span.hint { "(OAuth2)" } }
                    input id=(id("auth_client_secret")) name="auth_client_secret" type="password" autocomplete="new-password";
                }
                div.field {
                    label for=(id("auth_scope")) { "Scope " span.hint { "(OAuth2, optional)" } }
                    input id=(id("auth_scope")) name="auth_scope" type="text" value=(form.auth_scope);
                }
            }
            (field_error(form, prefix, "auth"))
        }
        div.field {
                label for=(id("ordering")) { "Ordering" }
                select id=(id("ordering")) name="ordering" aria-describedby=[described("ordering")] {
                    @for (value, name) in [("none", "None (in parallel)"), ("strict", "Strict (one at a time, in order)")] {
                        option value=(value) selected[form.ordering == value] { (name) }
                    }
                }
                (field_error(form, prefix, "ordering"))
        }
        div.field {
            label {
                input id=(id("verify")) type="checkbox" name="verify" value="1" checked[form.verify];
                " Test before save: send a test event and save only if the receiver answers 2xx"
            }
            (field_error(form, prefix, "verify"))
        }
    }
}

fn status_tag(name: &str) -> Markup {
    html! { span class=(format!("tag tag-{name}")) { (name) } }
}

/// The last day's success rate by hour, as bars (grey: no finished delivery that hour).
fn chart(hours: Option<&[(u32, u32); 24]>) -> Markup {
    let empty = [(0, 0); 24];
    let hours = hours.unwrap_or(&empty);
    let (ok, failed) = hours.iter().fold((0, 0), |(a, b), (o, f)| (a + o, b + f));
    let label = match (ok * 100).checked_div(ok + failed) {
        None => "No finished deliveries in the last 24 hours".to_string(),
        Some(rate) => format!(
            "{rate}% of {} deliveries succeeded in the last 24 hours",
            ok + failed
        ),
    };
    html! {
        figure.chart {
            svg width="120" height="24" viewBox="0 0 120 24" role="img" aria-label=(label) {
                @for (i, (o, f)) in hours.iter().enumerate() {
                    @let total = o + f;
                    @let h = 2 + (22 * o).checked_div(total).unwrap_or(0);
                    rect x=(i * 5) y=(24 - h) width="4" height=(h)
                        class=(if total == 0 { "none" } else if *f == 0 { "ok" } else if *o == 0 { "bad" } else { "mixed" }) {}
                }
            }
            figcaption { (label) }
        }
    }
}

fn health_text(e: &Endpoint) -> Markup {
    html! {
        @if e.status == EndpointStatus::Disabled {
            "Disabled"
            @if let Some(at) = e.disabled_at { " since " (when(at)) }
            @if let Some(reason) = &e.disabled_reason { ": " (reason) }
        } @else if let Some(since) = e.failing_since {
            "Failing since " (when(since))
        } @else {
            "Healthy"
        }
    }
}

fn types_text(e: &Endpoint) -> String {
    match &e.event_types {
        None => "every event".into(),
        Some(t) => t.join(", "),
    }
}

// ---- endpoints ------------------------------------------------------------------------

pub fn endpoint_list(
    view: &View<'_>,
    endpoints: &[Endpoint],
    health: &Health,
    choices: &Choices,
    form: &EndpointForm,
) -> Markup {
    layout(
        view,
        "Endpoints",
        html! {
            @if endpoints.is_empty() {
                p { "No endpoints yet. Add one below." }
            } @else {
                div.table-wrap {
                    table {
                        thead { tr {
                            th scope="col" { "URL" } th scope="col" { "Description" }
                            th scope="col" { "Event types" } th scope="col" { "Scope" }
                            th scope="col" { "Format" } th scope="col" { "Status" }
                            th scope="col" { "Health" } th scope="col" { "Last 24 h" }
                        } }
                        tbody {
                            @for e in endpoints {
                                tr {
                                    td { a.url href=(format!("/portal/endpoints/{}", e.id)) { (e.url) } }
                                    td { (e.description) }
                                    td { (types_text(e)) }
                                    td { (e.domain.as_deref().unwrap_or("every domain")) }
                                    td { (e.format.as_str()) }
                                    td { (status_tag(status_name(e))) }
                                    td { (health_text(e)) }
                                    td { (chart(health.hours.get(&e.id))) }
                                }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="create-heading" {
                h2 id="create-heading" { "Add an endpoint" }
                form method="post" action="/portal/endpoints" .card {
                    (csrf(view))
                    (endpoint_fields(form, choices, "new-"))
                    button type="submit" { "Save endpoint" }
                }
            }
        },
    )
}

/// What an action on an endpoint page adds to it.
#[derive(Default)]
pub struct EndpointExtras {
    pub notice: Option<String>,
    pub error: Option<String>,
    pub status: Option<axum::http::StatusCode>,
    /// The edit form as sent, with its error.
    pub form: Option<EndpointForm>,
    /// Shown only after "Reveal" or "Rotate".
    pub secret: Option<String>,
    /// The answer of "Send test event".
    pub test: Option<Value>,
    pub confirm_delete: bool,
}

fn action_form(view: &View<'_>, e: &Endpoint, action: &str, label: &str, class: &str) -> Markup {
    html! {
        form method="post" action=(format!("/portal/endpoints/{}", e.id)) .inline {
            (csrf(view))
            input type="hidden" name="action" value=(action);
            button type="submit" class=(class) { (label) }
        }
    }
}

pub fn endpoint_page(
    view: &View<'_>,
    e: &Endpoint,
    deliveries: &[(&Message, &Delivery)],
    choices: &Choices,
    extras: &EndpointExtras,
) -> Markup {
    let stored = EndpointForm::from_endpoint(e);
    let form = extras.form.as_ref().unwrap_or(&stored);
    let path = format!("/portal/endpoints/{}", e.id);
    layout(
        view,
        "Endpoint",
        html! {
            p { a href="/portal/endpoints" { "← All endpoints" } }
            @if let Some(n) = &extras.notice { (message_box(n)) }
            @if let Some(err) = &extras.error { p.field-error role="alert" { (err) } }
            @if extras.confirm_delete {
                div.card.danger role="alert" {
                    p { "Delete this endpoint? Messages stop going to it at once; this cannot be undone." }
                    form method="post" action=(path) .inline {
                        (csrf(view))
                        input type="hidden" name="action" value="delete";
                        input type="hidden" name="confirm" value="yes";
                        button type="submit" .danger { "Delete endpoint" }
                    }
                    a href=(path) { "Cancel" }
                }
            }
            dl.facts {
                dt { "URL" } dd.url { (e.url) }
                dt { "Id" } dd { code { (e.id) } }
                dt { "Description" } dd { (e.description) }
                dt { "Event types" } dd { (types_text(e)) }
                dt { "Scope" } dd { (e.domain.as_deref().unwrap_or("every domain")) }
                dt { "Format" } dd { (e.format.as_str()) }
                dt { "Rate limit" } dd { (e.rate_limit.map(|r| format!("{r} requests/s")).unwrap_or_else(|| "none".into())) }
                dt { "Extra headers" } dd {
                    @if e.headers.is_empty() { "none" }
                    @for (name, value) in &e.headers { code { (name) ": " (value) } " " }
                }
                dt { "Authentication" } dd { (e.auth.as_ref().map(|a| auth_text(&a.summary)).unwrap_or_else(|| "none".into())) }
                dt { "Ordering" } dd { (e.ordering.as_str()) }
                dt { "Status" } dd { (status_tag(status_name(e))) }
                dt { "Health" } dd { (health_text(e)) }
                dt { "Filter" } dd {
                    @match &e.filter {
                        Some(f) => code { (f.source().to_string()) },
                        None => "none (every message)",
                    }
                }
                dt { "Signatures" } dd { (e.secrets.signing().as_str()) }
                dt { "Public key" } dd {
                    @if let Some((key, _)) = e.secrets.public_keys(0) {
                        code id="public-key" { (key.expose()) }
                        " " button type="button" .link data-copy="public-key" { "Copy" }
                    } @else {
                        span.hint { "none (ed25519 never chosen)" }
                    }
                }
                dt { "Signing secret" } dd {
                    @if let Some(secret) = &extras.secret {
                        code id="secret" { (secret) }
                        " " button type="button" .link data-copy="secret" { "Copy" }
                    } @else {
                        span.hint { "hidden" }
                    }
                }
            }
            div.actions {
                @if e.status == EndpointStatus::Active {
                    (action_form(view, e, "disable", "Disable", "secondary"))
                } @else {
                    (action_form(view, e, "enable", "Enable", "secondary"))
                }
                (action_form(view, e, "reveal", "Reveal secret", "secondary"))
                (action_form(view, e, "rotate", "Rotate secret", "secondary"))
                (action_form(view, e, "delete", "Delete…", "danger"))
            }
            section aria-labelledby="test-heading" {
                h2 id="test-heading" { "Send a test event" }
                form method="post" action=(path) .card {
                    (csrf(view))
                    input type="hidden" name="action" value="test";
                    div.field {
                        label for="test-type" { "Event type" }
                        select id="test-type" name="event_type" {
                            @for (name, _, _) in &choices.event_types {
                                option value=(name) { (name) }
                            }
                        }
                    }
                    button type="submit" { "Send test event" }
                }
                @if let Some(t) = &extras.test {
                    (receiver_answer(
                        t.get("status").and_then(Value::as_u64).map(|s| s as u16),
                        t.get("error").and_then(Value::as_str),
                        t.get("response").and_then(Value::as_str).unwrap_or_default(),
                    ))
                }
            }
            section aria-labelledby="replay-heading" {
                h2 id="replay-heading" { "Replay failed deliveries" }
                form method="post" action=(path) .card {
                    (csrf(view))
                    input type="hidden" name="action" value="replay";
                    div.field {
                        label for="replay-since" { "Everything that failed since (UTC)" }
                        input id="replay-since" name="since" type="datetime-local" required;
                    }
                    button type="submit" { "Replay" }
                }
            }
            section aria-labelledby="recent-heading" {
                h2 id="recent-heading" { "Recent deliveries" }
                @if deliveries.is_empty() {
                    p { "No deliveries in the last week." }
                } @else {
                    div.table-wrap { table {
                        thead { tr {
                            th scope="col" { "Message" } th scope="col" { "Event type" }
                            th scope="col" { "Received" } th scope="col" { "Status" }
                            th scope="col" { "Attempts" } th scope="col" { "Last answer" }
                        } }
                        tbody {
                            @for (m, d) in deliveries {
                                tr {
                                    td { a href=(format!("/portal/messages/{}", m.id)) { code { (m.id) } } }
                                    td { (m.event_type) }
                                    td { (when(m.received_at)) }
                                    td { (status_tag(d.status.as_str())) }
                                    td { (d.attempts) }
                                    td {
                                        @if let Some(code) = d.last_status_code { "HTTP " (code) }
                                        @else if let Some(err) = &d.last_error { (err) }
                                    }
                                }
                            }
                        }
                    } }
                }
            }
            section aria-labelledby="edit-heading" {
                h2 id="edit-heading" { "Edit" }
                form method="post" action=(path) .card {
                    (csrf(view))
                    input type="hidden" name="action" value="update";
                    (endpoint_fields(form, choices, "edit-"))
                    button type="submit" { "Save changes" }
                }
            }
        },
    )
}

// ---- messages -------------------------------------------------------------------------

fn delivery_of(deliveries: &[Delivery], endpoint: EndpointId) -> Option<&Delivery> {
    deliveries.iter().find(|d| d.endpoint == endpoint)
}

pub fn message_list(
    view: &View<'_>,
    rows: &[(Message, Vec<Delivery>)],
    next: Option<&str>,
    filter: &LogFilter,
    endpoints: &[Endpoint],
    choices: &Choices,
) -> Markup {
    let urls: HashMap<EndpointId, &str> =
        endpoints.iter().map(|e| (e.id, e.url.as_str())).collect();
    let chosen = |v: &Option<String>| v.clone().unwrap_or_default();
    html! {
        (layout(view, "Messages", html! {
            form method="get" action="/portal/messages" .filters {
                div.field {
                    label for="f-type" { "Event type" }
                    select id="f-type" name="type" {
                        option value="" { "Any" }
                        @for (name, _, _) in &choices.event_types {
                            option value=(name) selected[chosen(&filter.event_type) == *name] { (name) }
                        }
                    }
                }
                div.field {
                    label for="f-status" { "Delivery status" }
                    select id="f-status" name="status" {
                        option value="" { "Any" }
                        @for s in [DeliveryStatus::Pending, DeliveryStatus::Succeeded, DeliveryStatus::Failed] {
                            option value=(s.as_str()) selected[chosen(&filter.status) == s.as_str()] { (s.as_str()) }
                        }
                    }
                }
                div.field {
                    label for="f-endpoint" { "Endpoint" }
                    select id="f-endpoint" name="endpoint" {
                        option value="" { "Any" }
                        @for e in endpoints {
                            option value=(e.id) selected[chosen(&filter.endpoint) == e.id.to_string()] { (e.url) }
                        }
                    }
                }
                div.field {
                    label for="f-since" { "From (UTC)" }
                    input id="f-since" name="since" type="datetime-local" value=(chosen(&filter.since));
                }
                div.field {
                    label for="f-until" { "Until (UTC)" }
                    input id="f-until" name="until" type="datetime-local" value=(chosen(&filter.until));
                }
                button type="submit" { "Filter" }
            }
            @if rows.is_empty() {
                p { "No messages." }
            } @else {
                div.table-wrap { table.log {
                    thead { tr {
                        th scope="col" { "Message" } th scope="col" { "Event type" }
                        th scope="col" { "Received" } th scope="col" { "Deliveries" }
                    } }
                    tbody {
                        @for (m, deliveries) in rows {
                            tr {
                                td { a href=(format!("/portal/messages/{}", m.id)) { code { (m.id) } } }
                                td { (m.event_type) }
                                td { (when(m.received_at)) }
                                td {
                                    @if m.targets.is_empty() { span.hint { "no endpoint" } }
                                    @for t in &m.targets {
                                        @let status = delivery_of(deliveries, *t).map_or(DeliveryStatus::Pending, |d| d.status);
                                        span.delivery title=(urls.get(t).copied().unwrap_or("deleted endpoint")) {
                                            (status_tag(status.as_str()))
                                        }
                                    }
                                }
                            }
                        }
                    }
                } }
            }
            @if let Some(cursor) = next {
                p { a rel="next" href=(format!("/portal/messages?{}", filter.with_cursor(cursor))) { "Older messages →" } }
            }
        }))
    }
}

pub fn message_page(
    view: &View<'_>,
    m: &Message,
    deliveries: &[Delivery],
    attempts: &[Attempt],
    endpoints: &[Endpoint],
    notice: Option<&str>,
) -> Markup {
    let urls: HashMap<EndpointId, &str> =
        endpoints.iter().map(|e| (e.id, e.url.as_str())).collect();
    layout(
        view,
        "Message",
        html! {
            p { a href="/portal/messages" { "← All messages" } }
            @if let Some(n) = notice { (message_box(n)) }
            dl.facts {
                dt { "Id" } dd { code { (m.id) } }
                dt { "Event type" } dd { (m.event_type) }
                dt { "Received" } dd { (when(m.received_at)) }
                @if let Some(d) = &m.domain { dt { "Domain" } dd { (d) } }
                @if let Some(k) = &m.idempotency_key { dt { "Idempotency key" } dd { code { (k) } } }
            }
            h2 { "Payload" }
            pre.payload { (pretty(m.payload.get())) }
            h2 { "Deliveries" }
            @if m.targets.is_empty() { p { "No endpoint took this message." } }
            @for t in &m.targets {
                @let d = delivery_of(deliveries, *t);
                @let status = d.map_or(DeliveryStatus::Pending, |d| d.status);
                section.card.delivery-card {
                    h3 {
                        @match urls.get(t) {
                            Some(url) => a.url href=(format!("/portal/endpoints/{t}")) { (url) },
                            None => span { "Deleted endpoint " code { (t) } },
                        }
                        " " (status_tag(status.as_str()))
                    }
                    @if let Some(next) = d.and_then(|d| d.next_attempt_at).filter(|_| status == DeliveryStatus::Pending) {
                        p { "Next attempt at " (when(next)) }
                    }
                    @let mine: Vec<&Attempt> = attempts.iter().filter(|a| a.endpoint == *t).collect();
                    @if mine.is_empty() {
                        p.hint { "No attempt yet." }
                    } @else {
                        div.table-wrap { table {
                            thead { tr {
                                th scope="col" { "#" } th scope="col" { "Time" } th scope="col" { "Status" }
                                th scope="col" { "Latency" } th scope="col" { "Error" } th scope="col" { "Response" }
                            } }
                            tbody {
                                @for a in mine {
                                    tr {
                                        td { (a.number) }
                                        td { (when(a.at)) }
                                        td { @if let Some(c) = a.status_code { "HTTP " (c) } @else { "—" } }
                                        td { (a.latency_ms) " ms" }
                                        td { (a.error.as_deref().unwrap_or(a.outcome.as_str())) }
                                        td { @if !a.response.is_empty() { pre.excerpt { (a.response) } } }
                                    }
                                }
                            }
                        } }
                    }
                    @if status == DeliveryStatus::Failed {
                        form method="post" action=(format!("/portal/messages/{}/replay", m.id)) {
                            (csrf(view))
                            input type="hidden" name="endpoint_id" value=(t);
                            button type="submit" { "Replay" }
                        }
                    }
                }
            }
        },
    )
}

// ---- catalog and domains --------------------------------------------------------------

pub fn event_types(view: &View<'_>, choices: &Choices) -> Markup {
    layout(
        view,
        "Event types",
        html! {
            @for (name, description, sample) in &choices.event_types {
                section.card {
                    h2 { code { (name) } }
                    p { (description) }
                    details { summary { "Sample payload" } pre { (sample) } }
                }
            }
        },
    )
}

/// A domain and its webhooks: each name with its URLs.
pub type DomainHooks = (String, Vec<(&'static str, Vec<String>)>);

pub fn domains(view: &View<'_>, domains: &[DomainHooks]) -> Markup {
    layout(
        view,
        "Domains",
        html! {
            p { "Webhooks by domain, as Mailgun's webhooks API (/v3) shows them: each name and the URLs it posts to." }
            @if domains.is_empty() { p { "No domains registered." } }
            @for (domain, hooks) in domains {
                section.card {
                    h2 { (domain) }
                    @if hooks.is_empty() {
                        p.hint { "No webhooks." }
                    } @else {
                        dl.facts {
                            @for (name, urls) in hooks {
                                dt { code { (name) } }
                                dd { ul { @for u in urls { li.url { (u) } } } }
                            }
                        }
                    }
                }
            }
        },
    )
}
