//! The edge of authentication: a tower layer that resolves each call's
//! [`Caller`] before tonic reads the request, and refuses a call to a
//! `spool.v1` service without valid credentials with UNAUTHENTICATED.
//!
//! Credentials, in order: an `authorization: Bearer <token>` header, then
//! the client certificate of a mutual-TLS connection (its subject common
//! name names a principal of the token file). Health and reflection
//! (`grpc.*`) stay open, so probes and tools need no token. Whether the
//! caller may do what it asks is each handler's check
//! ([`Access::check`](crate::access::Access::check)): only the handler
//! knows the topic or queue a call touches.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use spool_auth::Unauthenticated;
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower_layer::Layer;
use tower_service::Service;

use crate::access::{Access, Caller, Via};
use crate::status::unauthenticated;

/// The services that need credentials.
const PROTECTED_PREFIX: &str = "/spool.v1.";

#[derive(Debug, Clone)]
pub struct AuthLayer {
    access: Arc<Access>,
}

impl AuthLayer {
    pub fn new(access: Arc<Access>) -> Self {
        AuthLayer { access }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            inner,
            access: Arc::clone(&self.access),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Authenticate<S> {
    inner: S,
    access: Arc<Access>,
}

/// The client's address, over plain TCP or TLS.
pub fn peer_address(extensions: &http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<TcpConnectInfo>()
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .map(TlsConnectInfo::get_ref)
        })
        .and_then(TcpConnectInfo::remote_addr)
}

/// The subject common name of a verified client certificate.
fn certificate_name(extensions: &http::Extensions) -> Option<String> {
    let certificates = extensions.get::<TlsConnectInfo<TcpConnectInfo>>()?.peer_certs()?;
    crate::tls::common_name(certificates.first()?.as_ref())
}

impl<S> Authenticate<S> {
    fn resolve(&self, request: &http::Request<Body>) -> Result<Caller, Unauthenticated> {
        let address = peer_address(request.extensions());
        let mut caller = Caller {
            principal: None,
            address,
            via: Via::Grpc,
        };
        if !self.access.enabled() || !request.uri().path().starts_with(PROTECTED_PREFIX) {
            return Ok(caller);
        }
        let principal = match request.headers().get(http::header::AUTHORIZATION) {
            Some(value) => self.access.authenticate_header(value.as_bytes())?,
            None => {
                let name = certificate_name(request.extensions()).ok_or(Unauthenticated::Missing)?;
                self.access
                    .authenticate_certificate(&name)
                    .ok_or(Unauthenticated::Invalid)?
            }
        };
        caller.principal = Some(principal);
        Ok(caller)
    }
}

impl<S> Service<http::Request<Body>> for Authenticate<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Self::Response, Self::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        match self.resolve(&request) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Either::Left(self.inner.call(request))
            }
            Err(refusal) => {
                tracing::debug!(path = request.uri().path(), %refusal, "call refused: not authenticated");
                Either::Right(ready(Ok(unauthenticated(refusal).into_http())))
            }
        }
    }
}
