//! The publish body parser, the storage-free checks of an envelope, and the queue task
//! parser, on arbitrary bytes: no panics, every refusal a 4xx, and what is accepted keeps
//! the promises the rest of the service relies on.
#![no_main]

use hookline_core::catalog::check_name_syntax;
use hookline_core::config::{CoreConfig, MAX_BATCH};
use hookline_core::envelope::{check_domain_name, Publish, MAX_IDEMPOTENCY_KEY};
use hookline_core::http::ApiError;
use hookline_core::ids::MessageId;
use hookline_core::task::{Origin, Task};
use hookline_core::Error;
use libfuzzer_sys::fuzz_target;

fn assert_client_error(e: Error) {
    let code = e.code();
    let status = ApiError(e).status();
    assert!(status.is_client_error(), "{code} answered {status}");
    assert!(!code.is_empty());
}

fuzz_target!(|data: &[u8]| {
    // A small payload limit, so inputs the fuzzer can build reach it.
    let config = CoreConfig {
        max_payload: 512,
        ..CoreConfig::default()
    };
    match Publish::parse(data) {
        Ok(publish) => {
            let body = std::str::from_utf8(data).expect("accepted JSON is UTF-8");
            let batch = matches!(publish, Publish::Many(_));
            let events = publish.into_events();
            assert!(!events.is_empty() && events.len() <= MAX_BATCH);
            assert!(batch || events.len() == 1);
            for event in events {
                let payload = event.payload.get();
                // Payloads stay byte for byte what the producer wrote, and are JSON.
                assert!(body.contains(payload));
                assert!(serde_json::from_str::<serde_json::Value>(payload).is_ok());
                match event.check(&config) {
                    Ok(()) => {
                        assert!(check_name_syntax(&event.event_type).is_ok());
                        assert!(payload.len() <= config.max_payload);
                        assert!(payload.trim_start().starts_with('{'));
                        if let Some(domain) = &event.domain {
                            assert!(check_domain_name(domain).is_ok());
                            assert!(domain.is_ascii() && domain.len() <= 253);
                        }
                        if let Some(key) = &event.idempotency_key {
                            assert!(!key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY);
                            assert!(!key.chars().any(char::is_control));
                        }
                    }
                    Err(e) => assert_client_error(e),
                }
            }
        }
        Err(e) => assert_client_error(e),
    }

    // The same bytes as a queue message: a task that parses survives its own body.
    if let Ok(body) = std::str::from_utf8(data) {
        let origin = Origin {
            message_id: MessageId::parse("msg_01JD0000000000000000000000").expect("fixed id"),
            received_at: 0,
        };
        if let Ok(task) = Task::parse(body, origin) {
            let sent = task.to_body();
            let again = Task::parse(&sent, origin).expect("a task's own body parses");
            assert_eq!(again.to_body(), sent);
        }
    }
});
