//! `hookline-migrate`: moves a deployed table's messages and idempotency bindings from the
//! unsharded layout to the sharded one ([`DynamoStore::migrate_keys`]). Reads the table
//! name from its argument or `TABLE_NAME`, and AWS settings as the functions do.

use std::process::ExitCode;

use hookline_core::aws::{sdk_config, DynamoStore};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Some(table) = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("TABLE_NAME").ok())
        .filter(|t| !t.trim().is_empty())
    else {
        eprintln!("usage: hookline-migrate TABLE (or set TABLE_NAME)");
        return ExitCode::from(2);
    };
    let client = aws_sdk_dynamodb::Client::new(&sdk_config().await);
    match DynamoStore::new(client, table.clone()).migrate_keys().await {
        Ok(report) => {
            println!(
                "{table}: {} items moved to sharded keys, {} found moved already; the table is sharded",
                report.moved, report.already_moved
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Safe to run again: every step is idempotent.
            eprintln!("{table}: migration stopped: {e}; run it again to resume");
            ExitCode::FAILURE
        }
    }
}
