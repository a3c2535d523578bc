//! The one error type of the domain. HTTP adapters map it to a status and a JSON body;
//! queue adapters map it to "redeliver" or "dead-letter".

use std::fmt;

/// What went wrong, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or breaks a rule; nothing was stored.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// The named resource does not exist for this caller (another tenant's ids included).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Well-formed, but a value is out of its range or the request cannot be acted on as
    /// it stands (422); nothing was stored.
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    /// The resource already exists or the change conflicts with current state.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The caller's `If-Match` names a revision the resource is no longer at (412);
    /// nothing was stored.
    #[error("{0}")]
    PreconditionFailed(&'static str),
    /// Missing, malformed, unknown or revoked credentials.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Valid credentials without the right to do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// A payload or request over its size limit.
    #[error("{0}")]
    TooLarge(String),
    /// A test send to an endpoint got no 2xx; `status` is what the receiver answered, or
    /// `error` why nothing was answered (timeout, connect, blocked, …).
    #[error("{message}")]
    EndpointTest {
        message: String,
        status: Option<u16>,
        error: Option<String>,
        /// The start of the receiver's answer body.
        response: String,
    },
    /// More work is queued than the deployment takes on; the caller should come back
    /// after `retry_after`. Nothing was stored.
    #[error("too many events are waiting for delivery; retry after {}s", retry_after.as_secs().max(1))]
    Overloaded { retry_after: std::time::Duration },
    /// A fault of a dependency (storage, queue); retryable, never shown to callers in detail.
    #[error("{context}: {source}")]
    Backend {
        context: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(code: &'static str, message: impl fmt::Display) -> Self {
        Error::Invalid {
            code,
            message: message.to_string(),
        }
    }

    pub fn unprocessable(code: &'static str, message: impl fmt::Display) -> Self {
        Error::Unprocessable {
            code,
            message: message.to_string(),
        }
    }

    pub fn conflict(code: &'static str, message: impl fmt::Display) -> Self {
        Error::Conflict {
            code,
            message: message.to_string(),
        }
    }

    /// The refusal of a new endpoint over the tenant's limit of `max`.
    pub fn too_many_endpoints(max: usize) -> Self {
        Error::conflict(
            "too_many_endpoints",
            format!("a tenant may have at most {max} endpoints; delete one first"),
        )
    }

    pub fn backend(
        context: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Backend {
            context,
            source: source.into(),
        }
    }

    /// True for faults that may go away on a later try.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Backend { .. })
    }

    /// The machine-readable code of the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Invalid { code, .. }
            | Error::Unprocessable { code, .. }
            | Error::Conflict { code, .. } => code,
            Error::PreconditionFailed(_) => "precondition_failed",
            Error::NotFound(_) => "not_found",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::TooLarge(_) => "payload_too_large",
            Error::EndpointTest { .. } => "endpoint_test_failed",
            Error::Overloaded { .. } => "overloaded",
            Error::Backend { .. } => "internal_error",
        }
    }
}

/// Adds context to a dependency's error, turning it into [`Error::Backend`].
pub trait BackendContext<T> {
    fn context(self, context: &'static str) -> Result<T>;
}

impl<T, E> BackendContext<T> for std::result::Result<T, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn context(self, context: &'static str) -> Result<T> {
        self.map_err(|e| Error::backend(context, e))
    }
}

/// What a caught panic said, for the log line that reports it.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_message_reads_both_kinds_of_payload() {
        let literal = std::panic::catch_unwind(|| panic!("a literal")).unwrap_err();
        assert_eq!(panic_message(literal.as_ref()), "a literal");
        let n = 7;
        let formatted = std::panic::catch_unwind(|| panic!("formatted {n}")).unwrap_err();
        assert_eq!(panic_message(formatted.as_ref()), "formatted 7");
        let other = std::panic::catch_unwind(|| std::panic::panic_any(42_u8)).unwrap_err();
        assert_eq!(panic_message(other.as_ref()), "(no message)");
    }
}
