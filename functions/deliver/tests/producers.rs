//! Envelopes producers write straight to the queue get the checks of `POST /v1/events`
//! in the worker: an owner must be the producer's tenant or one of its sub-accounts,
//! custom event types are known once the operator adds them, and idempotency keys are the
//! publisher's. Run on the embedded store, with a loopback receiver.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use hookline_core::contract::{endpoint_to, stored_tenant};
use hookline_core::ids::{EndpointId, MessageId, TenantId};
use hookline_core::model::CustomEventType;
use hookline_core::ports::{SharedStore, Store};
use hookline_core::task::Origin;
use hookline_deliver::{Deliverer, Disposition};
use serde_json::value::RawValue;

/// A receiver on loopback that records the path of every request.
async fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/{who}",
        post(
            move |axum::extract::Path(who): axum::extract::Path<String>| {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push(who);
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

async fn tenant(store: &dyn Store, parent: Option<TenantId>) -> TenantId {
    stored_tenant(store, parent).await.0
}

async fn endpoint(store: &dyn Store, tenant: TenantId, url: String) -> EndpointId {
    let endpoint = endpoint_to(tenant, &url, None);
    store.create_endpoint(&endpoint, 1_000).await.unwrap();
    endpoint.id
}

struct Setup {
    store: SharedStore,
    deliverer: Deliverer,
}

fn setup() -> Setup {
    let (store, queue) = hookline_core::embedded::open_in_memory().unwrap();
    let store: SharedStore = store;
    let deliverer = common::loopback_deliverer(store.clone(), queue, "0s", Duration::from_secs(5));
    Setup { store, deliverer }
}

/// Hands one producer envelope to the worker as a fresh queue message.
async fn handle(deliverer: &Deliverer, body: &str) -> (MessageId, Disposition) {
    let origin = Origin {
        message_id: MessageId::new(),
        received_at: 1_000,
    };
    (origin.message_id, deliverer.handle(body, origin).await)
}

fn envelope(publisher: TenantId, owner: Option<&str>, event_type: &str, key: &str) -> String {
    let owner = owner.map_or(String::new(), |o| format!(r#""owner":"{o}","#));
    format!(
        r#"{{"tenant":"{publisher}",{owner}"type":"{event_type}","idempotency_key":"{key}","payload":{{"n":1}}}}"#
    )
}

#[tokio::test]
async fn an_owned_envelope_goes_to_the_sub_account_and_records_its_publisher() {
    let Setup { store, deliverer } = setup();
    let (base, seen) = receiver().await;
    let parent = tenant(store.as_ref(), None).await;
    let sub = tenant(store.as_ref(), Some(parent)).await;
    endpoint(store.as_ref(), parent, format!("{base}/parent")).await;
    let sub_endpoint = endpoint(store.as_ref(), sub, format!("{base}/sub")).await;

    let body = envelope(parent, Some(&sub.to_string()), "delivered", "k1");
    let (id, done) = handle(&deliverer, &body).await;
    assert_eq!(done, Disposition::Done);
    let message = store.get_message(sub, id).await.unwrap().expect("stored");
    assert_eq!(message.tenant, sub);
    assert_eq!(message.publisher, Some(parent));
    assert_eq!(message.targets, vec![sub_endpoint]);
    assert!(store.get_message(parent, id).await.unwrap().is_none());
    assert_eq!(*seen.lock().unwrap(), vec!["sub".to_string()]);

    // The key is the parent's: the sub-account's own "k1" is another event, while the
    // parent's second "k1" is a duplicate, whoever it names as owner.
    let (own_id, done) = handle(&deliverer, &envelope(sub, None, "delivered", "k1")).await;
    assert_eq!(done, Disposition::Done);
    let own = store
        .get_message(sub, own_id)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(own.publisher, None);
    let (again, done) = handle(&deliverer, &envelope(parent, None, "delivered", "k1")).await;
    assert_eq!(done, Disposition::Done);
    assert!(store.get_message(parent, again).await.unwrap().is_none());
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn owners_outside_the_family_are_dead_lettered() {
    let Setup { store, deliverer } = setup();
    let (base, seen) = receiver().await;
    let parent = tenant(store.as_ref(), None).await;
    let sub = tenant(store.as_ref(), Some(parent)).await;
    let unrelated = tenant(store.as_ref(), None).await;
    for (t, who) in [(parent, "parent"), (sub, "sub"), (unrelated, "unrelated")] {
        endpoint(store.as_ref(), t, format!("{base}/{who}")).await;
    }
    let cases = [
        (parent, unrelated.to_string()),
        (sub, parent.to_string()),
        (parent, TenantId::new().to_string()),
        (parent, "not-a-tenant".to_string()),
    ];
    for (publisher, owner) in cases {
        let body = envelope(publisher, Some(&owner), "delivered", "k");
        let (id, done) = handle(&deliverer, &body).await;
        assert_eq!(
            done,
            Disposition::DeadLetter("owner not found".into()),
            "{owner}"
        );
        for t in [parent, sub, unrelated] {
            assert!(store.get_message(t, id).await.unwrap().is_none());
        }
    }
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn custom_event_types_are_admitted_once_added() {
    let Setup { store, deliverer } = setup();
    let (base, seen) = receiver().await;
    let t = tenant(store.as_ref(), None).await;
    endpoint(store.as_ref(), t, format!("{base}/t")).await;

    let (_, refused) = handle(&deliverer, &envelope(t, None, "acme.shipped", "a")).await;
    assert!(
        matches!(&refused, Disposition::DeadLetter(r) if r.contains("unknown event type")),
        "{refused:?}"
    );
    store
        .create_event_type(&CustomEventType {
            name: "acme.shipped".into(),
            provider: "acme".into(),
            description: "a parcel left".into(),
            sample: RawValue::from_string("{}".into()).unwrap(),
            created_at: 0,
        })
        .await
        .unwrap();
    let (id, done) = handle(&deliverer, &envelope(t, None, "acme.shipped", "b")).await;
    assert_eq!(done, Disposition::Done);
    assert!(store.get_message(t, id).await.unwrap().is_some());
    assert_eq!(seen.lock().unwrap().len(), 1);
}
