//! `spool_open_connections`: TCP connections open on the gRPC listener.
//!
//! Each accepted stream is wrapped in a [`CountedStream`] that adds one to a
//! gauge when it is accepted and takes it off when hyper drops the
//! connection. The wrapper hands tonic the stream's own connection info, so
//! request extensions (the peer address the in-flight limits use) are as
//! before.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The number of open connections.
#[derive(Debug, Default)]
pub struct OpenConnections(AtomicU64);

impl OpenConnections {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Wraps an accepted stream, counting it until it is dropped.
    pub fn track(self: &Arc<Self>, stream: TcpStream) -> CountedStream {
        self.0.fetch_add(1, Ordering::Relaxed);
        CountedStream {
            stream,
            open: Arc::clone(self),
        }
    }
}

/// An accepted connection, counted while it lives.
#[derive(Debug)]
pub struct CountedStream {
    stream: TcpStream,
    open: Arc<OpenConnections>,
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.open.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connected for CountedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_counts_until_it_is_dropped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let client = tokio::spawn(async move { TcpStream::connect(address).await.unwrap() });
        let (accepted, _) = listener.accept().await.unwrap();
        let open = Arc::new(OpenConnections::default());
        let counted = open.track(accepted);
        assert_eq!(open.get(), 1);
        assert_eq!(
            counted.connect_info().remote_addr(),
            Some(client.await.unwrap().local_addr().unwrap())
        );
        drop(counted);
        assert_eq!(open.get(), 0);
    }
}
