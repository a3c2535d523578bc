//! Tenants, keys, domains, endpoints and event types: each subcommand's answer, as a
//! table and as `--json`, and its refusals (exit 1 with the API's code and message).

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{spawn_app, OPERATOR_KEY};
use crate::receiver::Receiver;
use crate::support::User;

/// The API's own refusal of `path` with `key`, for comparing with what the command prints.
async fn api_message(app: &crate::helpers::TestApp, path: &str, key: &str) -> (StatusCode, Value) {
    let (status, body) = app.get(path, key).await;
    assert!(status.is_client_error(), "{status} {body}");
    (status, body["error"].clone())
}

#[tokio::test]
async fn tenants_and_keys_are_created_listed_shown_and_revoked() {
    let app = spawn_app().await;
    let user = User::new();
    let b = app.base.as_str();

    let created = user
        .at(
            b,
            OPERATOR_KEY,
            &["tenants", "create", "Acme Mail", "--json"],
        )
        .await
        .ok()
        .json();
    let tenant = created["id"].as_str().unwrap().to_string();
    let key = created["api_key"].as_str().unwrap().to_string();
    assert_eq!(created["name"], "Acme Mail");

    let shown = user
        .at(b, &key, &["tenants", "get", &tenant, "--json"])
        .await
        .ok()
        .json();
    assert_eq!(shown["id"], tenant.as_str());
    let table = user
        .at(b, &key, &["tenants", "get", &tenant])
        .await
        .ok()
        .stdout;
    assert!(
        table.contains("Acme Mail") && table.contains(&tenant),
        "{table}"
    );

    let sub = user
        .at(
            b,
            &key,
            &["tenants", "create-sub-account", "Acme EU", "--json"],
        )
        .await
        .ok()
        .json();
    assert_eq!(sub["parent"], tenant.as_str());
    let subs = user
        .at(b, &key, &["tenants", "sub-accounts", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(subs.as_array().unwrap().len(), 1);
    assert_eq!(subs[0]["name"], "Acme EU");

    let new_key = user
        .at(b, &key, &["keys", "create", "--tenant", &tenant, "--json"])
        .await
        .ok()
        .json();
    let key_id = new_key["id"].as_str().unwrap().to_string();
    let keys = user
        .at(b, &key, &["keys", "list", "--tenant", &tenant, "--json"])
        .await
        .ok()
        .json();
    assert_eq!(keys.as_array().unwrap().len(), 2);
    assert!(
        !keys.to_string().contains(&key),
        "a key list never shows a key"
    );
    let listed = user
        .at(b, &key, &["keys", "list", "--tenant", &tenant])
        .await
        .ok()
        .stdout;
    assert!(
        listed.contains(&key_id) && listed.contains("PREFIX"),
        "{listed}"
    );
    let one = user
        .at(
            b,
            &key,
            &["keys", "get", "--tenant", &tenant, &key_id, "--json"],
        )
        .await
        .ok()
        .json();
    assert_eq!(one["revoked_at"], Value::Null);
    user.at(b, &key, &["keys", "revoke", "--tenant", &tenant, &key_id])
        .await
        .ok();
    let one = user
        .at(
            b,
            &key,
            &["keys", "get", "--tenant", &tenant, &key_id, "--json"],
        )
        .await
        .ok()
        .json();
    assert!(one["revoked_at"].is_string(), "{one}");

    // A bad key: exit 1 with the API's code and message.
    let (status, error) = api_message(&app, &format!("/v1/tenants/{tenant}"), "hk_not-a-key").await;
    let out = user
        .at(b, "hk_not-a-key", &["tenants", "get", &tenant])
        .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(error["message"].as_str().unwrap()),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(error["code"].as_str().unwrap()),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&status.as_u16().to_string()),
        "{}",
        out.stderr
    );
    // Another tenant's keys: refused as the API refuses it.
    let other = app.create_tenant("other").await;
    let out = user
        .at(b, &other.key, &["keys", "list", "--tenant", &tenant])
        .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let out = user.at(b, OPERATOR_KEY, &["tenants", "create", ""]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    // Flags it does not know: a usage error.
    for args in [
        &["tenants", "get", &tenant, "--colour"][..],
        &["keys", "list", "--tenant", &tenant, "--bogus"][..],
        &["tenants", "sub-accounts", "--limit", "0"][..],
    ] {
        let out = user.at(b, &key, args).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
    }
    app.stop().await;
}

#[tokio::test]
async fn domains_are_created_listed_shown_and_deleted() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let user = User::new();
    let b = app.base.as_str();

    let d = user
        .at(
            b,
            &t.key,
            &["domains", "create", "mg.acme.example", "--json"],
        )
        .await
        .ok()
        .json();
    assert_eq!(d["name"], "mg.acme.example");
    user.at(b, &t.key, &["domains", "create", "news.acme.example"])
        .await
        .ok();
    let list = user
        .at(b, &t.key, &["domains", "list", "--json"])
        .await
        .ok()
        .json();
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mg.acme.example", "news.acme.example"]);
    let limited = user
        .at(b, &t.key, &["domains", "list", "--limit", "1", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(limited.as_array().unwrap().len(), 1);
    let table = user.at(b, &t.key, &["domains", "list"]).await.ok().stdout;
    assert!(
        table.contains("NAME") && table.contains("news.acme.example"),
        "{table}"
    );
    let one = user
        .at(b, &t.key, &["domains", "get", "mg.acme.example", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(one["name"], "mg.acme.example");
    user.at(b, &t.key, &["domains", "delete", "mg.acme.example"])
        .await
        .ok();

    let (_, error) = api_message(&app, "/v1/domains/mg.acme.example", &t.key).await;
    let out = user
        .at(b, &t.key, &["domains", "get", "mg.acme.example"])
        .await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(error["message"].as_str().unwrap()),
        "{}",
        out.stderr
    );
    let out = user
        .at(b, &t.key, &["domains", "create", "not a domain"])
        .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        app.get("/v1/domains", &t.key).await.1["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let out = user.at(b, &t.key, &["domains", "list", "--wat"]).await;
    assert_eq!(out.code, 2);
    app.stop().await;
}

#[tokio::test]
async fn endpoints_go_through_their_whole_life() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let user = User::new();
    let b = app.base.as_str();
    let receiver = Receiver::start(200).await;
    let url = receiver.url("/hook");

    let ep = user
        .at(
            b,
            &t.key,
            &[
                "endpoints",
                "create",
                &url,
                "--event-type",
                "delivered",
                "--event-type",
                "opened",
                "--description",
                "main",
                "--filter",
                r#"{"path": "amount", "gte": 100}"#,
                "--header",
                "X-Tenant: acme",
                "--auth",
                r#"{"type": "bearer", "token": "cli-token-never-shown"}"#,
                "--json",
            ],
        )
        .await
        .ok();
    assert!(
        !ep.stdout.contains("cli-token-never-shown"),
        "{}",
        ep.stdout
    );
    let ep = ep.json();
    let id = ep["id"].as_str().unwrap().to_string();
    assert_eq!(ep["headers"], serde_json::json!({"x-tenant": "acme"}));
    assert_eq!(ep["auth"], serde_json::json!({"type": "bearer"}));
    assert_eq!(
        ep["filter"],
        serde_json::json!({"path": "amount", "gte": 100})
    );
    assert_eq!(
        ep["event_types"],
        serde_json::json!(["delivered", "opened"])
    );
    let list = user
        .at(b, &t.key, &["endpoints", "list", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(list[0]["id"], id.as_str());
    let table = user.at(b, &t.key, &["endpoints", "list"]).await.ok().stdout;
    assert!(
        table.contains(&id) && table.contains("active") && table.contains("delivered,opened"),
        "{table}"
    );

    let updated = user
        .at(
            b,
            &t.key,
            &[
                "endpoints",
                "update",
                &id,
                "--all-events",
                "--status",
                "disabled",
                "--rate-limit",
                "5",
                "--no-filter",
                "--no-headers",
                "--no-auth",
                "--ordering",
                "strict",
                "--json",
            ],
        )
        .await
        .ok()
        .json();
    assert_eq!(updated["ordering"], "strict");
    assert_eq!(updated["event_types"], Value::Null);
    assert_eq!(updated["status"], "disabled");
    assert_eq!(updated["rate_limit"], 5);
    assert_eq!(updated["filter"], Value::Null);
    assert_eq!(updated["headers"], serde_json::json!({}));
    assert_eq!(updated["auth"], Value::Null);
    let shown = user
        .at(b, &t.key, &["endpoints", "get", &id, "--json"])
        .await
        .ok()
        .json();
    assert_eq!(shown["status"], "disabled");
    user.at(
        b,
        &t.key,
        &[
            "endpoints",
            "update",
            &id,
            "--status",
            "active",
            "--no-rate-limit",
        ],
    )
    .await
    .ok();

    let secret = user
        .at(b, &t.key, &["endpoints", "secret", &id, "--json"])
        .await
        .ok()
        .json();
    let old = secret["key"].as_str().unwrap().to_string();
    assert!(old.starts_with("whsec_"));
    let rotated = user
        .at(b, &t.key, &["endpoints", "rotate", &id, "--json"])
        .await
        .ok()
        .json();
    assert_ne!(rotated["key"], old.as_str());
    assert!(rotated.get("public_key").is_none(), "{rotated}");

    // Ed25519 signing turned on, and its public key shown; the private key never is.
    let signed = user
        .at(
            b,
            &t.key,
            &["endpoints", "update", &id, "--signing", "both", "--json"],
        )
        .await
        .ok()
        .json();
    assert_eq!(signed["signing"], "both");
    let public = user
        .at(b, &t.key, &["endpoints", "public-key", &id, "--json"])
        .await
        .ok();
    assert!(!public.stdout.contains("whsk_"), "{}", public.stdout);
    let public = public.json();
    assert!(
        public["key"].as_str().unwrap().starts_with("whpk_"),
        "{public}"
    );
    assert_eq!(public["previous"], serde_json::json!([]));
    let now = user
        .at(b, &t.key, &["endpoints", "secret", &id, "--json"])
        .await
        .ok()
        .json();
    assert_eq!(now["key"], rotated["key"]);

    let test = user
        .at(
            b,
            &t.key,
            &[
                "endpoints",
                "test",
                &id,
                "--event-type",
                "delivered",
                "--json",
            ],
        )
        .await
        .ok()
        .json();
    assert_eq!(test["ok"], true, "{test}");
    assert_eq!(test["status"], 200);
    assert_eq!(receiver.count(), 1);

    // Refusals: a URL the policy refuses, nothing to change, an unknown id.
    let out = user
        .at(b, &t.key, &["endpoints", "create", "ftp://example.com/"])
        .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("invalid_url") && out.stderr.contains("HTTP 400"),
        "{}",
        out.stderr
    );
    assert_eq!(
        app.get("/v1/endpoints", &t.key).await.1["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let out = user.at(b, &t.key, &["endpoints", "update", &id]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = user
        .at(
            b,
            &t.key,
            &[
                "endpoints",
                "update",
                &id,
                "--all-events",
                "--event-type",
                "opened",
            ],
        )
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);

    user.at(b, &t.key, &["endpoints", "delete", &id]).await.ok();
    let (_, error) = api_message(&app, &format!("/v1/endpoints/{id}"), &t.key).await;
    for args in [
        &["endpoints", "get", &id][..],
        &["endpoints", "secret", &id][..],
        &["endpoints", "rotate", &id][..],
        &["endpoints", "test", &id][..],
        &["endpoints", "delete", &id][..],
    ] {
        let out = user.at(b, &t.key, args).await;
        assert_eq!(out.code, 1, "{args:?}");
        assert!(
            out.stderr.contains(error["message"].as_str().unwrap()),
            "{args:?}: {}",
            out.stderr
        );
    }
    let out = user
        .at(b, &t.key, &["endpoints", "create", &url, "--formt", "raw"])
        .await;
    assert_eq!(out.code, 2);
    app.stop().await;
}

#[tokio::test]
async fn event_types_are_listed_shown_and_added_by_the_operator() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let user = User::new();
    let b = app.base.as_str();

    let all = user
        .at(b, &t.key, &["event-types", "list", "--all", "--json"])
        .await
        .ok()
        .json();
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "delivered"));
    let table = user
        .at(b, &t.key, &["event-types", "list"])
        .await
        .ok()
        .stdout;
    assert!(
        table.contains("delivered") && table.contains("PROVIDER"),
        "{table}"
    );
    let one = user
        .at(b, &t.key, &["event-types", "get", "delivered", "--json"])
        .await
        .ok()
        .json();
    assert!(one["sample"].is_object());

    let args = [
        "event-types",
        "create",
        "invoice_paid",
        "--description",
        "An invoice was paid",
        "--sample",
        r#"{"invoice": "in_1"}"#,
        "--json",
    ];
    let created = user.at(b, OPERATOR_KEY, &args).await.ok().json();
    assert_eq!(created["name"], "invoice_paid");
    assert_eq!(created["sample"]["invoice"], "in_1");
    // A tenant may not add one; a name taken is refused; bad JSON is a usage error.
    let out = user.at(b, &t.key, &args).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let out = user.at(b, OPERATOR_KEY, &args).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("event_type_exists"), "{}", out.stderr);
    let out = user
        .at(
            b,
            OPERATOR_KEY,
            &[
                "event-types",
                "create",
                "x_y",
                "--description",
                "d",
                "--sample",
                "{nope",
            ],
        )
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = user
        .at(b, &t.key, &["event-types", "get", "no_such_type"])
        .await;
    assert_eq!(out.code, 1);
    let out = user.at(b, &t.key, &["event-types", "list", "--nope"]).await;
    assert_eq!(out.code, 2);
    app.stop().await;
}
