//! The service hyper calls for every request. `GET`, `PUT` and `DELETE` on `/kv/{key}` go
//! straight to their handlers in `kv.rs`; every other request goes through the axum router.
//!
//! Why a fast path: these three are nearly all of a loaded node's requests, and on them the
//! router, the metrics middleware, the extractors and the boxed futures between them cost about
//! as much CPU as the handler itself (a leader's profile under lease gets: 23 % of its time in
//! the service, 9 % of it in the handler). The fast path answers exactly what the router would,
//! through the same handler functions, and records the same metrics under the same labels.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Method, Request};
use axum::response::Response;
use conclave_client::api::SHARD_EPOCH_HEADER;
use hyper::body::Incoming;
use tower::ServiceExt as _;

use super::AppState;
use super::kv;
use super::observe::KeyRouteMetrics;

/// What `call` returns: the fast path's future and the router's have different types.
type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

#[derive(Clone)]
pub struct ApiService {
    state: Arc<AppState>,
    router: Router,
    key_metrics: Arc<KeyRouteMetrics>,
}

impl ApiService {
    pub fn new(state: Arc<AppState>, router: Router) -> Self {
        let key_metrics = Arc::new(KeyRouteMetrics::new(state.metrics.clone()));
        ApiService { state, router, key_metrics }
    }
}

/// Whether a request is one the fast path serves: a single-key GET, PUT or DELETE. `/kv/`
/// (the empty key) and every other method are left to the router, which answers them.
fn is_key_request(method: &Method, path: &str) -> bool {
    let key_given = path.strip_prefix("/kv/").is_some_and(|key| !key.is_empty());
    key_given && matches!(*method, Method::GET | Method::PUT | Method::DELETE)
}

impl hyper::service::Service<Request<Incoming>> for ApiService {
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request<Incoming>) -> ResponseFuture {
        if !is_key_request(request.method(), request.uri().path()) {
            let router = self.router.clone();
            return Box::pin(router.oneshot(request.map(Body::new)));
        }
        let (state, key_metrics) = (self.state.clone(), self.key_metrics.clone());
        Box::pin(async move {
            let started = Instant::now();
            let (parts, body) = request.into_parts();
            let mut response = match parts.method {
                Method::GET => kv::get_key(&state, &parts).await,
                Method::PUT => kv::put_key(&state, &parts, body).await,
                _ => kv::delete_key(&state, &parts).await,
            };
            // A sharded cluster says so on every key's answer, with its map's epoch: a client
            // learns from it to fetch the map and send each key to its shard's leader.
            if let Some(map) = state.groups.map() {
                response.headers_mut().insert(SHARD_EPOCH_HEADER, HeaderValue::from(map.epoch()));
            }
            key_metrics.record(&parts.method, started.elapsed().as_secs_f64(), response.status());
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_key_gets_puts_and_deletes_take_the_fast_path() {
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            assert!(is_key_request(&method, "/kv/a"), "{method} /kv/a");
            assert!(is_key_request(&method, "/kv/dir%2Fname/x"), "{method} nested key");
            assert!(
                !is_key_request(&method, "/kv/"),
                "{method} of the empty key: the router's 400"
            );
            assert!(!is_key_request(&method, "/kv"), "{method} /kv: the router's range or 400");
            assert!(!is_key_request(&method, "/kvx/a"), "{method} of another route");
            assert!(!is_key_request(&method, "/txn"), "{method} /txn");
        }
        for method in [Method::POST, Method::PATCH, Method::HEAD, Method::OPTIONS] {
            assert!(
                !is_key_request(&method, "/kv/a"),
                "{method}: the router's answer (405 or HEAD)"
            );
        }
    }
}
