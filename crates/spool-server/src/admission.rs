//! Admission of produce requests before their bytes are read.
//!
//! tonic reads and decodes a whole request before the handler runs, so a
//! limit taken in the handler counts a request only once all of it is in
//! memory: requests waiting for room would sit there, decoded, outside the
//! limit. This layer takes the room first. For `Produce` it reads just the
//! gRPC message prefix (compression flag and length, the first five bytes of
//! the body), waits for in-flight room for the whole message, and only then
//! lets tonic read the rest. A request still waiting holds no more than what
//! its HTTP/2 stream window let the client send ahead, and the windows are
//! sized (see `main.rs`) so that waiting streams can never fill the
//! connection's window and hold up the streams already admitted.
//!
//! The permit travels to the handler in the request's extensions
//! ([`Admitted`]) and is released when the handler finishes. A request the
//! layer cannot size (a message larger than `request_bytes_max`, a body that
//! ends early) goes through unadmitted: tonic or the handler refuses it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body as _, Frame, SizeHint};
use tonic::Status;
use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;
use tower_layer::Layer;
use tower_service::Service;

use crate::inflight::{InflightLimiter, InflightPermit};

/// The one method whose request bytes are admitted here.
const PRODUCE_PATH: &str = "/spool.v1.Log/Produce";

/// gRPC's message prefix: one compression flag byte, a big-endian u32 length.
const PREFIX_BYTES: usize = 5;

/// Room taken for a produce request before tonic read it; the handler holds
/// it until the records are appended.
#[derive(Debug, Clone)]
pub struct Admitted(pub Arc<InflightPermit>);

#[derive(Debug, Clone)]
pub struct AdmissionLayer {
    limiter: Arc<InflightLimiter>,
    request_bytes_max: u64,
}

impl AdmissionLayer {
    pub fn new(limiter: Arc<InflightLimiter>, request_bytes_max: u64) -> Self {
        AdmissionLayer {
            limiter,
            request_bytes_max,
        }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Admission<S> {
        Admission {
            inner,
            limiter: Arc::clone(&self.limiter),
            request_bytes_max: self.request_bytes_max,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Admission<S> {
    inner: S,
    limiter: Arc<InflightLimiter>,
    request_bytes_max: u64,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> Service<http::Request<Body>> for Admission<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != PRODUCE_PATH {
            return Box::pin(self.inner.call(request));
        }
        // The clone that was made ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limiter = Arc::clone(&self.limiter);
        let request_bytes_max = self.request_bytes_max;
        Box::pin(async move {
            let peer = request
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr);
            let (mut parts, body) = request.into_parts();
            let (length, body) = read_prefix(body).await;
            if let Some(length) = length.filter(|&length| length <= request_bytes_max) {
                let wait = tracing::info_span!(target: spool_telemetry::TARGET, "admission wait", spool.request_bytes = length);
                match tracing::Instrument::instrument(limiter.acquire(peer, length), wait).await {
                    Ok(permit) => {
                        parts.extensions.insert(Admitted(Arc::new(permit)));
                    }
                    Err(status) => return Ok(status.into_http()),
                }
            }
            inner.call(http::Request::from_parts(parts, body)).await
        })
    }
}

/// Reads frames until the message prefix is in: the message length (when
/// the body got that far) and a body that yields every frame from the start.
async fn read_prefix(mut body: Body) -> (Option<u64>, Body) {
    let mut read = Replay::default();
    let mut data_bytes = 0;
    while data_bytes < PREFIX_BYTES {
        match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            Some(Ok(frame)) => {
                let is_data = frame.is_data();
                if let Some(data) = frame.data_ref() {
                    data_bytes += data.len();
                }
                read.frames.push_back(frame);
                if !is_data {
                    break;
                }
            }
            Some(Err(status)) => {
                read.error = Some(status);
                break;
            }
            None => break,
        }
    }
    let length = (data_bytes >= PREFIX_BYTES).then(|| message_length(&read.frames));
    read.rest = Some(body);
    (length, Body::new(read))
}

/// The length in a message prefix spread over the first data frames.
fn message_length(frames: &VecDeque<Frame<Bytes>>) -> u64 {
    let mut prefix = [0u8; PREFIX_BYTES];
    let mut filled = 0;
    for data in frames.iter().filter_map(Frame::data_ref) {
        let mut data = data.clone();
        while filled < PREFIX_BYTES && data.has_remaining() {
            prefix[filled] = data.get_u8();
            filled += 1;
        }
    }
    u64::from(u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]))
}

/// The frames read while looking for the prefix, then the rest of the body.
#[derive(Default)]
struct Replay {
    frames: VecDeque<Frame<Bytes>>,
    /// An error met while reading the prefix, given after its frames.
    error: Option<Status>,
    rest: Option<Body>,
}

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(error) = self.error.take() {
            self.rest = None;
            return Poll::Ready(Some(Err(error)));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
            && self.error.is_none()
            && self.rest.as_ref().is_none_or(|rest| rest.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: usize = self
            .frames
            .iter()
            .filter_map(Frame::data_ref)
            .map(Bytes::len)
            .sum();
        let mut hint = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |rest| rest.size_hint());
        hint.set_lower(hint.lower() + buffered as u64);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + buffered as u64);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_length_is_read_across_frames() {
        let frames: VecDeque<_> = [vec![0u8, 0, 1], vec![2, 3, 9, 9]]
            .into_iter()
            .map(|bytes| Frame::data(Bytes::from(bytes)))
            .collect();
        assert_eq!(message_length(&frames), 0x0001_0203);
    }

    #[tokio::test]
    async fn the_replayed_body_yields_every_byte_in_order() {
        let chunks: Vec<Result<Frame<Bytes>, Status>> = vec![
            Ok(Frame::data(Bytes::from_static(&[0, 0, 0]))),
            Ok(Frame::data(Bytes::from_static(&[0, 4, 1, 2]))),
            Ok(Frame::data(Bytes::from_static(&[3, 4]))),
        ];
        let body = Body::new(http_body_util::StreamBody::new(tokio_stream::iter(chunks)));
        let (length, mut body) = read_prefix(body).await;
        assert_eq!(length, Some(4));
        let mut bytes = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            bytes.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        assert_eq!(bytes, [0, 0, 0, 0, 4, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_body_shorter_than_the_prefix_is_not_sized() {
        let chunks: Vec<Result<Frame<Bytes>, Status>> = vec![Ok(Frame::data(Bytes::from_static(&[0, 0])))];
        let body = Body::new(http_body_util::StreamBody::new(tokio_stream::iter(chunks)));
        let (length, _) = read_prefix(body).await;
        assert_eq!(length, None);
    }
}
