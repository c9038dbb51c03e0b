//! Bounds on the connections a listener keeps, against clients that open
//! too many or hold them without using them.
//!
//! [`ConnectionGate`] admits an accepted connection only while fewer than
//! `total_max` are open, and fewer than `per_address_max` from the same
//! client address; a connection beyond either is closed at once, before a
//! byte is read, and counted as refused by its reason. An admitted one is
//! wrapped in a [`GuardedStream`], which frees its place when dropped and
//! closes it (a read error the HTTP/2 server ends the connection on) when
//! the client sends fewer than [`HANDSHAKE_BYTES`] bytes in its first
//! `handshake_timeout` (a slow-loris opening, or a port scan), or nothing
//! at all for `idle_timeout` (a half-open connection whose peer is gone;
//! a live client answers the server's HTTP/2 keepalive pings, so it never
//! goes quiet that long).
//!
//! Per-connection bounds (concurrent streams, header size, windows) are the
//! HTTP/2 server's settings, set where the listener is built.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

/// Bytes a new connection must send within its handshake timeout: the
/// HTTP/2 client preface is 24, a TLS ClientHello more.
pub const HANDSHAKE_BYTES: usize = 24;

/// The bounds of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub total_max: usize,
    pub per_address_max: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Why a connection was closed unserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `total_max` connections were open.
    Total,
    /// `per_address_max` connections from its address were open.
    PerAddress,
}

impl Refusal {
    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Total => "total",
            Refusal::PerAddress => "per_address",
        }
    }
}

/// What the gate did, for metrics.
#[derive(Debug, Default)]
pub struct GateCounters {
    pub refused_total: AtomicU64,
    pub refused_per_address: AtomicU64,
    pub handshake_timeouts: AtomicU64,
    pub idle_timeouts: AtomicU64,
}

/// Counts open connections in total and per address; see the module
/// documentation.
#[derive(Debug)]
pub struct ConnectionGate {
    limits: ConnectionLimits,
    open: Mutex<Open>,
    pub counters: GateCounters,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

impl ConnectionGate {
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(ConnectionGate {
            limits,
            open: Mutex::new(Open::default()),
            counters: GateCounters::default(),
        })
    }

    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a place for a connection from `address`, or says why there is
    /// none (and counts the refusal).
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Place, Refusal> {
        let mut open = self.lock();
        let refusal = if open.total >= self.limits.total_max {
            Some(Refusal::Total)
        } else if open.by_address.get(&address).copied().unwrap_or(0) >= self.limits.per_address_max {
            Some(Refusal::PerAddress)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            drop(open);
            let counter = match refusal {
                Refusal::Total => &self.counters.refused_total,
                Refusal::PerAddress => &self.counters.refused_per_address,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            return Err(refusal);
        }
        open.total += 1;
        *open.by_address.entry(address).or_insert(0) += 1;
        Ok(Place {
            gate: Arc::clone(self),
            address,
        })
    }

    /// Admits `stream` from `address` and guards it, or refuses it (the
    /// caller drops it, which closes it).
    pub fn guard<S>(self: &Arc<Self>, stream: S, address: IpAddr) -> Result<GuardedStream<S>, Refusal> {
        let place = self.admit(address)?;
        Ok(GuardedStream::new(stream, place))
    }
}

/// A connection's place at the gate; given back when dropped.
#[derive(Debug)]
pub struct Place {
    gate: Arc<ConnectionGate>,
    address: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.gate.lock();
        open.total -= 1;
        if let Some(count) = open.by_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.by_address.remove(&self.address);
            }
        }
    }
}

/// An admitted connection: holds its place and enforces the handshake and
/// idle timeouts on reads.
#[derive(Debug)]
pub struct GuardedStream<S> {
    stream: S,
    place: Place,
    /// Bytes read so far, up to `HANDSHAKE_BYTES`.
    handshake_read: usize,
    handshake: Option<Pin<Box<Sleep>>>,
    /// Fires at the idle deadline as it was when last armed; the deadline
    /// itself is `last_read + idle_timeout`, moved on only when the timer
    /// fires (resetting a timer at every read of a busy connection would
    /// cost more than the check).
    idle: Pin<Box<Sleep>>,
    last_read: Instant,
}

impl<S> GuardedStream<S> {
    fn new(stream: S, place: Place) -> Self {
        let limits = place.gate.limits;
        let now = Instant::now();
        GuardedStream {
            stream,
            handshake: Some(Box::pin(tokio::time::sleep_until(now + limits.handshake_timeout))),
            idle: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
            last_read: now,
            handshake_read: 0,
            place,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    fn timed_out(&self, what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, format!("closed: {what}"))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            let read = buf.filled().len() - before;
            if read > 0 {
                if this.handshake.is_some() {
                    this.handshake_read += read;
                    if this.handshake_read >= HANDSHAKE_BYTES {
                        this.handshake = None;
                    }
                }
                this.last_read = Instant::now();
            }
            return polled;
        }
        if let Poll::Ready(Err(_)) = &polled {
            return polled;
        }
        // Nothing to read: a deadline that passed closes the connection.
        if let Some(handshake) = this.handshake.as_mut()
            && handshake.as_mut().poll(cx).is_ready()
        {
            let counters = &this.place.gate.counters;
            counters.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
            return Poll::Ready(Err(this.timed_out("too few bytes within the handshake timeout")));
        }
        let idle_timeout = this.place.gate.limits.idle_timeout;
        while this.idle.as_mut().poll(cx).is_ready() {
            let deadline = this.last_read + idle_timeout;
            if Instant::now() >= deadline {
                let counters = &this.place.gate.counters;
                counters.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                return Poll::Ready(Err(this.timed_out("nothing received within the idle timeout")));
            }
            // Something was read since the timer was armed: arm it for the
            // deadline that reading set, and poll it so it wakes us.
            this.idle.as_mut().reset(deadline);
        }
        Poll::Pending
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
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
}

impl<S: Connected> Connected for GuardedStream<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            total_max: 3,
            per_address_max: 2,
            handshake_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(1_500),
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[test]
    fn places_are_bounded_in_total_and_per_address_and_given_back() {
        let gate = ConnectionGate::new(limits());
        let a1 = gate.admit(ip(1)).unwrap();
        let _a2 = gate.admit(ip(1)).unwrap();
        assert_eq!(gate.admit(ip(1)).unwrap_err(), Refusal::PerAddress);
        let _b1 = gate.admit(ip(2)).unwrap();
        assert_eq!(gate.admit(ip(3)).unwrap_err(), Refusal::Total);
        assert_eq!(gate.open(), 3);
        drop(a1);
        assert_eq!(gate.open(), 2);
        let _a3 = gate.admit(ip(1)).expect("a place given back is free again");
        let counters = &gate.counters;
        assert_eq!(counters.refused_per_address.load(Ordering::Relaxed), 1);
        assert_eq!(counters.refused_total.load(Ordering::Relaxed), 1);
    }

    /// A guarded loopback connection: the server side, read by a task
    /// that reports how its reads ended, and the client side.
    async fn pair(gate: &Arc<ConnectionGate>) -> (tokio::task::JoinHandle<io::Result<usize>>, TcpStream) {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        let mut guarded = gate.guard(server, peer.ip()).unwrap();
        let reader = tokio::spawn(async move {
            let mut total = 0;
            let mut buf = [0u8; 64];
            loop {
                match guarded.read(&mut buf).await {
                    Ok(0) => return Ok(total),
                    Ok(n) => total += n,
                    Err(error) => return Err(error),
                }
            }
        });
        (reader, client)
    }

    #[tokio::test]
    async fn a_connection_that_sends_too_little_at_first_is_closed() {
        let gate = ConnectionGate::new(limits());
        let (reader, mut client) = pair(&gate).await;
        client.write_all(b"PRI * HTTP/2.0").await.unwrap(); // 14 of 24 bytes
        let ended = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ended.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_eq!(gate.counters.handshake_timeouts.load(Ordering::Relaxed), 1);
        assert_eq!(gate.open(), 0, "the place is given back");
    }

    #[tokio::test]
    async fn a_connection_that_goes_quiet_is_closed_and_a_talking_one_is_not() {
        let gate = ConnectionGate::new(limits());
        let (quiet, mut quiet_client) = pair(&gate).await;
        let (talking, mut talking_client) = pair(&gate).await;
        quiet_client.write_all(&[0u8; 24]).await.unwrap();
        talking_client.write_all(&[0u8; 24]).await.unwrap();
        let started = Instant::now();
        // The talking client sends a byte every 300 ms for 3 s, twice the
        // idle timeout.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            talking_client.write_all(b"x").await.unwrap();
        }
        let ended = tokio::time::timeout(Duration::from_secs(5), quiet)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ended.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(1_400));
        assert!(!talking.is_finished(), "a client that keeps sending stays");
        drop(talking_client);
        let read = talking.await.unwrap().unwrap();
        assert_eq!(read, 34);
        assert_eq!(gate.counters.idle_timeouts.load(Ordering::Relaxed), 1);
        assert_eq!(gate.open(), 0);
    }
}
