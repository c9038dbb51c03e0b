//! A small HTTP/1 server (hyper 1) for metrics and health endpoints: one
//! accept loop, one task per connection, a handler that maps a request to
//! a response. Routing is the handler's.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// What a handler answers.
pub type Response = http::Response<Full<Bytes>>;
/// What a handler is given.
pub type Request = http::Request<Incoming>;

/// The address of the client that sent a request, in its extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub std::net::SocketAddr);

/// Connections served at once; more wait in the listen queue. The endpoint
/// serves scrapers and probes, a handful of clients.
pub const CONNECTIONS_MAX: usize = 64;

/// A client has this long to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A response with a body and its content type.
pub fn response(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response {
    let mut response = http::Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A plain-text response; the body ends with a newline.
pub fn plain(status: StatusCode, text: &str) -> Response {
    response(status, "text/plain; charset=utf-8", format!("{text}\n"))
}

/// Serves `listener` with `handler` until `shutdown` resolves. Connections
/// already open when it does are closed with the runtime.
pub async fn serve<H, F>(listener: TcpListener, handler: H, shutdown: impl Future<Output = ()>)
where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    serve_with(
        listener,
        |stream| std::future::ready(Ok(stream)),
        handler,
        shutdown,
    )
    .await;
}

/// Like [`serve`], with each accepted connection first given to `upgrade`
/// (a TLS handshake) in the connection's own task; a connection whose
/// upgrade fails is closed.
pub async fn serve_with<U, UF, IO, H, F>(
    listener: TcpListener,
    upgrade: U,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    U: Fn(TcpStream) -> UF + Clone + Send + Sync + 'static,
    UF: Future<Output = std::io::Result<IO>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("never closed"),
            () = &mut shutdown => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, or a connection reset before it
                    // was accepted: wait a moment rather than spin.
                    tracing::warn!(%error, "the admin listener could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let upgrade = upgrade.clone();
        tokio::spawn(async move {
            let stream = match upgrade(stream).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%peer, %error, "admin connection refused");
                    drop(permit);
                    return;
                }
            };
            let service = hyper::service::service_fn(move |mut request: Request| {
                let handler = handler.clone();
                // Handlers that record who asked (the dashboard's audit
                // trail) read the peer's address from the extensions.
                request.extensions_mut().insert(Peer(peer));
                async move { Ok::<_, Infallible>(handler(request).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "admin connection ended with an error");
            }
            drop(permit);
        });
    }
}
