//! Request latency and response counts by route (the route's template, never the raw path, so
//! that keys do not become metric labels).
//!
//! Labels of the known routes and methods are static strings: this runs on every request, and
//! building owned label strings for each one showed up in the allocator's share of the profile.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::AppState;
use crate::metrics::{Metrics, ResponseLabels, RouteLabels};

/// The template of the single-key route, as the router names it.
pub const KEY_ROUTE: &str = "/kv/{*key}";

/// The router's templates (see `router` in `mod.rs`); a route missing here still gets its own
/// label, only allocated per request.
const ROUTES: &[&str] = &[
    "/kv",
    "/kv/",
    KEY_ROUTE,
    "/clear",
    "/session",
    "/txn",
    "/watch",
    "/cluster/info",
    "/cluster/members",
    "/cluster/leader",
    "/admin/backup",
    "/health",
    "/metrics",
    "/",
];

fn route_label(request: &Request) -> Cow<'static, str> {
    match request.extensions().get::<MatchedPath>() {
        None => Cow::Borrowed("unmatched"),
        Some(path) => match ROUTES.iter().find(|route| **route == path.as_str()) {
            Some(route) => Cow::Borrowed(route),
            None => Cow::Owned(path.as_str().to_string()),
        },
    }
}

/// Standard methods, by name; any other keeps its own label, allocated per request.
const METHODS: &[&str] = &["GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH"];

fn method_label(method: &Method) -> Cow<'static, str> {
    match METHODS.iter().find(|name| **name == method.as_str()) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(method.as_str().to_string()),
    }
}

pub async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = route_label(&request);
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed_seconds = started.elapsed().as_secs_f64();
    state
        .metrics
        .request_seconds
        .get_or_create(&RouteLabels { method, route: route.clone() })
        .observe(elapsed_seconds);
    state
        .metrics
        .responses
        .get_or_create(&ResponseLabels { route, code: response.status().as_u16() })
        .inc();
    response
}

/// The metrics of the single-key route, looked up once. The service's fast path (`service.rs`)
/// records each GET, PUT and DELETE on `/kv/{key}` with these, under the same labels the
/// middleware above gives the router's requests, without a label lookup per request.
pub struct KeyRouteMetrics {
    get_seconds: Histogram,
    put_seconds: Histogram,
    delete_seconds: Histogram,
    ok: Counter,
    not_found: Counter,
    metrics: Arc<Metrics>,
}

impl KeyRouteMetrics {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        let seconds = |method: &'static str| {
            let labels =
                RouteLabels { method: Cow::Borrowed(method), route: Cow::Borrowed(KEY_ROUTE) };
            metrics.request_seconds.get_or_create(&labels).clone()
        };
        let responses = |code: StatusCode| {
            let labels = ResponseLabels { route: Cow::Borrowed(KEY_ROUTE), code: code.as_u16() };
            metrics.responses.get_or_create(&labels).clone()
        };
        KeyRouteMetrics {
            get_seconds: seconds("GET"),
            put_seconds: seconds("PUT"),
            delete_seconds: seconds("DELETE"),
            ok: responses(StatusCode::OK),
            not_found: responses(StatusCode::NOT_FOUND),
            metrics,
        }
    }

    pub fn record(&self, method: &Method, elapsed_seconds: f64, status: StatusCode) {
        match *method {
            Method::GET => self.get_seconds.observe(elapsed_seconds),
            Method::PUT => self.put_seconds.observe(elapsed_seconds),
            Method::DELETE => self.delete_seconds.observe(elapsed_seconds),
            ref other => {
                let labels =
                    RouteLabels { method: method_label(other), route: Cow::Borrowed(KEY_ROUTE) };
                self.metrics.request_seconds.get_or_create(&labels).observe(elapsed_seconds);
            }
        }
        match status {
            StatusCode::OK => self.ok.inc(),
            StatusCode::NOT_FOUND => self.not_found.inc(),
            other => {
                let labels =
                    ResponseLabels { route: Cow::Borrowed(KEY_ROUTE), code: other.as_u16() };
                self.metrics.responses.get_or_create(&labels).inc()
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_methods_have_their_own_name_and_others_keep_theirs() {
        assert_eq!(method_label(&Method::PUT), "PUT");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        let custom = Method::from_bytes(b"PURGE").expect("a valid method token");
        assert_eq!(method_label(&custom), "PURGE");
    }
}
