//! Serving model files to peers: manifests, sources, outboards and byte ranges of the
//! files this node holds (see `vouch_net::blob_store`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as AxPath, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use vouch_blob::GROUP_LEN;
use vouch_net::blob_store::{BlobStore, Manifest};

use crate::error::ApiError;
use crate::state::{parse_hash, AppState};

fn store(s: &AppState) -> Result<&Arc<BlobStore>, ApiError> {
    s.blobs
        .as_ref()
        .ok_or_else(|| ApiError::not_found("this node serves no model files"))
}

/// `GET /v1/p2p/models/{id}/manifest`: the model's files, if this node has all of them.
pub async fn manifest(
    AxState(s): AxState<AppState>,
    AxPath(id): AxPath<String>,
) -> Result<Json<Manifest>, ApiError> {
    let id = parse_hash(&id, "model id")?;
    let st = store(&s)?.clone();
    tokio::task::spawn_blocking(move || st.manifest(&id))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("this node does not have model {id}")))
}

/// `GET /v1/p2p/models/{id}/sources`: API addresses of the nodes that announced the model
/// (this node first, when it has it).
pub async fn sources(
    AxState(s): AxState<AppState>,
    AxPath(id): AxPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_hash(&id, "model id")?;
    let mut urls = Vec::new();
    if let (Some(st), Some(me)) = (&s.blobs, &s.public_api) {
        let st = st.clone();
        if tokio::task::spawn_blocking(move || st.manifest(&id).is_some())
            .await
            .unwrap_or(false)
        {
            urls.push(me.to_string());
        }
    }
    if let Some(d) = &s.dispatch {
        urls.extend(d.seeds_of(&id));
    }
    Ok(Json(json!({"model": id, "sources": urls})))
}

/// `GET /v1/p2p/blobs/{hash}/outboard`: the file's group hashes ([`Outboard::encode`]).
pub async fn outboard(
    AxState(s): AxState<AppState>,
    AxPath(hash): AxPath<String>,
) -> Result<Response, ApiError> {
    let hash = parse_hash(&hash, "file hash")?;
    let st = store(&s)?.clone();
    let ob = tokio::task::spawn_blocking(move || st.outboard(&hash))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| ApiError::not_found(format!("this node does not have file {hash}")))?;
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        ob.encode(),
    )
        .into_response())
}

/// Parses a single `bytes=a-b` / `bytes=a-` range against a file of `len` bytes.
fn parse_range(v: &str, len: u64) -> Option<(u64, u64)> {
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end = match b.trim() {
        "" => len,
        b => b.parse::<u64>().ok()?.checked_add(1)?.min(len),
    };
    (start < end).then_some((start, end))
}

/// `GET /v1/p2p/blobs/{hash}`: the file's bytes, whole or one `Range`, streamed from disk.
pub async fn blob(
    AxState(s): AxState<AppState>,
    AxPath(hash): AxPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let hash = parse_hash(&hash, "file hash")?;
    let st = store(&s)?;
    let path = st
        .path_of(&hash)
        .ok_or_else(|| ApiError::not_found(format!("this node does not have file {hash}")))?;
    let file = File::open(&path).map_err(|e| ApiError::internal(e.to_string()))?;
    let len = file
        .metadata()
        .map_err(|e| ApiError::internal(e.to_string()))?
        .len();
    let (status, start, end) = match headers.get(header::RANGE) {
        None => (StatusCode::OK, 0, len),
        Some(v) => {
            let Some((a, b)) = v.to_str().ok().and_then(|v| parse_range(v, len)) else {
                return Ok((
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{len}"))],
                )
                    .into_response());
            };
            (StatusCode::PARTIAL_CONTENT, a, b)
        }
    };
    // A blocking reader feeds the response 256 KiB at a time.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    tokio::task::spawn_blocking(move || {
        let mut at = start;
        while at < end {
            let n = (end - at).min(GROUP_LEN) as usize;
            let mut buf = vec![0u8; n];
            let r = file.read_exact_at(&mut buf, at).map(|_| buf);
            let failed = r.is_err();
            if tx.blocking_send(r).is_err() || failed {
                return;
            }
            at += n as u64;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        "application/octet-stream".parse().unwrap(),
    );
    h.insert(header::CONTENT_LENGTH, (end - start).into());
    h.insert(header::ACCEPT_RANGES, "bytes".parse().unwrap());
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{len}", start, end - 1)
                .parse()
                .unwrap(),
        );
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_http_says() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some((0, 100)));
        assert_eq!(parse_range("bytes=900-", 1000), Some((900, 1000)));
        assert_eq!(parse_range("bytes=900-5000", 1000), Some((900, 1000)));
        assert_eq!(parse_range("bytes=1000-", 1000), None);
        assert_eq!(parse_range("bytes=5-4", 1000), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), None);
        assert_eq!(parse_range("items=0-1", 1000), None);
    }
}
