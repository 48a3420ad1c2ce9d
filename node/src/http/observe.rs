//! Request latency and response counts by route (the route's template, never the raw path, so
//! that keys do not become metric labels).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use crate::metrics::{ResponseLabels, RouteLabels};

pub async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let method = request.method().as_str().to_string();
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
        .get_or_create(&ResponseLabels { route, code: response.status().as_str().to_string() })
        .inc();
    response
}
