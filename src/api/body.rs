//! A request body read whole into one buffer, up to `limits.max_payload_bytes`.
//!
//! axum's `Bytes` extractor keeps every chunk until the last has arrived and then copies
//! them all into one buffer: a 100 MB dispatch needed 200 MB at its peak, and the pages of
//! both had to be touched fresh. This one sizes its buffer from `Content-Length` (within
//! the limit) and copies each chunk in as it arrives, so the chunk's memory is reused for
//! the next one. A body past the limit is refused with a JSON error naming the setting,
//! before any of it is read when `Content-Length` already says so.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_LENGTH;
use bytes::{Bytes, BytesMut};
use hookgate_core::config::bytes_text;
use http_body_util::BodyExt;

use super::{ApiError, AppState};

/// The whole body of a request.
pub struct WholeBody(pub Bytes);

impl FromRequest<AppState> for WholeBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, engine: &AppState) -> Result<Self, ApiError> {
        read(request, engine.settings.config.limits.max_payload_bytes).await.map(WholeBody)
    }
}

async fn read(request: Request, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the request body is larger than `limits.max_payload_bytes` ({}); send fewer profiles per dispatch",
                bytes_text(limit as u64)
            ),
        )
    };
    let declared =
        request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = request.into_body();
    let mut whole = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "body_unreadable",
                format!("the request body could not be read: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else { continue };
        if whole.len() + data.len() > limit {
            return Err(too_large());
        }
        whole.extend_from_slice(&data);
    }
    Ok(whole.freeze())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use super::*;

    fn request(body: Body, content_length: Option<u64>) -> Request {
        let mut builder = Request::builder().method("POST").uri("/");
        if let Some(n) = content_length {
            builder = builder.header(CONTENT_LENGTH, n);
        }
        builder.body(body).unwrap()
    }

    /// A body of many chunks arrives whole and in order, in a buffer of its declared size.
    #[tokio::test]
    async fn chunks_are_read_whole_in_order() {
        let chunks: Vec<Result<Bytes, std::io::Error>> = (0..100u8).map(|i| Ok(Bytes::from(vec![i; 1000]))).collect();
        let expected: Vec<u8> = (0..100u8).flat_map(|i| vec![i; 1000]).collect();
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        let read = read(request(body, Some(100_000)), 1 << 20).await.unwrap();
        assert_eq!(read, expected);
    }

    /// Past the limit, the answer is 413 naming the setting, whether `Content-Length` says so
    /// or the chunks only show it as they come.
    #[tokio::test]
    async fn a_body_past_the_limit_is_refused() {
        let declared = read(request(Body::from(vec![b'x'; 10]), Some(2048)), 1024).await.unwrap_err();
        let chunks: Vec<Result<Bytes, std::io::Error>> = (0..3).map(|_| Ok(Bytes::from(vec![b'x'; 500]))).collect();
        let streamed =
            read(request(Body::from_stream(futures_util::stream::iter(chunks)), None), 1024).await.unwrap_err();
        for error in [declared, streamed] {
            assert_eq!((error.status, error.code), (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"));
            assert!(error.message.contains("`limits.max_payload_bytes` (1024 (1 KiB))"), "{}", error.message);
        }
        let exact = read(request(Body::from(vec![b'x'; 1024]), Some(1024)), 1024).await.unwrap();
        assert_eq!(exact.len(), 1024, "a body of exactly the limit is taken");
    }
}
