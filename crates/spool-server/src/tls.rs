//! TLS for the gRPC and admin listeners: rustls (ring provider) with
//! certificates from PEM files that are reloaded without a restart.
//!
//! The server keeps its own accept loop rather than tonic's
//! `ServerTlsConfig`, whose configuration is fixed when the server starts:
//! [`Certificates`] holds the current `rustls::ServerConfig` behind a lock,
//! each new connection's handshake takes the one in force, and
//! [`Certificates::reload`] swaps in a new one. Connections already open
//! keep the keys they were made with, so a swap drops none. A new set of
//! files that does not load (a key that does not match, a bad PEM) leaves
//! the old configuration in force; the caller logs the error.
//!
//! With a client CA bundle (`tls_client_ca`) every client must present a
//! certificate that chains to it (mutual TLS); the certificate's subject
//! common name ([`common_name`]) can then name the caller's principal.
//!
//! The peer listener of cluster mode takes the same node certificate with
//! the nodes' CA (`peer_tls_ca`) as its client CA; [`peer_client_config`]
//! is the other end, what the node presents to its peers when it calls
//! them and the CA it checks their certificates against.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;

/// A client has this long to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes under way at once; more connections wait to be accepted.
const HANDSHAKES_MAX: usize = 256;

/// Where the server's certificate, key and client CA bundle are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's own first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates client certificates must chain to; `None`
    /// asks for no client certificate.
    pub client_ca: Option<PathBuf>,
}

/// Files that do not make a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {reason}")]
    Read {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("{what} {path} holds no PEM {expected}")]
    Empty {
        what: &'static str,
        path: String,
        expected: &'static str,
    },
    #[error("TLS configuration from {cert} and {key}: {reason}")]
    Config {
        cert: String,
        key: String,
        reason: String,
    },
}

fn read_error(what: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::Read {
        what,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(what, path, e))?;
    if certificates.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.display().to_string(),
            expected: "CERTIFICATE",
        });
    }
    Ok(certificates)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a server configuration from the files. `alpn` lists the
/// protocols offered (`h2` for gRPC, `http/1.1` for the admin listener).
pub fn server_config(files: &TlsFiles, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = certificates("certificate", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| read_error("key", &files.key, e))?;
    let config_error = |reason: String| TlsError::Config {
        cert: files.cert.display().to_string(),
        key: files.key.display().to_string(),
        reason,
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in certificates("client CA bundle", path)? {
                roots
                    .add(certificate)
                    .map_err(|e| read_error("client CA bundle", path, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| read_error("client CA bundle", path, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| config_error(e.to_string()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The TLS settings of this node's calls to its peers: it presents its
/// own certificate (`cert`, `key`) and takes only a peer whose
/// certificate chains to `ca` (the nodes' CA) and names the host of the
/// peer address it called. Read at start and again each time the peer
/// listener's certificates reload (`cluster/mod.rs`), so that a rotated
/// certificate or CA bundle reaches outgoing connections too.
pub fn peer_client_config(
    cert: &Path,
    key: &Path,
    ca: &Path,
) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
    // Parsed here, so that a bad file fails at start with its name rather
    // than at the first peer call.
    certificates("peer CA bundle", ca)?;
    certificates("certificate", cert)?;
    PrivateKeyDer::from_pem_file(key).map_err(|e| read_error("key", key, e))?;
    let read = |what: &'static str, path: &Path| std::fs::read(path).map_err(|e| read_error(what, path, e));
    let identity = tonic::transport::Identity::from_pem(read("certificate", cert)?, read("key", key)?);
    Ok(tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read(
            "peer CA bundle",
            ca,
        )?))
        .identity(identity))
}

/// The TLS configuration in force for one listener, swapped on reload.
#[derive(Debug)]
pub struct Certificates {
    files: TlsFiles,
    alpn: Vec<&'static [u8]>,
    current: RwLock<Arc<rustls::ServerConfig>>,
    /// Counts the reloads put in force, for what follows them (the peer
    /// transport's client side, `cluster/mod.rs`).
    reloads: tokio::sync::watch::Sender<u64>,
}

impl Certificates {
    /// Loads the files; an error here stops the server from starting.
    pub fn load(files: TlsFiles, alpn: &[&'static [u8]]) -> Result<Certificates, TlsError> {
        let config = server_config(&files, alpn)?;
        Ok(Certificates {
            files,
            alpn: alpn.to_vec(),
            current: RwLock::new(config),
            reloads: tokio::sync::watch::Sender::new(0),
        })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Loads the files again and puts the result in force for new
    /// connections; on error the configuration in force stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files, &self.alpn)?;
        *self.current.write().expect("never poisoned") = config;
        self.reloads.send_modify(|count| *count += 1);
        Ok(())
    }

    /// Changes each time a reload is put in force.
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloads.subscribe()
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.current.read().expect("never poisoned")))
    }

    /// Runs the handshake of one accepted connection with the
    /// configuration in force, within [`HANDSHAKE_TIMEOUT`].
    pub async fn handshake<S>(&self, stream: S) -> io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor().accept(stream)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")),
        }
    }
}

/// Accepts connections from `listener`, passes each to `wrap` with its
/// peer's address (which may refuse it: it is then closed, unread), and
/// yields those whose TLS handshake succeeded. Each handshake runs in its own task, so a slow
/// client holds up no other; failed handshakes (plaintext to a TLS port, an
/// unknown CA, an expired certificate) are logged and dropped.
pub fn incoming<S, W>(
    listener: TcpListener,
    certificates: Arc<Certificates>,
    wrap: W,
) -> Pin<Box<dyn Stream<Item = io::Result<TlsStream<S>>> + Send>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    W: Fn(tokio::net::TcpStream, std::net::SocketAddr) -> Option<S> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    let permits = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
    tokio::spawn(async move {
        loop {
            let permit = Arc::clone(&permits).acquire_owned().await.expect("never closed");
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Without TCP_NODELAY small responses and HTTP/2 window
            // updates wait on Nagle and delayed ACKs.
            let _ = stream.set_nodelay(true);
            let Some(stream) = wrap(stream, peer) else {
                continue;
            };
            let certificates = Arc::clone(&certificates);
            let handed = sender.clone();
            tokio::spawn(async move {
                match certificates.handshake(stream).await {
                    Ok(tls) => {
                        let _ = handed.send(Ok(tls)).await;
                    }
                    Err(error) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                }
                drop(permit);
            });
            if sender.is_closed() {
                return;
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))
}

/// The subject common name of a DER certificate, if it has one that is
/// UTF-8 or printable text. The certificate was verified by rustls first;
/// this only reads it, and any malformed structure answers `None`.
pub fn common_name(certificate: &[u8]) -> Option<String> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version
    // (optional), serialNumber, signature, issuer, validity, subject, ...
    let (_, certificate, _) = der(certificate, 0x30)?;
    let (_, mut tbs, _) = der(certificate, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der(tbs, 0xa0)?.2;
    }
    let mut rest = tbs;
    for _ in 0..4 {
        // serialNumber, signature, issuer, validity
        let (_, _, after) = der_any(rest)?;
        rest = after;
    }
    let (_, mut subject, _) = der(rest, 0x30)?;
    let mut found = None;
    while !subject.is_empty() {
        let (_, set, after) = der(subject, 0x31)?;
        subject = after;
        let mut attributes = set;
        while !attributes.is_empty() {
            let (_, attribute, after) = der(attributes, 0x30)?;
            attributes = after;
            let (_, oid, value) = der(attribute, 0x06)?;
            // 2.5.4.3: id-at-commonName.
            if oid == [0x55, 0x04, 0x03] {
                let (tag, text, _) = der_any(value)?;
                // UTF8String, PrintableString, IA5String.
                if matches!(tag, 0x0c | 0x13 | 0x16) {
                    found = Some(std::str::from_utf8(text).ok()?.to_owned());
                }
            }
        }
    }
    found
}

/// One DER element with the expected tag: (tag, contents, what follows).
fn der(input: &[u8], tag: u8) -> Option<(u8, &[u8], &[u8])> {
    let element = der_any(input)?;
    (element.0 == tag).then_some(element)
}

/// One DER element of any single-byte tag.
fn der_any(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count]
            .iter()
            .fold(0usize, |length, &byte| (length << 8) | usize::from(byte));
        (length, &rest[count..])
    };
    if rest.len() < length {
        return None;
    }
    Some((tag, &rest[..length], &rest[length..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_name_is_read_from_generated_certificates() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Spool tests");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "billing-worker");
        let certificate = params.self_signed(&key).unwrap();
        assert_eq!(common_name(certificate.der()).as_deref(), Some("billing-worker"));
        let bare = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        let mut bare = bare;
        bare.distinguished_name = rcgen::DistinguishedName::new();
        let certificate = bare.self_signed(&key).unwrap();
        assert_eq!(common_name(certificate.der()), None);
    }

    #[test]
    fn garbage_never_panics() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "x");
        let der = params.self_signed(&key).unwrap().der().to_vec();
        for cut in 0..der.len() {
            let _ = common_name(&der[..cut]);
        }
        for flip in 0..der.len().min(400) {
            let mut changed = der.clone();
            changed[flip] ^= 0xff;
            let _ = common_name(&changed);
        }
        assert_eq!(common_name(&[]), None);
        assert_eq!(common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn bad_files_say_which_file() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        let files = TlsFiles {
            cert: cert.clone(),
            key: dir.path().join("missing.pem"),
            client_ca: None,
        };
        let error = server_config(&files, &[b"h2"]).unwrap_err().to_string();
        assert!(
            error.contains("cert.pem") && error.contains("no PEM CERTIFICATE"),
            "{error}"
        );
    }
}
