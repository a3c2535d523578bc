//! The form parser of the Mailgun-compatible API. The input is a `Content-Type` line
//! (absent when the input has no newline or the line is not text) and the body after it.
//! Every refusal is a 400; a urlencoded form survives re-encoding.
#![no_main]

use axum::http::StatusCode;
use axum::response::IntoResponse;
use futures::executor::block_on;
use hookline_api::parse_mailgun_form;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (std::str::from_utf8(&data[..i]).ok(), &data[i + 1..]),
        None => (None, data),
    };
    match block_on(parse_mailgun_form(content_type, body)) {
        Ok(form) => {
            let essence = content_type
                .and_then(|ct| ct.split(';').next())
                .map(|e| e.trim().to_ascii_lowercase());
            if essence.as_deref() != Some("multipart/form-data") {
                let encoded = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form.fields())
                    .finish();
                let again = block_on(parse_mailgun_form(None, encoded.as_bytes()))
                    .expect("a re-encoded form parses");
                assert_eq!(again, form);
            }
        }
        Err(e) => {
            let status = e.into_response().status();
            assert_eq!(status, StatusCode::BAD_REQUEST);
        }
    }
});
