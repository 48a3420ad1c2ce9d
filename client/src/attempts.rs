//! What a call's attempts met, endpoint by endpoint: the error a call that no node answered
//! reports, and the rule that ends such a call early.
//!
//! Why two clocks: a node that was reached (it answered 503 during an election, or took too
//! long) may answer the next attempt, so the call goes on until its deadline; an endpoint that
//! refuses or never completes a connection is not a node that is about to answer. When no
//! attempt has reached any node for the dial timeout (etcdctl's `--dial-timeout`, 5 s by
//! default) and every endpoint has been tried, the call gives up, naming each endpoint and why
//! it failed, instead of waiting out the whole deadline. One connection may take only a part of
//! the dial timeout ([`connect_timeout`]), so that a host that drops packets silently (a
//! machine that lost power) leaves time to try the others.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::ClientError;

/// How one attempt failed.
#[derive(Debug)]
pub(crate) struct AttemptFailure {
    /// The node the attempt last talked to (or tried to).
    pub base: String,
    pub reason: String,
    /// Whether a node was reached at all: `false` for a refused or timed-out connection.
    pub reached: bool,
}

impl AttemptFailure {
    /// A failure of `reqwest` to send to `base`, described for an operator.
    pub fn of_send(base: &str, error: &reqwest::Error, request_timeout: Duration) -> Self {
        let reached = !error.is_connect();
        let reason = if error.is_connect() {
            format!("cannot connect: {}", innermost_cause(error))
        } else if error.is_timeout() {
            format!("no answer within {} ms", request_timeout.as_millis())
        } else {
            with_causes(error)
        };
        AttemptFailure { base: base.to_string(), reason, reached }
    }

    /// A node at `base` answered, but not with the answer (no leader yet, busy, misdirected).
    pub fn answered(base: &str, reason: impl Into<String>) -> Self {
        AttemptFailure { base: base.to_string(), reason: reason.into(), reached: true }
    }
}

/// The attempts of one call so far.
pub(crate) struct Attempts {
    started: Instant,
    dial_timeout: Duration,
    /// How many endpoints the call may try: it does not give up before trying each.
    endpoints: usize,
    /// Each endpoint's latest failure, in the order they were first tried.
    failures: Mutex<Vec<(String, String)>>,
    reached_a_node: Mutex<bool>,
}

impl Attempts {
    pub fn new(dial_timeout: Duration, endpoints: usize) -> Self {
        Attempts {
            started: Instant::now(),
            dial_timeout,
            endpoints,
            failures: Mutex::new(Vec::new()),
            reached_a_node: Mutex::new(false),
        }
    }

    /// Records `failure`; returns whether the call should go on (false once no node has been
    /// reached for the dial timeout and every endpoint has been tried).
    pub fn record(&self, failure: AttemptFailure) -> bool {
        let reached = {
            let mut reached = self.reached_a_node.lock().unwrap_or_else(|e| e.into_inner());
            *reached |= failure.reached;
            *reached
        };
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.iter_mut().find(|(base, _)| *base == failure.base) {
            Some((_, reason)) => *reason = failure.reason,
            None => failures.push((failure.base, failure.reason)),
        }
        reached || self.started.elapsed() < self.dial_timeout || failures.len() < self.endpoints
    }

    /// The error of a call that got no answer: every endpoint tried, each with its last failure.
    pub fn into_error(self) -> ClientError {
        let failures = self.failures.into_inner().unwrap_or_else(|e| e.into_inner());
        let reached = self.reached_a_node.into_inner().unwrap_or_else(|e| e.into_inner());
        let elapsed_ms = self.started.elapsed().as_millis();
        let gave_up = if reached {
            format!("after {elapsed_ms} ms")
        } else {
            format!("no connection in {elapsed_ms} ms")
        };
        ClientError::Unavailable {
            tried: failures.iter().map(|(base, _)| base.as_str()).collect::<Vec<_>>().join(", "),
            errors: failures
                .iter()
                .map(|(base, reason)| format!("{base}: {reason}"))
                .collect::<Vec<_>>()
                .join("; ")
                + &format!(" ({gave_up})"),
        }
    }
}

/// How long one connection may take to set up: a third of the dial timeout (at least 100 ms),
/// so that a silent host costs a part of it and the other endpoints get their turn.
pub(crate) fn connect_timeout(dial_timeout: Duration) -> Duration {
    (dial_timeout / 3).max(Duration::from_millis(100))
}

/// An error and its causes, outermost first: reqwest's own message ("error sending request")
/// hides why (connection refused, timed out, DNS), which is what the operator needs.
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}

/// The deepest cause of `error`: for a failed connection, the operating system's reason
/// ("Connection refused (os error 111)"), without the layers that only say "connect".
fn innermost_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut deepest: &(dyn std::error::Error + 'static) = error;
    while let Some(inner) = deepest.source() {
        deepest = inner;
    }
    deepest.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(base: &str) -> AttemptFailure {
        AttemptFailure {
            base: base.into(),
            reason: "cannot connect: refused".into(),
            reached: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unreachable_endpoints_end_the_call_after_the_dial_timeout() {
        let attempts = Attempts::new(Duration::from_secs(5), 2);
        assert!(attempts.record(refused("http://a")));
        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert!(attempts.record(refused("http://b")));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!attempts.record(refused("http://a")), "5 s without a connection");
    }

    #[tokio::test(start_paused = true)]
    async fn every_endpoint_is_tried_before_the_call_gives_up() {
        let attempts = Attempts::new(Duration::from_secs(5), 3);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(attempts.record(refused("http://a")), "two endpoints not tried yet");
        assert!(attempts.record(refused("http://b")), "one endpoint not tried yet");
        assert!(!attempts.record(refused("http://c")));
        assert!(connect_timeout(Duration::from_secs(5)) < Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_was_reached_keeps_the_call_going() {
        let attempts = Attempts::new(Duration::from_secs(5), 2);
        assert!(attempts.record(AttemptFailure::answered("http://a", "no leader yet")));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(attempts.record(refused("http://b")), "the deadline, not the dial timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn the_error_names_every_endpoint_once_with_its_last_failure() {
        let attempts = Attempts::new(Duration::from_secs(5), 2);
        attempts.record(refused("http://a"));
        attempts.record(AttemptFailure::answered("http://b", "no leader yet"));
        attempts.record(AttemptFailure::answered("http://a", "busy"));
        let ClientError::Unavailable { tried, errors } = attempts.into_error() else {
            panic!("not Unavailable");
        };
        assert_eq!(tried, "http://a, http://b");
        assert_eq!(errors, "http://a: busy; http://b: no leader yet (after 0 ms)");
    }
}
