//! The `/v1` resources: tenants and keys, domains, endpoints and secrets, the catalog and
//! the message log.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{spawn_app, OPERATOR_KEY};

#[tokio::test]
async fn operator_creates_tenants_whose_keys_are_shown_once_and_revocable() {
    let app = spawn_app().await;
    let t = app.create_tenant("Acme Mail").await;
    assert!(t.key.starts_with("hk_"));

    let (status, body) = app.get(&format!("/v1/tenants/{}", t.id), &t.key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["name"], "Acme Mail");
    assert!(body.get("api_key").is_none());

    let (status, second) = app
        .post(&format!("/v1/tenants/{}/api-keys", t.id), &t.key, json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let second_key = second["api_key"].as_str().unwrap().to_string();
    let second_id = second["id"].as_str().unwrap().to_string();

    let (status, list) = app
        .get(&format!("/v1/tenants/{}/api-keys", t.id), &second_key)
        .await;
    assert_eq!(status, StatusCode::OK);
    let keys = list["data"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let listing = list.to_string();
    assert!(!listing.contains(&t.key) && !listing.contains(&second_key));
    assert!(keys
        .iter()
        .all(|k| k["prefix"].as_str().unwrap().len() == 8));

    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/tenants/{}/api-keys/{second_id}", t.id),
            Some(&t.key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.get("/v1/domains", &second_key).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = app.get("/v1/domains", &t.key).await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn only_the_operator_creates_tenants() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let (status, body) = app.post("/v1/tenants", &t.key, json!({"name": "b"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/tenants",
            None,
            Some(json!({"name": "b"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .post("/v1/tenants", "hkop_wrong", json!({"name": "b"}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The operator key works on tenant-less routes only.
    let (status, body) = app.get("/v1/endpoints", OPERATOR_KEY).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn domains_are_created_listed_and_deleted_with_their_endpoints() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let (status, body) = app
        .post("/v1/domains", &t.key, json!({"name": "MG.Example.com"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["name"], "mg.example.com");
    let (status, body) = app
        .post("/v1/domains", &t.key, json!({"name": "mg.example.com"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "domain_exists");

    let scoped = app
        .create_endpoint(
            &t.key,
            json!({"url": "https://hooks.example.com/a", "domain": "mg.example.com"}),
        )
        .await;
    let org_wide = app
        .create_endpoint(&t.key, json!({"url": "https://hooks.example.com/b"}))
        .await;

    let (_, list) = app.get("/v1/domains", &t.key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (status, _) = app
        .call(
            Method::DELETE,
            "/v1/domains/mg.example.com",
            Some(&t.key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get(&format!("/v1/endpoints/{scoped}"), &t.key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get(&format!("/v1/endpoints/{org_wide}"), &t.key).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .call(
            Method::DELETE,
            "/v1/domains/mg.example.com",
            Some(&t.key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn endpoints_crud_and_secret_rotation() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let (status, ep) = app
        .post(
            "/v1/endpoints",
            &t.key,
            json!({
                "url": "https://hooks.example.com/mail",
                "event_types": ["delivered", "opened", "delivered"],
                "description": "main",
                "format": "raw"
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ep}");
    let id = ep["id"].as_str().unwrap();
    assert!(id.starts_with("ep_"));
    assert_eq!(ep["event_types"], json!(["delivered", "opened"]));
    assert_eq!(ep["domain"], json!(null));
    assert_eq!(ep["status"], "active");
    assert!(ep.get("secret").is_none() && !ep.to_string().contains("whsec_"));

    let (_, list) = app.get("/v1/endpoints", &t.key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains("whsec_"));

    let (status, patched) = app
        .call(
            Method::PATCH,
            &format!("/v1/endpoints/{id}"),
            Some(&t.key),
            Some(json!({"event_types": null, "description": "all events"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["event_types"], json!(null));
    assert_eq!(patched["description"], "all events");
    assert_eq!(patched["url"], "https://hooks.example.com/mail");

    let (status, patched) = app
        .call(
            Method::PATCH,
            &format!("/v1/endpoints/{id}"),
            Some(&t.key),
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["status"], "disabled");
    assert!(patched["disabled_reason"].is_string());

    let (status, secret) = app.get(&format!("/v1/endpoints/{id}/secret"), &t.key).await;
    assert_eq!(status, StatusCode::OK);
    let first = secret["key"].as_str().unwrap().to_string();
    assert!(first.starts_with("whsec_"));
    let (status, rotated) = app
        .post(
            &format!("/v1/endpoints/{id}/secret/rotate"),
            &t.key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let second = rotated["key"].as_str().unwrap();
    assert_ne!(first, second);
    let (_, secret) = app.get(&format!("/v1/endpoints/{id}/secret"), &t.key).await;
    assert_eq!(secret["key"], second);

    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/endpoints/{id}"),
            Some(&t.key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.get(&format!("/v1/endpoints/{id}"), &t.key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    app.stop().await;
}

#[tokio::test]
async fn event_types_include_the_mailgun_events_with_samples() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let (status, body) = app.get("/v1/event-types", &t.key).await;
    assert_eq!(status, StatusCode::OK);
    let types = body["data"].as_array().unwrap();
    for name in [
        "accepted",
        "delivered",
        "opened",
        "clicked",
        "unsubscribed",
        "complained",
        "permanent_fail",
        "temporary_fail",
    ] {
        let t = types
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(t["provider"], "mailgun");
        assert!(t["sample"].is_object());
    }
    app.stop().await;
}

#[tokio::test]
async fn messages_are_listed_newest_first_with_cursor_and_type_filter() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let ty = if i % 2 == 0 { "delivered" } else { "opened" };
        ids.push(
            app.publish(&t.key, json!({"type": ty, "payload": {"n": i}}))
                .await,
        );
    }
    for id in &ids {
        app.wait_message(&t.key, id, std::time::Duration::from_secs(10), |_| true)
            .await;
    }
    let (status, page1) = app.get("/v1/messages?limit=2", &t.key).await;
    assert_eq!(status, StatusCode::OK, "{page1}");
    let got: Vec<_> = page1["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, vec![ids[4].clone(), ids[3].clone()]);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = app
        .get(&format!("/v1/messages?limit=2&cursor={cursor}"), &t.key)
        .await;
    let got: Vec<_> = page2["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, vec![ids[2].clone(), ids[1].clone()]);

    let (_, opened) = app.get("/v1/messages?type=opened", &t.key).await;
    let opened = opened["data"].as_array().unwrap();
    assert_eq!(opened.len(), 2);
    assert!(opened.iter().all(|m| m["type"] == "opened"));
    assert_eq!(opened[0]["payload"], json!({"n": 3}));

    let (status, body) = app.get("/v1/messages?limit=0", &t.key).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_query");
    let (status, body) = app.get("/v1/messages?cursor=garbage", &t.key).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_cursor");
    app.stop().await;
}
