//! The message log from the command line: list, get, attempts, and `tail` following
//! messages published after it started, with their deliveries as they settle.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{all_settled, spawn_app};
use crate::receiver::Receiver;
use crate::support::User;

#[tokio::test]
async fn messages_are_listed_shown_with_deliveries_and_attempts() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let receiver = Receiver::scripted(&[500], 200).await;
    let ep = app
        .create_endpoint(&t.key, json!({"url": receiver.url("/")}))
        .await;
    let first = app
        .publish(&t.key, json!({"type": "opened", "payload": {"n": 1}}))
        .await;
    // Settled before the next is published, so that it is the one meeting the 500.
    app.wait_message(&t.key, &first, Duration::from_secs(15), all_settled)
        .await;
    let id = app
        .publish(
            &t.key,
            json!({"type": "delivered", "domain": null, "payload": {"n": 2}}),
        )
        .await;
    app.wait_message(&t.key, &id, Duration::from_secs(15), all_settled)
        .await;
    app.wait_message(&t.key, &first, Duration::from_secs(15), all_settled)
        .await;
    let user = User::new();
    let b = app.base.as_str();

    let list = user
        .at(b, &t.key, &["messages", "list", "--json"])
        .await
        .ok()
        .json();
    let ids: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str(), first.as_str()]);
    let typed = user
        .at(
            b,
            &t.key,
            &["messages", "list", "--type", "opened", "--json"],
        )
        .await
        .ok()
        .json();
    assert_eq!(typed.as_array().unwrap().len(), 1);
    assert_eq!(typed[0]["id"], first.as_str());
    let table = user.at(b, &t.key, &["messages", "list"]).await.ok().stdout;
    assert!(
        table.contains(&id) && table.contains("delivered") && table.contains("RECEIVED"),
        "{table}"
    );

    let got = user
        .at(b, &t.key, &["messages", "get", &id, "--json"])
        .await
        .ok()
        .json();
    assert_eq!(got["deliveries"][0]["endpoint_id"], ep.as_str());
    assert_eq!(got["deliveries"][0]["status"], "succeeded");
    let shown = user
        .at(b, &t.key, &["messages", "get", &id])
        .await
        .ok()
        .stdout;
    assert!(
        shown.contains(&ep) && shown.contains("succeeded") && shown.contains("\"n\": 2"),
        "{shown}"
    );

    // The first message met the 500, then a 200 on its retry.
    let attempts = user
        .at(b, &t.key, &["messages", "attempts", &first, "--json"])
        .await
        .ok()
        .json();
    let outcomes: Vec<_> = attempts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].clone())
        .collect();
    assert_eq!(outcomes, [json!(500), json!(200)]);
    let page = user
        .at(
            b,
            &t.key,
            &["messages", "attempts", &first, "--limit", "1", "--json"],
        )
        .await
        .ok()
        .json();
    assert_eq!(page.as_array().unwrap().len(), 1);
    let table = user
        .at(b, &t.key, &["messages", "attempts", &first])
        .await
        .ok()
        .stdout;
    assert!(
        table.contains("OUTCOME") && table.contains("retrying") && table.contains("succeeded"),
        "{table}"
    );

    for args in [
        &["messages", "get", "msg_nope"][..],
        &["messages", "attempts", "msg_nope"][..],
    ] {
        let out = user.at(b, &t.key, args).await;
        assert_eq!(out.code, 1, "{args:?}");
        assert!(out.stderr.contains("not_found"), "{}", out.stderr);
    }
    let out = user.at(b, "hk_bad", &["messages", "list"]).await;
    assert_eq!(out.code, 1);
    let out = user.at(b, &t.key, &["messages", "get"]).await;
    assert_eq!(out.code, 2);
    app.stop().await;
}

#[tokio::test]
async fn tail_prints_messages_published_after_it_started_and_their_deliveries() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let receiver = Receiver::start(200).await;
    let ep = app
        .create_endpoint(&t.key, json!({"url": receiver.url("/")}))
        .await;
    let before = app
        .publish(&t.key, json!({"type": "opened", "payload": {}}))
        .await;
    let user = User::new();

    let mut tail = user.spawn(&[
        "messages",
        "tail",
        "--interval",
        "100ms",
        "--json",
        "--url",
        &app.base,
        "--key",
        &t.key,
    ]);
    let first: Value = serde_json::from_str(&tail.line().await).unwrap();
    assert_eq!(first["kind"], "following");
    let id = app
        .publish(
            &t.key,
            json!({"type": "delivered", "payload": {"after": true}}),
        )
        .await;
    let (line, skipped) = tail.until(|l| l.contains("\"message\"")).await;
    assert!(skipped.is_empty(), "{skipped:?}");
    let m: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(m["message"]["id"], id.as_str());
    assert_eq!(m["message"]["payload"]["after"], true);
    // Its delivery, as it settles.
    let (line, _) = tail.until(|l| l.contains("\"succeeded\"")).await;
    let d: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(d["message_id"], id.as_str());
    assert_eq!(d["delivery"]["endpoint_id"], ep.as_str());
    tail.stop().await;
    assert_ne!(before, id);

    // For people: one line a message.
    let mut tail = user.spawn(&[
        "messages",
        "tail",
        "--interval",
        "100ms",
        "--url",
        &app.base,
        "--key",
        &t.key,
    ]);
    assert!(tail.line().await.contains("Following"));
    let id = app
        .publish(&t.key, json!({"type": "clicked", "payload": {}}))
        .await;
    let (line, _) = tail.until(|l| l.contains(&id)).await;
    assert!(line.contains("clicked"), "{line}");
    tail.stop().await;

    let out = user.at(&app.base, "hk_bad", &["messages", "tail"]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    app.stop().await;
}
