//! Requests of a sharded cluster that concern every shard: a prefix listing asks every shard
//! for a page after the same cursor and merges them in key order
//! (`conclave_core::shard::merge_pages`); a clear clears every shard and adds up what was
//! deleted. Each shard is asked at once: its group here (forwarded to its leader if need be),
//! or a node that holds a replica of it (`leader::to_shard`).
//!
//! What a listing's `revision` means here: revisions are per shard, so the merged page carries
//! the highest of the shards' revisions, which only says that every shard's page is at least
//! as new as the store was at that revision of its own shard. A listing is linearizable per
//! shard, not across shards (there is no cross-shard snapshot).

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use conclave_client::api::{
    DELETED_KEYS_HEADER, KeyValueJson, REVISION_HEADER, RangeJson, SHARD_HEADER,
};
use conclave_core::engine::{ReadConsistency, ReadQuery, ReadResult};
use conclave_core::kv::{KvCommand, KvResponse};
use conclave_core::shard::{ListedKey, ShardId, ShardPage, merge_pages};
use futures::future::join_all;

use super::AppState;
use super::kv::listed_json;
use super::leader::{Forwardable, to_shard};
use super::propose::{read_in, unexpected, write_in};
use super::reply::{self, with_header};
use crate::local_groups::Route;

/// A listed key as the JSON API shows it, merged by key.
struct Listed(KeyValueJson);

impl ListedKey for Listed {
    fn listed_key(&self) -> &str {
        &self.0.key
    }
}

/// The headers of the request a shard is asked, here or at another node: the client's, plus
/// the shard, so that a replica here that does not lead forwards it to its leader rather than
/// redirecting the client (the client asked this node, for all shards).
fn shard_headers(headers: &HeaderMap, shard: ShardId) -> HeaderMap {
    let mut headers = headers.clone();
    headers.insert(SHARD_HEADER, HeaderValue::from(shard.0));
    headers
}

/// One shard's page of the listing, or the response that says why there is none.
async fn shard_page(
    state: &AppState,
    shard: ShardId,
    query: ReadQuery,
    keys_only: bool,
    consistency: ReadConsistency,
    request: &Forwardable<'_>,
) -> Result<(ShardPage<Listed>, u64), Response> {
    let answer = match state.groups.route_shard(shard) {
        Route::Here(group) => {
            let headers = shard_headers(request.headers, shard);
            let asked = Forwardable { headers: &headers, body: Bytes::new(), ..*request };
            match read_in(state, &group, query, consistency, asked).await {
                Ok(ReadResult::Range { entries, more, revision, .. }) => {
                    let kvs = entries.iter().map(|kv| Listed(listed_json(kv, keys_only))).collect();
                    return Ok((ShardPage { shard, kvs, more }, revision));
                }
                Ok(ReadResult::Value { .. }) => {
                    return Err(reply::text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "value answer to a range\n",
                    ));
                }
                // The leader's answer, relayed (or why there is none).
                Err(response) => response,
            }
        }
        Route::Elsewhere { shard, replicas } => {
            let asked = Forwardable { body: Bytes::new(), ..*request };
            to_shard(state, shard, &replicas, asked).await
        }
    };
    page_of_answer(shard, answer).await
}

/// The page in another node's answer for `shard`.
async fn page_of_answer(
    shard: ShardId,
    answer: Response,
) -> Result<(ShardPage<Listed>, u64), Response> {
    if answer.status() != StatusCode::OK {
        return Err(answer);
    }
    let body = axum::body::to_bytes(answer.into_body(), usize::MAX).await.map_err(|error| {
        reply::unavailable(format!("reading {shard}'s listing failed: {error}\n"))
    })?;
    let page: RangeJson = serde_json::from_slice(&body).map_err(|error| {
        reply::text(StatusCode::BAD_GATEWAY, format!("{shard}'s listing is not one: {error}\n"))
    })?;
    let kvs = page.kvs.into_iter().map(Listed).collect();
    Ok((ShardPage { shard, kvs, more: page.more }, page.revision))
}

/// `GET /kv?prefix=` in a sharded cluster: the first `limit` keys (0: the node's maximum) of
/// all shards after `start_after`, in key order. Every shard is asked for a whole page after
/// the same key, so the merged page is exactly the one a single group would answer, and its
/// last key is where the next page starts.
pub async fn range(
    state: &AppState,
    query: ReadQuery,
    keys_only: bool,
    consistency: ReadConsistency,
    request: Forwardable<'_>,
) -> Response {
    let Some(map) = state.groups.map() else {
        return reply::text(StatusCode::INTERNAL_SERVER_ERROR, "no shard map to fan out by\n");
    };
    let ReadQuery::Range { limit, .. } = &query else {
        return reply::text(StatusCode::INTERNAL_SERVER_ERROR, "a point read to fan out\n");
    };
    let limit = *limit;
    let effective_limit =
        if limit == 0 { state.config.kv_limits.max_range_limit as usize } else { limit as usize };
    let asks = map.shards().map(|(shard, _)| {
        shard_page(state, shard, query.clone(), keys_only, consistency, &request)
    });
    let mut pages = Vec::new();
    let mut revision = 0;
    for answer in join_all(asks).await {
        let (page, shard_revision) = match answer {
            Ok(answer) => answer,
            Err(response) => return response,
        };
        if page.kvs.len() > effective_limit {
            return reply::text(
                StatusCode::BAD_GATEWAY,
                format!("{} answered more keys than the limit\n", page.shard),
            );
        }
        revision = revision.max(shard_revision);
        pages.push(page);
    }
    let merged = merge_pages(pages, effective_limit);
    let kvs = merged.kvs.into_iter().map(|listed| listed.0).collect();
    reply::json(StatusCode::OK, &RangeJson { revision, more: merged.more, kvs })
}

/// One shard's part of a clear or prefix delete: its revision and the keys it deleted, or the
/// response that says why not.
async fn delete_in_shard(
    state: &AppState,
    shard: ShardId,
    command: &KvCommand,
    request: &Forwardable<'_>,
) -> Result<(u64, u64), Response> {
    let answer = match state.groups.route_shard(shard) {
        Route::Here(group) => {
            let headers = shard_headers(request.headers, shard);
            let asked = Forwardable { headers: &headers, body: Bytes::new(), ..*request };
            match write_in(state, &group, command.clone(), None, asked).await {
                Ok(KvResponse::Clear { revision, deleted_keys }) => {
                    return Ok((revision, deleted_keys));
                }
                Ok(other) => return Err(unexpected(&other)),
                // The leader's answer, relayed (or why there is none).
                Err(response) => response,
            }
        }
        Route::Elsewhere { shard, replicas } => {
            let asked = Forwardable { body: Bytes::new(), ..*request };
            to_shard(state, shard, &replicas, asked).await
        }
    };
    if answer.status() != StatusCode::OK {
        return Err(answer);
    }
    let number = |name: &str| {
        let value = answer.headers().get(name)?;
        value.to_str().ok()?.parse::<u64>().ok()
    };
    Ok((number(REVISION_HEADER).unwrap_or(0), number(DELETED_KEYS_HEADER).unwrap_or(0)))
}

/// `DELETE /clear` or `DELETE /kv?prefix=` in a sharded cluster: `command` on every shard. A
/// failure answers the first shard's error; the shards already done stay done, and a retry
/// does the rest.
pub async fn delete_many(
    state: &AppState,
    command: &KvCommand,
    request: Forwardable<'_>,
) -> Response {
    let Some(map) = state.groups.map() else {
        return reply::text(StatusCode::INTERNAL_SERVER_ERROR, "no shard map to fan out by\n");
    };
    let clears = map.shards().map(|(shard, _)| delete_in_shard(state, shard, command, &request));
    let (mut revision, mut deleted_keys) = (0, 0);
    for answer in join_all(clears).await {
        match answer {
            Ok((shard_revision, shard_deleted)) => {
                revision = revision.max(shard_revision);
                deleted_keys += shard_deleted;
            }
            Err(response) => return response,
        }
    }
    let response = with_header(StatusCode::OK.into_response(), REVISION_HEADER, revision);
    with_header(response, DELETED_KEYS_HEADER, deleted_keys)
}
