//! The auth matrix, driven by the OpenAPI document the service serves: every documented
//! operation is called without a key, with malformed keys, with a revoked key, with another
//! tenant's valid key against tenant A's real ids, and with the wrong kind of key (the
//! operator key on tenant routes, a tenant key on operator routes). A route documented as
//! needing no key (`GET /health`) answers whatever the caller sends, and shows nothing of
//! anyone's. A new route is covered as soon as it is documented, and the test fails if any
//! operation is left out.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp, OPERATOR_KEY};

/// Operations documented today; the document may grow, never silently shrink.
const KNOWN_OPERATIONS: usize = 45;

/// How an operation authenticates, from its `security` requirements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Bearer tenant key only.
    Tenant,
    /// Bearer operator key only.
    Operator,
    /// Bearer: the operator or the tenant concerned.
    Either,
    /// HTTP Basic, user `api`, a tenant key (the Mailgun-compatible routes).
    MailgunBasic,
    /// No key (an empty security requirement): `GET /health`.
    Public,
}

/// What a request carries in `Authorization`.
enum Credentials<'a> {
    None,
    Header(&'a str),
    Bearer(&'a str),
    Basic(&'a str),
}

/// Tenant A's resources, whose ids fill the paths.
struct Fixture {
    tenant: String,
    domain: String,
    endpoint: String,
    message: String,
    live_key_id: String,
    /// Everything of A's that must never show in an answer to anyone else.
    private: Vec<String>,
}

struct Operation {
    method: Method,
    path: String,
    id: String,
    access: Access,
    /// The example request body and its media type, if the operation takes one.
    body: Option<(String, Value)>,
}

#[tokio::test]
async fn every_documented_operation_refuses_wrong_credentials_and_other_tenants() {
    let app = spawn_app().await;
    let (status, doc) = send(&app, Method::GET, "/openapi.json", Credentials::None, None).await;
    assert_eq!(status, StatusCode::OK, "/openapi.json needs no key");
    let doc: Value = serde_json::from_str(&doc).expect("the document is JSON");
    let operations = operations(&doc);

    let alpha = app.create_tenant("Alpha").await;
    let beta = app.create_tenant("Beta").await;
    let fixture = fixture(&app, &alpha.id, &alpha.key).await;
    let revoked = revoked_key(&app, &alpha.id, &alpha.key).await;

    let mut covered = 0;
    for op in &operations {
        let path = fill_path(&op.path, &fixture);
        let label = format!("{} {} ({})", op.method, op.path, op.id);
        let body = op.body.as_ref();
        if op.access == Access::Public {
            for creds in [
                Credentials::None,
                Credentials::Header("Bearer"),
                Credentials::Bearer(&revoked),
                Credentials::Bearer(&beta.key),
            ] {
                let (status, text) = send(&app, op.method.clone(), &path, creds, body).await;
                assert_eq!(status, StatusCode::OK, "{label} answers any caller: {text}");
                assert_private(&label, &text, &path, &fixture);
            }
            covered += 1;
            continue;
        }
        let basic = op.access == Access::MailgunBasic;
        let check = Check {
            label: &label,
            basic,
        };

        // (a) no key at all.
        let (status, text) = send(&app, op.method.clone(), &path, Credentials::None, body).await;
        check.expect("no key", status, StatusCode::UNAUTHORIZED, &text);

        // (b) malformed keys, and a revoked key of A's.
        let malformed: [Credentials; 3] = if basic {
            [
                Credentials::Header("Basic !!!not-base64!!!"),
                Credentials::Header("Bearer hk_not_basic"),
                Credentials::Basic("hk_not-a-real-key"),
            ]
        } else {
            [
                Credentials::Header("Bearer"),
                Credentials::Header("Token hk_wrong_scheme"),
                Credentials::Bearer("hk_not-a-real-key"),
            ]
        };
        for creds in malformed {
            let (status, text) = send(&app, op.method.clone(), &path, creds, body).await;
            check.expect("malformed key", status, StatusCode::UNAUTHORIZED, &text);
        }
        let creds = if basic {
            Credentials::Basic(&revoked)
        } else {
            Credentials::Bearer(&revoked)
        };
        let (status, text) = send(&app, op.method.clone(), &path, creds, body).await;
        check.expect("revoked key", status, StatusCode::UNAUTHORIZED, &text);
        assert_private(&label, &text, &path, &fixture);

        // (c) another tenant's valid key against A's ids.
        let creds = if basic {
            Credentials::Basic(&beta.key)
        } else {
            Credentials::Bearer(&beta.key)
        };
        let (status, text) = send(&app, op.method.clone(), &path, creds, body).await;
        if op.access == Access::Operator {
            check.expect("tenant key", status, StatusCode::FORBIDDEN, &text);
        } else if path != op.path && !shared(&op.path) {
            check.expect("other tenant", status, StatusCode::NOT_FOUND, &text);
        } else {
            // No id in the path (or only a name of the shared catalog): the call works on
            // B's own data.
            assert!(
                status.is_success(),
                "{label}: other tenant on its own data got {status}: {text}"
            );
        }
        assert_private(&label, &text, &path, &fixture);

        // (d) the wrong kind of key.
        match op.access {
            Access::Tenant | Access::MailgunBasic => {
                let creds = if basic {
                    Credentials::Basic(OPERATOR_KEY)
                } else {
                    Credentials::Bearer(OPERATOR_KEY)
                };
                let (status, text) = send(&app, op.method.clone(), &path, creds, body).await;
                check.expect("operator key", status, StatusCode::FORBIDDEN, &text);
            }
            Access::Operator => {
                let creds = Credentials::Bearer(&alpha.key);
                let (status, text) = send(&app, op.method.clone(), &path, creds, body).await;
                check.expect("tenant key", status, StatusCode::FORBIDDEN, &text);
            }
            Access::Either | Access::Public => {}
        }
        covered += 1;
    }

    assert_eq!(covered, operations.len(), "every operation is covered");
    assert!(
        operations.len() >= KNOWN_OPERATIONS,
        "the document lost operations: {} < {KNOWN_OPERATIONS}",
        operations.len()
    );

    // Nothing of A's was changed by the calls above.
    for path in [
        format!("/v1/endpoints/{}", fixture.endpoint),
        format!("/v1/messages/{}", fixture.message),
        format!("/v1/domains/{}", fixture.domain),
        format!("/v1/tenants/{}", fixture.tenant),
    ] {
        let (status, body) = app.get(&path, &alpha.key).await;
        assert_eq!(status, StatusCode::OK, "{path} after the matrix: {body}");
    }
    let (_, keys) = app
        .get(
            &format!("/v1/tenants/{}/api-keys", fixture.tenant),
            &alpha.key,
        )
        .await;
    let live = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == fixture.live_key_id.as_str())
        .expect("the live key is listed");
    assert!(live["revoked_at"].is_null(), "the live key was not revoked");
    app.stop().await;
}

/// Every operation of the document with its access rule and an example body.
fn operations(doc: &Value) -> Vec<Operation> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().unwrap() {
            let method: Method = method.to_uppercase().parse().expect("an HTTP method");
            let id = op["operationId"].as_str().expect("operationId").to_string();
            let schemes: Vec<&str> = op["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{id} names no security requirement"))
                .iter()
                .flat_map(|req| req.as_object().unwrap().keys().map(String::as_str))
                .collect();
            let has = |s: &str| schemes.contains(&s);
            let public = op["security"] == json!([{}]);
            let access = match (has("tenant_key"), has("operator_key"), has("mailgun_basic")) {
                (false, false, false) if public => Access::Public,
                (true, false, false) => Access::Tenant,
                (false, true, false) => Access::Operator,
                (true, true, false) => Access::Either,
                (false, false, true) => Access::MailgunBasic,
                _ => panic!("{id}: unexpected security {schemes:?}"),
            };
            let body = op.get("requestBody").map(|rb| {
                let (media, content) = rb["content"]
                    .as_object()
                    .and_then(|c| c.iter().next())
                    .unwrap_or_else(|| panic!("{id}: request body without content"));
                let example = content
                    .get("example")
                    .cloned()
                    .or_else(|| schema_example(doc, &content["schema"]))
                    .unwrap_or_else(|| panic!("{id}: the request body needs an example"));
                (media.clone(), example)
            });
            out.push(Operation {
                method,
                path: path.clone(),
                id,
                access,
                body,
            });
        }
    }
    out
}

/// The example of a schema, following `$ref`s and the branches of a `oneOf`.
fn schema_example(doc: &Value, schema: &Value) -> Option<Value> {
    if let Some(example) = schema.get("example") {
        return Some(example.clone());
    }
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next()?;
        return schema_example(doc, &doc["components"]["schemas"][name]);
    }
    // The first alternative that has one (an optional body is `oneOf: [null, ...]`).
    schema["oneOf"]
        .as_array()
        .and_then(|branches| branches.iter().find_map(|b| schema_example(doc, b)))
}

/// Tenant A with a domain, an endpoint, a Mailgun webhook, a message and a second key.
/// Every URL is on loopback, on a port nothing listens on.
async fn fixture(app: &TestApp, tenant: &str, key: &str) -> Fixture {
    let domain = "mg.alpha-tenant.example".to_string();
    let (status, body) = app
        .post("/v1/domains", key, json!({ "name": domain }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let url = "http://127.0.0.1:9/alpha-hidden-path";
    let endpoint = app
        .create_endpoint(key, json!({ "url": url, "domain": domain }))
        .await;
    let (_, secret) = app
        .get(&format!("/v1/endpoints/{endpoint}/secret"), key)
        .await;
    let secret = secret["key"].as_str().expect("secret").to_string();
    let form = reqwest::multipart::Form::new()
        .text("id", "delivered")
        .text("url", "http://127.0.0.1:9/alpha-hidden-mailgun");
    let resp = app
        .client
        .post(format!("{}/v3/domains/{domain}/webhooks", app.base))
        .basic_auth("api", Some(key))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{}",
        resp.text().await.unwrap()
    );
    let message = app
        .publish(
            key,
            json!({
                "type": "delivered",
                "domain": domain,
                "payload": {"marker": "alpha-hidden-payload"},
            }),
        )
        .await;
    let (status, created) = app
        .post(&format!("/v1/tenants/{tenant}/api-keys"), key, json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let live_key_id = created["id"].as_str().unwrap().to_string();
    let live_key = created["api_key"].as_str().unwrap().to_string();
    Fixture {
        tenant: tenant.to_string(),
        domain: domain.clone(),
        endpoint: endpoint.clone(),
        message: message.clone(),
        live_key_id: live_key_id.clone(),
        private: vec![
            tenant.to_string(),
            key.to_string(),
            live_key,
            live_key_id,
            domain,
            endpoint,
            message,
            secret,
            "alpha-hidden".to_string(),
        ],
    }
}

/// A key of the tenant's, created and revoked.
async fn revoked_key(app: &TestApp, tenant: &str, key: &str) -> String {
    let (status, created) = app
        .post(&format!("/v1/tenants/{tenant}/api-keys"), key, json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/tenants/{tenant}/api-keys/{id}"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    created["api_key"].as_str().unwrap().to_string()
}

/// Whether a route's parameters name shared records (the event-type catalog), which
/// every tenant may read, rather than one tenant's.
fn shared(template: &str) -> bool {
    template.starts_with("/v1/event-types/")
}

/// The path with A's ids in its parameters. An unknown parameter fails the test, so a new
/// kind of id is filled in here before its route can pass.
fn fill_path(template: &str, f: &Fixture) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}').expect("closed parameter") + start;
        out.push_str(&rest[..start]);
        let name = &rest[start + 1..end];
        let value = match (name, template) {
            ("id", t) if t.starts_with("/v1/tenants/") => &f.tenant,
            ("id", t) if t.starts_with("/v1/endpoints/") => &f.endpoint,
            // Operator routes: a tenant's key is refused before any id is looked up.
            ("id", t) if t.starts_with("/v1/operator/endpoints/") => &f.endpoint,
            ("id", t) if t.starts_with("/v1/messages/") => &f.message,
            ("key_id", _) => &f.live_key_id,
            ("name", t) if t.starts_with("/v1/domains/") => &f.domain,
            ("domain", _) => &f.domain,
            ("name", t) if t.starts_with("/v3/") => "delivered",
            ("name", t) if shared(t) => "delivered",
            _ => panic!("no fixture for the parameter {name} of {template}"),
        };
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    creds: Credentials<'_>,
    body: Option<&(String, Value)>,
) -> (StatusCode, String) {
    let mut req = app.client.request(method, format!("{}{path}", app.base));
    req = match creds {
        Credentials::None => req,
        Credentials::Header(value) => req.header("authorization", value),
        Credentials::Bearer(key) => req.bearer_auth(key),
        Credentials::Basic(key) => req.basic_auth("api", Some(key)),
    };
    if let Some((media, example)) = body {
        req = if media == "application/json" {
            req.json(example)
        } else {
            // A form: each field of the example, arrays as repeated fields.
            let mut form = reqwest::multipart::Form::new();
            for (name, value) in example.as_object().expect("a form example is an object") {
                let values = match value {
                    Value::Array(items) => items.clone(),
                    other => vec![other.clone()],
                };
                for v in values {
                    let text = v.as_str().map(str::to_string).unwrap_or(v.to_string());
                    form = form.text(name.clone(), text);
                }
            }
            req.multipart(form)
        };
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    (status, resp.text().await.unwrap())
}

/// The checks of one operation's answers.
struct Check<'a> {
    label: &'a str,
    /// Mailgun's error shape (`{"message", "code"}`) instead of `{"error": {...}}`.
    basic: bool,
}

impl Check<'_> {
    /// The expected status, with a machine-readable code in the error body.
    fn expect(&self, case: &str, status: StatusCode, want: StatusCode, text: &str) {
        let label = self.label;
        assert_eq!(status, want, "{label} with {case}: {text}");
        let body: Value = serde_json::from_str(text)
            .unwrap_or_else(|_| panic!("{label} with {case}: not JSON: {text}"));
        let code = if self.basic {
            &body["code"]
        } else {
            &body["error"]["code"]
        };
        assert!(
            code.as_str().is_some_and(|c| !c.is_empty()),
            "{label} with {case}: no error code in {text}"
        );
    }
}

/// No id, key, secret or data of A's in an answer to someone else (what the caller put in
/// the path itself excepted).
fn assert_private(label: &str, text: &str, path: &str, f: &Fixture) {
    for private in &f.private {
        if path.contains(private.as_str()) {
            continue;
        }
        assert!(
            !text.contains(private.as_str()),
            "{label}: the answer shows {private:?}: {text}"
        );
    }
}
