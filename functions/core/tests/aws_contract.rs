//! The DynamoDB store and SQS queue against moto: the contract suite every adapter passes,
//! plus what only these adapters do (TTL on idempotency items, capped SQS delays, dead
//! letters with their reason, sends cut to SQS's batch limits and the messages SQS did not
//! take told apart). Each test makes its own table or queues.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, TimeToLiveStatus};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use hookline_core::aws::dynamo::{
    idempotency_key, message_key, LAYOUT_PK, LAYOUT_SK, MESSAGE_SHARDS, PK, SK, TTL_ATTRIBUTE,
};
use hookline_core::aws::sqs::{fifo_id, Attribute, Attributed, MAX_BATCH_BYTES, REASON_ATTRIBUTE};
use hookline_core::aws::testing::{moto_sdk_config as sdk_config, unique};
use hookline_core::aws::{create_queue_pair, create_table, DynamoStore, SqsDeadLetters, SqsQueue};
use hookline_core::contract::{self, QueueTraits};
use hookline_core::ids::{AttemptId, EndpointId, MessageId, TenantId};
use hookline_core::model::{
    Attempt, AttemptOutcome, BodyFormat, Delivery, DeliveryStatus, Domain, Endpoint,
    EndpointStatus, FailedQuery, Message, MessageQuery, Millis,
};
use hookline_core::ports::{
    DeadLetters, DeliveryStore, EndpointStore, MessageStore, Outgoing, PullQueue, Queue, Refusal,
    Store, Written,
};
use hookline_core::signing::{EndpointSecrets, Secret};
use serde_json::value::RawValue;
use ulid::Ulid;

async fn store() -> (aws_sdk_dynamodb::Client, DynamoStore) {
    let client = aws_sdk_dynamodb::Client::new(&sdk_config().await);
    let table = unique("hookline-test");
    create_table(&client, &table).await.expect("create table");
    (client.clone(), DynamoStore::new(client, table))
}

async fn queue() -> (aws_sdk_sqs::Client, SqsQueue, String) {
    let client = aws_sdk_sqs::Client::new(&sdk_config().await);
    let (url, dead_letter_url) = create_queue_pair(&client, &unique("hookline-test"))
        .await
        .expect("create queues");
    let queue = SqsQueue::new(client.clone(), url).with_dead_letter_url(dead_letter_url.clone());
    (client, queue, dead_letter_url)
}

async fn drop_table(client: &aws_sdk_dynamodb::Client, store: &DynamoStore) {
    client
        .delete_table()
        .table_name(store.table())
        .send()
        .await
        .expect("delete table");
}

async fn drop_queues(client: &aws_sdk_sqs::Client, queue: &SqsQueue, dead_letter_url: &str) {
    for url in [queue.queue_url(), dead_letter_url] {
        client
            .delete_queue()
            .queue_url(url)
            .send()
            .await
            .expect("delete queue");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamo_store_meets_the_contract() {
    let (client, store) = store().await;
    contract::store_contract(
        Arc::new(store.clone()) as Arc<dyn Store>,
        contract::StoreTraits::MOTO,
    )
    .await;
    // The checks use fresh ids, so a second run on the same table must pass too.
    contract::store_contract(
        Arc::new(store.clone()) as Arc<dyn Store>,
        contract::StoreTraits::MOTO,
    )
    .await;
    drop_table(&client, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_queue_meets_the_contract() {
    let (client, queue, dead_letter_url) = queue().await;
    contract::queue_contract(
        Arc::new(queue.clone()) as Arc<dyn PullQueue>,
        QueueTraits::SQS,
    )
    .await;

    let count = |url: String, attribute: QueueAttributeName| {
        let client = client.clone();
        async move {
            client
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(attribute.clone())
                .send()
                .await
                .expect("queue attributes")
                .attributes
                .and_then(|a| a.get(&attribute).cloned())
                .and_then(|n| n.parse::<u32>().ok())
                .expect("a count")
        }
    };
    let url = queue.queue_url().to_owned();
    assert_eq!(
        count(url.clone(), QueueAttributeName::ApproximateNumberOfMessages).await
            + count(
                url,
                QueueAttributeName::ApproximateNumberOfMessagesNotVisible
            )
            .await,
        0,
        "the contract leaves the queue empty"
    );
    assert_eq!(
        count(
            dead_letter_url.clone(),
            QueueAttributeName::ApproximateNumberOfMessages
        )
        .await,
        1,
        "the contract dead-letters one message"
    );

    let dead_letters = SqsDeadLetters::new(
        client.clone(),
        dead_letter_url.clone(),
        queue.queue_url().to_owned(),
    );
    contract::dead_letter_contract(
        Arc::new(queue.clone()) as Arc<dyn PullQueue>,
        Arc::new(dead_letters) as Arc<dyn DeadLetters>,
    )
    .await;
    drop_queues(&client, &queue, &dead_letter_url).await;
}

#[tokio::test]
async fn idempotency_items_carry_the_ttl_attribute_in_seconds() {
    let (client, store) = store().await;
    let ttl = client
        .describe_time_to_live()
        .table_name(store.table())
        .send()
        .await
        .expect("describe TTL")
        .time_to_live_description
        .expect("a TTL description");
    assert_eq!(ttl.time_to_live_status, Some(TimeToLiveStatus::Enabled));
    assert_eq!(ttl.attribute_name.as_deref(), Some(TTL_ATTRIBUTE));

    let tenant = TenantId::new();
    let now = 1_700_000_000_500;
    let claimed = store
        .claim_idempotency_key(
            tenant,
            "order-1",
            MessageId::new(),
            now,
            Duration::from_secs(3600),
        )
        .await
        .expect("claim");
    assert_eq!(claimed, None);

    let (pk, sk) = idempotency_key(tenant, "order-1");
    let item = client
        .get_item()
        .table_name(store.table())
        .key(PK, AttributeValue::S(pk))
        .key(SK, AttributeValue::S(sk))
        .consistent_read(true)
        .send()
        .await
        .expect("get item")
        .item
        .expect("the idempotency item is stored under the documented key");
    assert_eq!(
        item.get(TTL_ATTRIBUTE),
        Some(&AttributeValue::N("1700003601".into())),
        "{TTL_ATTRIBUTE} is the expiry in epoch seconds, rounded up"
    );
    drop_table(&client, &store).await;
}

#[tokio::test]
async fn with_a_retention_messages_carry_the_ttl_attribute() {
    let (client, plain) = store().await;
    let store = plain
        .clone()
        .with_retention(Duration::from_secs(30 * 86_400));
    let received_at = 1_700_000_000_000;
    let message = |tenant| Message {
        id: MessageId::new(),
        tenant,
        publisher: None,
        domain: None,
        event_type: "delivered".into(),
        payload: RawValue::from_string("{}".into()).unwrap(),
        idempotency_key: None,
        received_at,
        targets: Vec::new(),
    };
    let kept = message(TenantId::new());
    store.insert_message(&kept).await.expect("insert");
    let forever = message(TenantId::new());
    plain.insert_message(&forever).await.expect("insert");
    let ttl_of = |m: &Message| {
        let client = client.clone();
        let table = store.table().to_string();
        let (tenant, id) = (m.tenant, m.id);
        let (pk, sk) = message_key(tenant, id);
        async move {
            client
                .get_item()
                .table_name(table)
                .key(PK, AttributeValue::S(pk))
                .key(SK, AttributeValue::S(sk))
                .send()
                .await
                .expect("get item")
                .item
                .expect("the message item")
                .get(TTL_ATTRIBUTE)
                .cloned()
        }
    };
    assert_eq!(
        ttl_of(&kept).await,
        Some(AttributeValue::N((1_700_000_000 + 30 * 86_400).to_string()))
    );
    assert_eq!(ttl_of(&forever).await, None);

    // A page and its first answers expire with its messages.
    let tenant = TenantId::new();
    let page: Vec<Message> = MessageId::page(2)
        .into_iter()
        .map(|id| Message {
            id,
            targets: vec![EndpointId::new()],
            ..message(tenant)
        })
        .collect();
    store
        .insert_page_leased(&page, received_at, received_at + 30_000)
        .await
        .expect("insert page");
    let settled = Delivery {
        status: DeliveryStatus::Succeeded,
        attempts: 1,
        last_status_code: Some(200),
        ..Delivery::fresh(page[1].id, page[1].targets[0], tenant, received_at + 9)
    };
    let answer = Attempt {
        id: AttemptId::new(),
        message: page[1].id,
        endpoint: page[1].targets[0],
        tenant,
        number: 1,
        at: received_at + 5,
        status_code: Some(200),
        latency_ms: 4,
        response: "ok".into(),
        error: None,
        outcome: AttemptOutcome::Succeeded,
    };
    store
        .record_page_firsts(&[(settled, answer)])
        .await
        .expect("record first answers");
    let items = client
        .scan()
        .table_name(store.table())
        .filter_expression("attribute_exists(#page) OR begins_with(#pk, :firsts)")
        .expression_attribute_names("#page", "page")
        .expression_attribute_names("#pk", PK)
        .expression_attribute_values(":firsts", AttributeValue::S("P#".into()))
        .send()
        .await
        .expect("scan")
        .items
        .unwrap_or_default();
    assert_eq!(items.len(), 2, "the page and its first answers");
    for item in items {
        // The page from its messages' receipt, its answers from the first attempt (as
        // attempts expire), a whole second up.
        let since = if item.contains_key("page") {
            1_700_000_000
        } else {
            1_700_000_001
        };
        assert_eq!(
            item.get(TTL_ATTRIBUTE),
            Some(&AttributeValue::N((since + 30 * 86_400).to_string())),
            "{:?}",
            item.get(PK)
        );
    }
    drop_table(&client, &plain).await;
}

/// The stored item of a message, found without knowing how its keys are made.
async fn stored_message_item(
    client: &aws_sdk_dynamodb::Client,
    store: &DynamoStore,
    id: MessageId,
) -> std::collections::HashMap<String, AttributeValue> {
    client
        .scan()
        .table_name(store.table())
        .filter_expression("#id = :id")
        .expression_attribute_names("#id", "id")
        .expression_attribute_values(":id", AttributeValue::S(id.to_string()))
        .send()
        .await
        .expect("scan")
        .items
        .unwrap_or_default()
        .into_iter()
        .find(|item| item.contains_key("received_at"))
        .expect("the message item")
}

#[tokio::test]
async fn large_payloads_are_stored_compressed_and_read_back_verbatim() {
    let (client, store) = store().await;
    let tenant = TenantId::new();
    // Odd spacing, escapes and non-ASCII: what is read back must be these bytes.
    let text = format!(
        r#"{{"event":"delivered",  "recipient": "ann\u00e9@example.com", "é": 1.50, "log": [{}]}}"#,
        (0..60)
            .map(|i| format!(r#"{{"at": {i}, "line": "250 2.0.0 OK queued as {i:08X}"}}"#))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let message = Message {
        id: MessageId::new(),
        tenant,
        publisher: None,
        domain: None,
        event_type: "delivered".into(),
        payload: RawValue::from_string(text.clone()).unwrap(),
        idempotency_key: None,
        received_at: 1_700_000_000_000,
        targets: vec![EndpointId::new()],
    };
    store.insert_message(&message).await.expect("insert");
    let item = stored_message_item(&client, &store, message.id).await;
    assert!(!item.contains_key("payload"), "stored as text too");
    let packed = item["payload_zd1"].as_b().expect("compressed bytes");
    assert!(
        packed.as_ref().len() < text.len() / 2,
        "{} of {} bytes",
        packed.as_ref().len(),
        text.len()
    );
    let got = store
        .get_message(tenant, message.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.payload.get(), text);
    let listed = store
        .list_messages(tenant, &MessageQuery::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].payload.get(), text);

    // An item written before payloads were compressed carries the text.
    let mut old = item;
    old.remove("payload_zd1");
    old.insert("payload".into(), AttributeValue::S(text.clone()));
    client
        .put_item()
        .table_name(store.table())
        .set_item(Some(old))
        .send()
        .await
        .expect("put the old item");
    let got = store
        .get_message(tenant, message.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.payload.get(), text);
    drop_table(&client, &store).await;
}

#[tokio::test]
async fn deleting_a_domain_deletes_endpoints_beyond_one_transaction() {
    let (client, store) = store().await;
    let tenant = TenantId::new();
    let (shop, blog) = ("shop.example.com", "blog.example.com");
    for name in [shop, blog] {
        store
            .create_domain(&Domain {
                tenant,
                name: name.into(),
                created_at: 1,
            })
            .await
            .expect("create domain");
    }
    let endpoint = |domain: Option<&str>, created_at: Millis| Endpoint {
        id: EndpointId::new(),
        tenant,
        url: "https://hooks.example.com/in".into(),
        description: String::new(),
        event_types: Some(Vec::new()),
        domain: domain.map(str::to_owned),
        format: BodyFormat::Raw,
        secrets: EndpointSecrets::new(Secret::generate()),
        status: EndpointStatus::Active,
        disabled_reason: None,
        disabled_at: None,
        failing_since: None,
        rate_limit: None,
        filter: None,
        created_at,
        updated_at: created_at,
        version: 1,
        headers: Default::default(),
        auth: None,
        ordering: Default::default(),
    };
    // More than fit in one transaction, so the deletion is split.
    for i in 0..150 {
        store
            .create_endpoint(&endpoint(Some(shop), i), 1_000)
            .await
            .expect("create endpoint");
    }
    let kept = vec![endpoint(Some(blog), 200), endpoint(None, 201)];
    for e in &kept {
        store
            .create_endpoint(e, 1_000)
            .await
            .expect("create endpoint");
    }

    assert_eq!(
        store
            .delete_domain(tenant, shop, Some(1))
            .await
            .expect("delete"),
        Written::Done
    );
    assert_eq!(
        store.list_endpoints(tenant).await.expect("list endpoints"),
        kept,
        "every endpoint of the domain is gone, the others stay (empty strings and lists too)"
    );
    assert_eq!(
        store
            .delete_domain(tenant, shop, None)
            .await
            .expect("delete"),
        Written::Missing
    );
    // Every transaction of the split delete took its endpoints off the tenant's count:
    // with a limit of 3, the 2 left leave room for exactly one more.
    store
        .create_endpoint(&endpoint(None, 300), 3)
        .await
        .expect("room for a third");
    assert!(store
        .create_endpoint(&endpoint(None, 301), 3)
        .await
        .is_err());
    drop_table(&client, &store).await;
}

#[tokio::test]
async fn filtered_listings_follow_many_index_pages() {
    let (client, store) = store().await;
    let tenant = TenantId::new();
    let mut wanted = Vec::new();
    for i in 0..120u64 {
        let id = MessageId::from_ulid(Ulid::from_parts(1_700_000_000_000 + i, 0));
        // One message in ten of the type asked for, so pages read mostly other types.
        let event_type = if i % 10 == 0 { "rare" } else { "common" };
        store
            .insert_message(&Message {
                id,
                tenant,
                publisher: None,
                domain: None,
                event_type: event_type.into(),
                payload: RawValue::from_string("{}".into()).expect("JSON"),
                idempotency_key: None,
                received_at: i as Millis,
                targets: Vec::new(),
            })
            .await
            .expect("insert message");
        if event_type == "rare" {
            wanted.push(id);
        }
    }
    wanted.reverse();

    let mut listed = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_messages(
                tenant,
                &MessageQuery {
                    before,
                    limit: 5,
                    event_type: Some("rare".into()),
                },
            )
            .await
            .expect("list messages");
        listed.extend(page.items.iter().map(|m| m.id));
        match page.next_cursor {
            Some(cursor) => before = Some(MessageId::parse(&cursor).expect("a message id")),
            None => break,
        }
    }
    assert_eq!(listed, wanted, "every message of the type, newest first");
    drop_table(&client, &store).await;
}

#[tokio::test]
async fn sqs_delays_beyond_15_minutes_are_capped() {
    let (client, queue, dead_letter_url) = queue().await;
    assert_eq!(queue.max_delay(), Duration::from_secs(900));
    queue
        .send(vec![Outgoing {
            body: "later".into(),
            delay: Duration::from_secs(20 * 60),
        }])
        .await
        .expect("a delay over the SQS maximum is capped, not refused");
    let delayed = client
        .get_queue_attributes()
        .queue_url(queue.queue_url())
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .and_then(|a| {
            a.get(&QueueAttributeName::ApproximateNumberOfMessagesDelayed)
                .cloned()
        });
    assert_eq!(
        delayed.as_deref(),
        Some("1"),
        "the message waits out its delay"
    );
    assert!(
        queue
            .receive(10, Duration::from_secs(30))
            .await
            .expect("receive")
            .is_empty(),
        "a delayed message is not received"
    );
    drop_queues(&client, &queue, &dead_letter_url).await;
}

#[tokio::test]
async fn dead_letters_carry_the_body_and_the_reason() {
    let (client, queue, dead_letter_url) = queue().await;
    let body = format!(r#"{{"task":"{}"}}"#, Ulid::new());
    queue
        .send(vec![Outgoing {
            body: body.clone(),
            delay: Duration::ZERO,
        }])
        .await
        .expect("send");
    let received = queue
        .receive(10, Duration::from_secs(30))
        .await
        .expect("receive");
    assert_eq!(received.len(), 1, "got {received:?}");
    queue
        .dead_letter(&received[0].receipt, "endpoint answered 410")
        .await
        .expect("dead-letter");

    let dead = client
        .receive_message()
        .queue_url(&dead_letter_url)
        .message_attribute_names("All")
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive dead letters")
        .messages
        .unwrap_or_default();
    assert_eq!(dead.len(), 1, "one dead letter, got {dead:?}");
    assert_eq!(dead[0].body.as_deref(), Some(body.as_str()));
    let reason = dead[0]
        .message_attributes
        .as_ref()
        .and_then(|a| a.get(REASON_ATTRIBUTE))
        .and_then(|v| v.string_value.as_deref());
    assert_eq!(reason, Some("endpoint answered 410"));
    assert!(
        queue
            .receive(10, Duration::from_secs(30))
            .await
            .expect("receive")
            .is_empty(),
        "a dead-lettered message leaves the queue"
    );

    let unknown = queue.dead_letter("not-a-receipt", "whatever").await;
    assert!(
        unknown.is_err(),
        "dead-lettering needs a receipt this handle received"
    );
    drop_queues(&client, &queue, &dead_letter_url).await;
}

/// A table written before endpoints were counted has endpoints and no count: the first
/// create or delete that needs the count makes it from the endpoints stored, so the limit
/// holds for them too.
#[tokio::test]
async fn a_tenant_without_an_endpoint_count_gets_one_from_its_endpoints() {
    let (client, store) = store().await;
    let tenant = TenantId::new();
    let endpoint = |i: usize| {
        hookline_core::contract::endpoint_to(
            tenant,
            &format!("https://hooks.example.com/{i}"),
            None,
        )
    };
    let forget_count = || async {
        client
            .delete_item()
            .table_name(store.table())
            .key("pk", AttributeValue::S(format!("T#{tenant}")))
            .key("sk", AttributeValue::S("ENDPOINTS".into()))
            .send()
            .await
            .expect("delete the count");
    };
    let first: Vec<_> = (0..3).map(endpoint).collect();
    for e in &first {
        store.create_endpoint(e, 100).await.expect("create");
    }
    forget_count().await;
    store
        .create_endpoint(&endpoint(3), 4)
        .await
        .expect("the count is made from the three stored: room for a fourth");
    assert!(
        store.create_endpoint(&endpoint(4), 4).await.is_err(),
        "and no fifth"
    );

    forget_count().await;
    assert_eq!(
        store
            .delete_endpoint(tenant, first[0].id, None)
            .await
            .expect("delete"),
        Written::Done
    );
    store
        .create_endpoint(&endpoint(5), 4)
        .await
        .expect("a delete without a count makes it too, then takes one off");
    assert!(store.create_endpoint(&endpoint(6), 4).await.is_err());
    drop_table(&client, &store).await;
}

/// Every body on the queue now, deleting them.
async fn drain_bodies(client: &aws_sdk_sqs::Client, url: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    loop {
        let got = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive")
            .messages
            .unwrap_or_default();
        if got.is_empty() {
            return bodies;
        }
        for m in got {
            bodies.push(m.body.unwrap_or_default());
            client
                .delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle.unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
    }
}

fn body_of(tag: usize, len: usize) -> String {
    let mut body = format!("{tag:02}:");
    body.push_str(&"x".repeat(len - body.len()));
    body
}

#[tokio::test]
async fn sqs_sends_ten_200_kib_messages_in_batches_under_1_mib() {
    let (client, queue, dead_letter_url) = queue().await;
    let bodies: Vec<String> = (0..10).map(|i| body_of(i, 200 * 1024)).collect();
    queue
        .send(
            bodies
                .iter()
                .map(|b| Outgoing {
                    body: b.clone(),
                    delay: Duration::ZERO,
                })
                .collect(),
        )
        .await
        .expect("2 MB in all is sent as two batches of five");
    let mut got = drain_bodies(&client, queue.queue_url()).await;
    got.sort();
    assert_eq!(got, bodies);
    drop_queues(&client, &queue, &dead_letter_url).await;
}

#[tokio::test]
async fn sqs_tells_which_messages_it_did_not_take() {
    let client = aws_sdk_sqs::Client::new(&sdk_config().await);
    // A queue that takes messages of at most 1 KiB.
    let url = client
        .create_queue()
        .queue_name(unique("hookline-small"))
        .attributes(QueueAttributeName::MaximumMessageSize, "1024")
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("a queue URL");
    let queue = SqsQueue::new(client.clone(), url.clone());
    let outgoing = |body: &str| Outgoing {
        body: body.to_owned(),
        delay: Duration::ZERO,
    };
    let small = [body_of(0, 100), body_of(2, 200), body_of(3, 300)];
    let too_big = body_of(1, 2000);
    let over_sqs_limit = body_of(4, MAX_BATCH_BYTES + 1);
    let err = queue
        .send(vec![
            outgoing(&small[0]),
            outgoing(&too_big),
            outgoing(&small[1]),
            outgoing(&small[2]),
            outgoing(&over_sqs_limit),
        ])
        .await
        .expect_err("two messages are refused");
    assert_eq!(err.sent, 5);
    let refused: Vec<(usize, Refusal)> =
        err.unqueued.iter().map(|u| (u.index, u.refusal)).collect();
    assert_eq!(refused, vec![(1, Refusal::Refused), (4, Refusal::Refused)]);
    assert!(err.is_queued(0) && err.is_queued(2) && err.is_queued(3));
    assert!(!err.is_queued(1) && !err.is_queued(4));
    let mut got = drain_bodies(&client, &url).await;
    got.sort();
    assert_eq!(got, small.to_vec(), "exactly the others are on the queue");

    // Attributes count towards the size, as SQS counts them.
    let err = queue
        .send_with_attributes(vec![Attributed {
            message: outgoing(&body_of(5, 600 * 1024)),
            attributes: vec![Attribute::string("note", &"n".repeat(500 * 1024))],
        }])
        .await
        .expect_err("over 1 MiB with its attribute");
    assert_eq!(err.refusal_of(0), Some(Refusal::Refused));
    client
        .delete_queue()
        .queue_url(&url)
        .send()
        .await
        .expect("delete queue");
}

#[tokio::test]
async fn sqs_out_of_reach_queues_nothing_and_says_so() {
    let sdk = sdk_config().await;
    // A loopback port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("address"));
    drop(closed);
    let conf = aws_sdk_sqs::config::Builder::from(&sdk)
        .endpoint_url(&url)
        .build();
    let queue = SqsQueue::new(
        aws_sdk_sqs::Client::from_conf(conf),
        format!("{url}/123456789012/nowhere"),
    );
    let err = queue
        .send(
            (0..15)
                .map(|i| Outgoing {
                    body: format!("m{i}"),
                    delay: Duration::ZERO,
                })
                .collect(),
        )
        .await
        .expect_err("nothing can be sent");
    assert_eq!(err.sent, 15);
    assert_eq!(err.unqueued.len(), 15);
    assert!(err
        .unqueued
        .iter()
        .all(|u| u.refusal == Refusal::Unavailable));
    assert!((0..15).all(|i| !err.is_queued(i)));
}

#[tokio::test]
async fn sqs_reads_the_redrive_policys_receive_count() {
    let (client, queue, dead_letter_url) = queue().await;
    assert_eq!(
        queue.max_receives().await.expect("redrive policy"),
        Some(hookline_core::aws::sqs::DEFAULT_MAX_RECEIVES)
    );
    // The dead-letter queue has no redrive policy of its own.
    let plain = SqsQueue::new(client.clone(), dead_letter_url.clone());
    assert_eq!(plain.max_receives().await.expect("no policy"), None);
    drop_queues(&client, &queue, &dead_letter_url).await;
}

/// A table written before messages and idempotency bindings were sharded: old-layout
/// items read as before until the migration, which moves each to its shard's key once,
/// loses none, and can be run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_migration_moves_an_unsharded_table_without_loss_or_duplicates() {
    let (client, store) = store().await;
    // A table deployed before the sharded layout has no layout item.
    client
        .delete_item()
        .table_name(store.table())
        .key(PK, AttributeValue::S(LAYOUT_PK.into()))
        .key(SK, AttributeValue::S(LAYOUT_SK.into()))
        .send()
        .await
        .expect("forget the layout");
    let tenant = TenantId::new();
    let base: u64 = 1_700_000_000_000;
    let old_ids: Vec<MessageId> = (0..40)
        .map(|i| MessageId::from_ulid(Ulid::from_parts(base + i, rand_bits(i))))
        .collect();
    let put_old = |id: MessageId| {
        let client = client.clone();
        let table = store.table().to_string();
        async move {
            client
                .put_item()
                .table_name(table)
                .item(PK, AttributeValue::S(format!("T#{tenant}")))
                .item(SK, AttributeValue::S(format!("MSG#{id}")))
                .item("id", AttributeValue::S(id.to_string()))
                .item("tenant", AttributeValue::S(tenant.to_string()))
                .item("type", AttributeValue::S("delivered".into()))
                .item("payload", AttributeValue::S(format!(r#"{{"id":"{id}"}}"#)))
                .item(
                    "received_at",
                    AttributeValue::N(id.ulid().timestamp_ms().to_string()),
                )
                .item("targets", AttributeValue::L(Vec::new()))
                .send()
                .await
                .expect("put an old-layout message");
        }
    };
    for id in &old_ids {
        put_old(*id).await;
    }
    let far = (base as Millis) + 86_400_000;
    client
        .put_item()
        .table_name(store.table())
        .item(PK, AttributeValue::S(format!("T#{tenant}")))
        .item(SK, AttributeValue::S("IDEM#order-7".into()))
        .item("message_id", AttributeValue::S(old_ids[7].to_string()))
        .item("expires_ms", AttributeValue::N(far.to_string()))
        .item("expires_at", AttributeValue::N((far / 1000).to_string()))
        .send()
        .await
        .expect("put an old-layout binding");
    // Messages published since the upgrade, one of them (as a retried publish) also
    // stored in the old layout: as if a run stopped between copying and deleting it.
    let mut new_ids = Vec::new();
    for i in 0..5 {
        let id = MessageId::from_ulid(Ulid::from_parts(base + 100 + i, rand_bits(i + 100)));
        store
            .insert_message(&Message {
                id,
                tenant,
                publisher: None,
                domain: None,
                event_type: "delivered".into(),
                payload: RawValue::from_string(format!(r#"{{"id":"{id}"}}"#)).unwrap(),
                idempotency_key: None,
                received_at: id.ulid().timestamp_ms() as Millis,
                targets: Vec::new(),
            })
            .await
            .expect("insert");
        new_ids.push(id);
    }
    put_old(new_ids[2]).await;
    // Failed deliveries to one endpoint, in the replay index under its unsharded key.
    let endpoint = EndpointId::new();
    let failed: Vec<MessageId> = old_ids.iter().step_by(4).copied().collect();
    for id in &failed {
        client
            .put_item()
            .table_name(store.table())
            .item(PK, AttributeValue::S(format!("M#{id}")))
            .item(SK, AttributeValue::S(format!("D#{endpoint}")))
            .item("message", AttributeValue::S(id.to_string()))
            .item("endpoint", AttributeValue::S(endpoint.to_string()))
            .item("tenant", AttributeValue::S(tenant.to_string()))
            .item("status", AttributeValue::S("failed".into()))
            .item("attempts", AttributeValue::N("8".into()))
            .item("updated_at", AttributeValue::N(base.to_string()))
            .item(
                "gsi2pk",
                AttributeValue::S(format!("T#{tenant}#EP#{endpoint}#FAILED")),
            )
            .item("gsi2sk", AttributeValue::S(id.to_string()))
            .send()
            .await
            .expect("put an old-layout failed delivery");
    }
    let replayable = |store: DynamoStore| async move {
        let mut ids = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .list_failed_deliveries(
                    tenant,
                    endpoint,
                    &FailedQuery {
                        since: 0,
                        until: None,
                        after,
                        limit: 3,
                    },
                )
                .await
                .expect("list failed");
            let Some(last) = page.last() else {
                return ids;
            };
            after = Some(last.message);
            ids.extend(page.iter().map(|d| d.message));
        }
    };
    assert_eq!(
        replayable(store.clone()).await,
        failed,
        "before the migration, a replay finds the failed deliveries under the old index key"
    );
    let copy = store
        .insert_message(&Message {
            id: old_ids[0],
            tenant,
            publisher: None,
            domain: None,
            event_type: "delivered".into(),
            payload: RawValue::from_string(r#"{"copy":true}"#.into()).unwrap(),
            idempotency_key: None,
            received_at: old_ids[0].ulid().timestamp_ms() as Millis,
            targets: Vec::new(),
        })
        .await
        .expect("insert a copy");
    assert_eq!(
        copy.payload.get(),
        format!(r#"{{"id":"{}"}}"#, old_ids[0]),
        "a copy of an event stored in the old layout finds it there, and stores nothing"
    );
    let mut want: Vec<MessageId> = old_ids.iter().chain(&new_ids).copied().collect();
    want.sort_by_key(|id| std::cmp::Reverse(*id));

    let list_all = |store: DynamoStore| async move {
        let mut ids = Vec::new();
        let mut before = None;
        loop {
            let page = store
                .list_messages(
                    tenant,
                    &MessageQuery {
                        before,
                        limit: 7,
                        event_type: None,
                    },
                )
                .await
                .expect("list");
            ids.extend(page.items.iter().map(|m| m.id));
            match page.next_cursor {
                Some(cursor) => before = MessageId::parse(&cursor),
                None => return ids,
            }
        }
    };
    assert_eq!(
        list_all(store.clone()).await,
        want,
        "before the migration, listings merge both layouts, each message once"
    );
    assert!(store
        .get_message(tenant, old_ids[3])
        .await
        .expect("get")
        .is_some());
    let claim = |store: DynamoStore| async move {
        store
            .claim_idempotency_key(
                tenant,
                "order-7",
                MessageId::new(),
                base as Millis + 1000,
                Duration::from_secs(3600),
            )
            .await
            .expect("claim")
    };
    assert_eq!(
        claim(store.clone()).await,
        Some(old_ids[7]),
        "an old binding holds before the migration"
    );

    let fresh = || DynamoStore::new(client.clone(), store.table().to_string());
    // The command operators run, against moto.
    let endpoint = std::env::var(hookline_core::aws::testing::ENDPOINT_VAR).expect("moto");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_hookline-migrate"))
        .arg(store.table())
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .expect("run hookline-migrate");
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        said.contains("51 items moved to sharded keys, 1 found moved already"),
        "40 messages, one binding and 10 failed deliveries moved, the message in both \
         layouts kept once: {said}"
    );

    let scan = client
        .scan()
        .table_name(store.table())
        .consistent_read(true)
        .send()
        .await
        .expect("scan")
        .items
        .unwrap_or_default();
    let key_of = |item: &std::collections::HashMap<String, AttributeValue>, name: &str| {
        item[name].as_s().expect("a string key").clone()
    };
    assert!(
        !scan
            .iter()
            .any(|item| key_of(item, PK) == format!("T#{tenant}")),
        "nothing is left under the tenant's own key"
    );
    let mut stored: Vec<(String, String)> = scan
        .iter()
        .filter(|item| key_of(item, SK).starts_with("MSG#"))
        .map(|item| (key_of(item, PK), key_of(item, SK)))
        .collect();
    stored.sort();
    let mut want_keys: Vec<_> = want.iter().map(|id| message_key(tenant, *id)).collect();
    want_keys.sort();
    assert_eq!(
        stored, want_keys,
        "each message once, under its shard's key"
    );
    let shards: std::collections::HashSet<_> = stored.iter().map(|(pk, _)| pk).collect();
    assert!(
        shards.len() > 10 && shards.len() as u64 <= MESSAGE_SHARDS,
        "45 messages fall on many of the {MESSAGE_SHARDS} shards, got {}",
        shards.len()
    );
    let (binding_pk, _) = idempotency_key(tenant, "order-7");
    assert!(scan.iter().any(|item| key_of(item, PK) == binding_pk));

    let after = fresh();
    assert_eq!(
        list_all(after.clone()).await,
        want,
        "after it, the sharded keys alone list every message once, newest first"
    );
    for id in &want {
        let message = after
            .get_message(tenant, *id)
            .await
            .expect("get")
            .expect("every message is found by id");
        assert_eq!(message.payload.get(), format!(r#"{{"id":"{id}"}}"#));
    }
    assert_eq!(
        claim(after.clone()).await,
        Some(old_ids[7]),
        "the moved binding still holds"
    );
    assert_eq!(
        replayable(after.clone()).await,
        failed,
        "a replay since any time finds every failed delivery once, oldest first"
    );
    assert!(
        !scan
            .iter()
            .filter_map(|item| item.get("gsi2pk"))
            .any(|gpk| gpk.as_s().is_ok_and(|k| k.ends_with("#FAILED"))),
        "no failed delivery is left under the unsharded index key"
    );
    assert_eq!(
        fresh().migrate_keys().await.expect("migrate again"),
        hookline_core::aws::KeyMigration::default(),
        "a second run finds nothing to move"
    );
    drop_table(&client, &store).await;
}

/// Random-looking low bits for a test id, fixed per `i`.
fn rand_bits(i: u64) -> u128 {
    u128::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | (u128::from(i) << 64)
}

#[tokio::test]
async fn sqs_sequenced_sends_go_to_the_fifo_queue_one_group_per_sequence_in_order() {
    use hookline_core::ports::Sequenced;
    let client = aws_sdk_sqs::Client::new(&sdk_config().await);
    let (url, dead_letter_url) = create_queue_pair(&client, &unique("hookline-test"))
        .await
        .expect("create queues");
    let fifo_url = client
        .create_queue()
        .queue_name(format!("{}.fifo", unique("hookline-test")))
        .attributes(QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .expect("create FIFO queue")
        .queue_url
        .expect("queue URL");
    let unordered = SqsQueue::new(client.clone(), url.clone());
    assert!(!unordered.keeps_order());
    let refused = unordered
        .send_sequenced(vec![Sequenced {
            body: "x".into(),
            group: "g".into(),
            dedup: "x".into(),
        }])
        .await
        .expect_err("no ordered side");
    assert_eq!(refused.refusal_of(0), Some(Refusal::Refused));

    let queue = SqsQueue::new(client.clone(), url).with_ordered_url(fifo_url.clone());
    assert!(queue.keeps_order());
    // A key with spaces and non-ASCII is no valid group id as it is; 25 messages span
    // three batches; a repeated dedup id queues one message.
    let long_key = format!("tenant:endpoint:ключ {}", "k".repeat(200));
    let mut messages: Vec<Sequenced> = (0..25)
        .map(|i| Sequenced {
            body: format!("{}-{i:02}", if i % 2 == 0 { "a" } else { "b" }),
            group: if i % 2 == 0 {
                "ep_a".into()
            } else {
                long_key.clone()
            },
            dedup: format!("msg{i}:ep"),
        })
        .collect();
    messages.push(Sequenced {
        body: "a-00 again".into(),
        group: "ep_a".into(),
        dedup: "msg0:ep".into(),
    });
    queue.send_sequenced(messages).await.expect("all queued");

    let mut got: Vec<(String, String)> = Vec::new();
    loop {
        let out = client
            .receive_message()
            .queue_url(&fifo_url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .send()
            .await
            .expect("receive")
            .messages
            .unwrap_or_default();
        if out.is_empty() {
            break;
        }
        for m in out {
            let group = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                .cloned()
                .expect("group id");
            got.push((group, m.body.clone().unwrap_or_default()));
            client
                .delete_message()
                .queue_url(&fifo_url)
                .receipt_handle(m.receipt_handle.unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
    }
    let of = |prefix: &str| -> Vec<String> {
        got.iter()
            .filter(|(_, b)| b.starts_with(prefix))
            .map(|(_, b)| b.clone())
            .collect()
    };
    let want_a: Vec<String> = (0..25).step_by(2).map(|i| format!("a-{i:02}")).collect();
    let want_b: Vec<String> = (1..25).step_by(2).map(|i| format!("b-{i:02}")).collect();
    assert_eq!(
        of("a-"),
        want_a,
        "sequence a in order, its duplicate dropped"
    );
    assert_eq!(of("b-"), want_b, "sequence b in order");
    let groups: std::collections::HashSet<&str> = got.iter().map(|(g, _)| g.as_str()).collect();
    assert!(groups.contains("ep_a"), "a valid group id is kept as it is");
    assert!(
        groups.contains(fifo_id(&long_key).as_str()) && fifo_id(&long_key).len() <= 128,
        "an invalid one is hashed: {groups:?}"
    );
    for u in [&fifo_url, &dead_letter_url, queue.queue_url()] {
        client
            .delete_queue()
            .queue_url(u)
            .send()
            .await
            .expect("delete queue");
    }
}
