//! What a client call can fail with. Each variant is something the caller acts on differently:
//! a missing key or a failed condition is an answer; `Unavailable` means no node could answer
//! in time; `Unknown` means a write may or may not have been applied (only without a session).

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("key not found")]
    NotFound,
    #[error("condition failed{}", match current_revision {
        Some(revision) => format!(" (the key's current revision is {revision})"),
        None => String::new(),
    })]
    ConditionFailed { current_revision: Option<u64> },
    #[error("the node refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// `errors`: each endpoint tried, with why it gave no answer.
    #[error("no node answered: {errors}")]
    Unavailable { tried: String, errors: String },
    #[error("the write's outcome is unknown (the node timed out waiting for the commit): {0}")]
    Unknown(String),
    #[error("the server's answer could not be read: {0}")]
    BadAnswer(String),
    #[error("bad endpoint {endpoint:?}: {reason}")]
    BadEndpoint { endpoint: String, reason: String },
}
