//! The deliver function's handler fed a real SQS event, against DynamoDB and SQS on moto
//! and local receivers: a partial-failure batch reports only the record SQS must
//! redeliver, a malformed record goes to the dead-letter queue without holding up the
//! others, a duplicate receipt of the batch does not re-send what already succeeded, and
//! a copy of an event whose first attempts another invocation holds waits for its lease.

use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use axum::routing::post;
use hookline_core::aws::testing::{moto_sdk_config, unique};
use hookline_core::aws::{create_queue_pair, create_table, DynamoStore, SqsQueue};
use hookline_core::contract::{endpoint_to, stored_tenant};
use hookline_core::ids::EndpointId;
use hookline_core::model::{Delivery, Message};
use hookline_core::ports::{FirstAttempts, SharedStore};
use hookline_core::task::Task;
use hookline_deliver::sqs;

/// A receiver on loopback that counts the webhook ids it gets.
async fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/",
        post(move |headers: axum::http::HeaderMap| {
            let log = log.clone();
            async move {
                let id = headers["webhook-id"].to_str().unwrap().to_string();
                log.lock().unwrap().push(id);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// The message the deliverer would store for a record, as another invocation stored it.
fn message_of(record: &SqsMessage, targets: Vec<EndpointId>) -> Message {
    let Task::Event(task) =
        Task::parse(record.body.as_deref().unwrap(), sqs::origin_of(record)).unwrap()
    else {
        panic!("an event record");
    };
    Message {
        id: task.id,
        tenant: task.tenant,
        publisher: None,
        domain: task.domain,
        event_type: task.event_type,
        payload: task.payload,
        idempotency_key: task.idempotency_key,
        received_at: task.received_at,
        targets,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn a_batch_reports_only_what_sqs_must_redeliver() {
    let sdk = moto_sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs_client = aws_sdk_sqs::Client::new(&sdk);
    let table = unique("hookline-deliver");
    create_table(&ddb, &table).await.unwrap();
    let (queue_url, dlq_url) = create_queue_pair(&sqs_client, &unique("hookline-deliver"))
        .await
        .unwrap();
    let store: SharedStore = Arc::new(DynamoStore::new(ddb, table));
    let queue = Arc::new(SqsQueue::new(sqs_client.clone(), queue_url));
    let dead_letters = SqsQueue::new(sqs_client.clone(), dlq_url.clone());

    let (tenant, _) = stored_tenant(store.as_ref(), None).await;
    let (all_url, all_seen) = receiver().await;
    let (opened_url, opened_seen) = receiver().await;
    let everything = endpoint_to(tenant, &all_url, None);
    let opened_only = endpoint_to(tenant, &opened_url, Some(&["opened"]));
    store.create_endpoint(&everything, 1_000).await.unwrap();
    store.create_endpoint(&opened_only, 1_000).await.unwrap();

    let deliverer =
        common::loopback_deliverer(store.clone(), queue, "0s,1s", Duration::from_secs(5));

    let path = format!(
        "{}/../../tests/fixtures/sqs-batch.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace("{{TENANT}}", &tenant.to_string());
    let batch: SqsEvent = serde_json::from_str(&text).unwrap();
    let ids: Vec<_> = batch
        .records
        .iter()
        .map(|r| sqs::origin_of(r).message_id)
        .collect();

    // Another worker stored the second record's message (its lease on the first attempts
    // over) and holds its "opened" delivery right now.
    store
        .insert_message(&message_of(
            &batch.records[1],
            vec![everything.id, opened_only.id],
        ))
        .await
        .unwrap();
    let lease_until = now_ms() + 1_500;
    let held = Delivery::fresh(ids[1], opened_only.id, tenant, now_ms());
    assert!(store
        .claim_delivery(&held, 0, now_ms(), lease_until)
        .await
        .unwrap());

    let response = sqs::handle_batch(&deliverer, &dead_letters, batch.clone()).await;
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(failed, vec![batch.records[1].message_id.clone().unwrap()]);
    let mut got = all_seen.lock().unwrap().clone();
    got.sort();
    let mut expected: Vec<String> = [ids[0], ids[1], ids[3]]
        .iter()
        .map(|id| id.to_string())
        .collect();
    expected.sort();
    assert_eq!(got, expected, "the healthy records were delivered");
    assert!(opened_seen.lock().unwrap().is_empty());

    let parked = sqs_client
        .receive_message()
        .queue_url(&dlq_url)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].body.as_deref(), Some("{not json"));

    // SQS hands the whole batch over again once the lease has run out.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let response = sqs::handle_batch(&deliverer, &dead_letters, batch).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(all_seen.lock().unwrap().len(), 3, "nothing was sent twice");
    assert_eq!(*opened_seen.lock().unwrap(), vec![ids[1].to_string()]);

    let message = store.get_message(tenant, ids[0]).await.unwrap().unwrap();
    assert_eq!(message.targets, vec![everything.id]);
    let attempts = store.list_attempts(tenant, ids[0]).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status_code, Some(200));
}

#[tokio::test]
async fn a_copy_of_an_event_waits_for_the_lease_on_its_first_attempts() {
    let sdk = moto_sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs_client = aws_sdk_sqs::Client::new(&sdk);
    let table = unique("hookline-deliver");
    create_table(&ddb, &table).await.unwrap();
    let (queue_url, dlq_url) = create_queue_pair(&sqs_client, &unique("hookline-deliver"))
        .await
        .unwrap();
    let store: SharedStore = Arc::new(DynamoStore::new(ddb, table));
    let queue = Arc::new(SqsQueue::new(sqs_client.clone(), queue_url));
    let dead_letters = SqsQueue::new(sqs_client.clone(), dlq_url);
    let (tenant, _) = stored_tenant(store.as_ref(), None).await;
    let (url, seen) = receiver().await;
    let endpoint = endpoint_to(tenant, &url, None);
    store.create_endpoint(&endpoint, 1_000).await.unwrap();
    let deliverer =
        common::loopback_deliverer(store.clone(), queue, "0s,1s", Duration::from_secs(5));

    let path = format!(
        "{}/../../tests/fixtures/sqs-batch.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace("{{TENANT}}", &tenant.to_string());
    let mut batch: SqsEvent = serde_json::from_str(&text).unwrap();
    batch.records.truncate(1);
    let id = sqs::origin_of(&batch.records[0]).message_id;

    // Another invocation got the same record first: it stored the message with a lease
    // on the first attempts and is making them.
    let lease_until = now_ms() + 1_500;
    let stored = store
        .insert_message_leased(
            &message_of(&batch.records[0], vec![endpoint.id]),
            now_ms(),
            lease_until,
        )
        .await
        .unwrap();
    assert_eq!(stored.first_attempts, FirstAttempts::Leased);

    let response = sqs::handle_batch(&deliverer, &dead_letters, batch.clone()).await;
    assert_eq!(
        response.batch_item_failures.len(),
        1,
        "the copy is handed back"
    );
    assert!(seen.lock().unwrap().is_empty(), "nothing is sent meanwhile");

    // That invocation died: once its lease ends, the copy claims the delivery and sends.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let response = sqs::handle_batch(&deliverer, &dead_letters, batch.clone()).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(*seen.lock().unwrap(), vec![id.to_string()]);
    let response = sqs::handle_batch(&deliverer, &dead_letters, batch).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(seen.lock().unwrap().len(), 1, "nothing is sent twice");
    let attempts = store.list_attempts(tenant, id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status_code, Some(200));
}
