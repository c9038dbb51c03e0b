//! The gRPC listener's bounds against a real `spoold`: connections in total
//! and per client address, a slow opening (slow-loris), a connection gone
//! quiet, concurrent calls per connection and the size of a call's
//! metadata. Each bound holds, and the server goes on serving everyone
//! else. Clients come from different loopback addresses (127.0.0.x).
//!
//! Run `cargo build -p spool-server` first: the binary is taken from
//! `target/debug`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{Spoold, scrape};
use spool_proto::v1::log_client::LogClient;
use spool_proto::v1::{CreateTopicRequest, FetchRequest, ListTopicsRequest};
use tonic::transport::Endpoint;

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A TCP connection to `server` from `from`, which sent `first`.
fn raw(server: &Spoold, from: IpAddr, first: &[u8]) -> std::net::TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        socket.connect(server.addr).await.unwrap().into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    let mut stream = stream;
    stream.write_all(first).unwrap();
    stream
}

/// True when the server closes `stream` within `within` (whatever it sent
/// before, such as its HTTP/2 settings, is read and dropped).
fn closed_within(stream: &mut std::net::TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// A gRPC client connecting from `from`.
async fn client_from(
    server: &Spoold,
    from: IpAddr,
) -> Result<LogClient<tonic::transport::Channel>, tonic::transport::Error> {
    let channel = Endpoint::from_shared(server.url())
        .unwrap()
        .local_address(Some(from))
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(LogClient::new(channel))
}

async fn serves(client: &mut LogClient<tonic::transport::Channel>) -> bool {
    client.list_topics(ListTopicsRequest::default()).await.is_ok()
}

fn counter(server: &Spoold, name: &str, reason: &str) -> f64 {
    let page = scrape::get(server.admin_addr.expect("admin listener"), "/metrics");
    scrape::value(&scrape::parse(&page.body), name, &[("reason", reason)])
}

#[test]
fn connections_beyond_the_bounds_are_closed_and_others_are_served() {
    let server = Spoold::start_temp(&["connections_per_address_max=3", "connections_max=5"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut from_one: Vec<_> = (0..3).map(|_| raw(&server, loopback(1), PREFACE)).collect();
    for stream in &mut from_one {
        assert!(
            !closed_within(stream, Duration::from_millis(200)),
            "within the bounds"
        );
    }
    let mut fourth = raw(&server, loopback(1), PREFACE);
    assert!(
        closed_within(&mut fourth, Duration::from_secs(2)),
        "a fourth from one address is closed"
    );
    assert_eq!(
        counter(&server, "spool_connections_refused_total", "per_address"),
        1.0
    );

    // Another address is served: its client is the fourth connection.
    let mut other = runtime
        .block_on(client_from(&server, loopback(2)))
        .expect("connect");
    assert!(runtime.block_on(serves(&mut other)));
    let mut fifth = raw(&server, loopback(3), PREFACE);
    assert!(
        !closed_within(&mut fifth, Duration::from_millis(200)),
        "the fifth in total"
    );
    let mut sixth = raw(&server, loopback(4), PREFACE);
    assert!(
        closed_within(&mut sixth, Duration::from_secs(2)),
        "a sixth in total is closed"
    );
    assert_eq!(counter(&server, "spool_connections_refused_total", "total"), 1.0);
    assert!(
        runtime.block_on(serves(&mut other)),
        "connections already open go on"
    );

    // A closed connection gives its place back.
    drop(from_one.pop());
    drop(fifth);
    std::thread::sleep(Duration::from_millis(200));
    let mut again = raw(&server, loopback(1), PREFACE);
    assert!(!closed_within(&mut again, Duration::from_millis(300)));
}

#[test]
fn a_slow_opening_and_a_quiet_connection_are_closed_and_the_server_serves_on() {
    let server = Spoold::start_temp(&[
        "connection_handshake_timeout_ms=1s",
        "connection_idle_timeout_ms=2s",
    ]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    // Slow-loris: ten bytes of the preface, then nothing.
    let mut slow = raw(&server, loopback(1), &PREFACE[..10]);
    // A whole preface, then nothing: past the handshake, closed when idle.
    let mut quiet = raw(&server, loopback(1), PREFACE);
    assert!(closed_within(&mut slow, Duration::from_secs(5)));
    let slow_closed = started.elapsed();
    assert!(slow_closed >= Duration::from_millis(900), "{slow_closed:?}");
    assert!(closed_within(&mut quiet, Duration::from_secs(5)));
    let quiet_closed = started.elapsed();
    assert!(quiet_closed >= Duration::from_millis(1_900), "{quiet_closed:?}");
    assert_eq!(
        counter(&server, "spool_connections_timed_out_total", "handshake"),
        1.0
    );
    assert_eq!(counter(&server, "spool_connections_timed_out_total", "idle"), 1.0);

    let mut client = runtime
        .block_on(client_from(&server, loopback(2)))
        .expect("connect");
    assert!(runtime.block_on(serves(&mut client)));
}

#[test]
fn calls_per_connection_and_metadata_size_are_bounded() {
    let server = Spoold::start_temp(&["streams_per_connection_max=2", "request_header_bytes_max=4KiB"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = client_from(&server, loopback(1)).await.expect("connect");
        let create = CreateTopicRequest {
            name: "quiet".into(),
            partitions: 1,
            ..Default::default()
        };
        client.create_topic(create).await.expect("create");

        // Three long polls of one second on one connection that takes two
        // calls at a time: the third starts when one of the first ends.
        let started = Instant::now();
        let polls = (0..3).map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let fetch = FetchRequest {
                    topic: "quiet".into(),
                    partition: 0,
                    offset: 0,
                    max_wait_ms: 1_000,
                    ..Default::default()
                };
                client.fetch(fetch).await.expect("fetch");
            })
        });
        for poll in polls.collect::<Vec<_>>() {
            poll.await.unwrap();
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1_900),
            "three calls ran at once: {elapsed:?}"
        );

        // Metadata over the bound is refused; the server serves on.
        let mut request = tonic::Request::new(ListTopicsRequest::default());
        let big = "x".repeat(8 << 10);
        request.metadata_mut().insert("x-big", big.parse().unwrap());
        assert!(
            client.list_topics(request).await.is_err(),
            "8 KiB of metadata over a 4 KiB bound"
        );
        let mut fresh = client_from(&server, loopback(1)).await.expect("connect");
        assert!(serves(&mut fresh).await);
    });
}
