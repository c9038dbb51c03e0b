//! Security end to end against real `spoold` processes: bearer tokens
//! (none, wrong, revoked without a restart, garbage), the permission of
//! each RPC family, internal topics, the audit trail read back with
//! `spool audit`, TLS refusals (plaintext, wrong CA, missing or expired
//! client certificate), a certificate swap under load, secure defaults and
//! `spool init-security`. Certificates are made here with rcgen.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Spoold, binary, scrape};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use spool_auth::{Grant, Tokens};
use spool_client::{Client, ClientOptions, Code, Error, HistoryQuery, NewTopic, proto};

/// A token file with one token per (principal, grants); returns the
/// tokens in the same order.
fn token_file(path: &Path, principals: &[(&str, &[&str])]) -> Vec<String> {
    let mut tokens = Tokens::load(path).unwrap();
    let created = principals
        .iter()
        .map(|(name, grants)| {
            let grants = grants.iter().map(|g| Grant::parse(g).unwrap()).collect();
            tokens.create(name, grants, 1).unwrap()
        })
        .collect();
    tokens.save(path).unwrap();
    created
}

fn options(token: Option<&str>) -> ClientOptions {
    ClientOptions {
        token: token.map(str::to_owned),
        connect_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    }
}

async fn client(server: &Spoold, token: Option<&str>) -> Client {
    Client::connect_with(server.url(), options(token)).await.unwrap()
}

fn code(error: &Error) -> Code {
    error.status().map(|s| s.code()).unwrap_or(Code::Unknown)
}

fn message(error: &Error) -> String {
    error
        .status()
        .map(|s| s.message().to_owned())
        .unwrap_or_else(|| error.to_string())
}

async fn produce(client: &Client, topic: &str) -> Result<(), Error> {
    client
        .produce(proto::ProduceRequest {
            topic: topic.to_owned(),
            partition: Some(0),
            data: Some(proto::produce_request::Data::Records(proto::RecordList {
                records: vec![proto::Record {
                    value: Some(bytes::Bytes::from_static(b"v")),
                    ..Default::default()
                }],
            })),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

fn tls_server_with(dir: &Path, pki: &Pki, extra: &[&str]) -> Spoold {
    let mut settings = vec![
        format!("tls_cert={}", pki.server_cert.display()),
        format!("tls_key={}", pki.server_key.display()),
    ];
    settings.extend(extra.iter().map(|s| s.to_string()));
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    Spoold::start(dir, &settings)
}

#[tokio::test]
async fn tokens_none_wrong_and_revoked_are_unauthenticated() {
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("tokens.toml");
    let tokens = token_file(
        &file,
        &[
            ("root", &["cluster=admin", "topic:*=*"]),
            ("gone", &["topic:*=*"]),
        ],
    );
    let server = Spoold::start(
        &scratch.path().join("data"),
        &[&format!("tokens_file={}", file.display())],
    );

    let anonymous = client(&server, None).await;
    let error = anonymous.list_topics(false).await.unwrap_err();
    assert_eq!(code(&error), Code::Unauthenticated, "{error}");
    assert!(message(&error).contains("authorization: Bearer"), "{error}");
    let wrong = format!("{}0", &tokens[0][..tokens[0].len() - 1]);
    let wrong = if wrong == tokens[0] {
        format!("{}1", &tokens[0][..tokens[0].len() - 1])
    } else {
        wrong
    };
    let error = client(&server, Some(&wrong))
        .await
        .list_topics(false)
        .await
        .unwrap_err();
    assert_eq!(code(&error), Code::Unauthenticated, "{error}");

    let gone = client(&server, Some(&tokens[1])).await;
    gone.list_topics(false).await.unwrap();
    // Revoked in the file by the local CLI: the server notices the change
    // and stops accepting the token, without a restart.
    let id = &tokens[1][6..14];
    let revoke = Command::new(binary("spool"))
        .args(["token", "revoke", id, "--file"])
        .arg(&file)
        .env_remove("SPOOL_SERVER")
        .output()
        .unwrap();
    assert!(revoke.status.success(), "{revoke:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match gone.list_topics(false).await {
            Err(error) if code(&error) == Code::Unauthenticated => break,
            other => assert!(
                Instant::now() < deadline,
                "still accepted after revocation: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client(&server, Some(&tokens[0]))
        .await
        .list_topics(false)
        .await
        .unwrap();

    // Health stays open; /metrics needs a cluster admin's token.
    let admin = server.admin_addr.unwrap();
    assert_eq!(scrape::get(admin, "/healthz").status, 200);
    assert_eq!(scrape::get(admin, "/metrics").status, 401);
    let bearer = format!("Bearer {}", tokens[0]);
    assert_eq!(
        scrape::request(admin, "GET", "/metrics", &[("authorization", &bearer)]).status,
        200
    );
}

#[tokio::test]
async fn each_rpc_family_needs_its_permission() {
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("tokens.toml");
    let tokens = token_file(
        &file,
        &[
            ("root", &["cluster=admin", "topic:*=*", "queue:*=*"]),
            ("producer", &["topic:orders=produce"]),
            ("consumer", &["topic:orders=consume"]),
            ("enqueuer", &["queue:emails=enqueue"]),
            ("worker", &["queue:emails=work"]),
        ],
    );
    let server = Spoold::start(
        &scratch.path().join("data"),
        &[&format!("tokens_file={}", file.display())],
    );
    let root = client(&server, Some(&tokens[0])).await;
    let producer = client(&server, Some(&tokens[1])).await;
    let consumer = client(&server, Some(&tokens[2])).await;
    let enqueuer = client(&server, Some(&tokens[3])).await;
    let worker = client(&server, Some(&tokens[4])).await;
    root.create_topic(NewTopic::new("orders", 1)).await.unwrap();

    let denied = |result: Result<(), Error>, missing: &str| {
        let error = result.unwrap_err();
        assert_eq!(code(&error), Code::PermissionDenied, "{error}");
        assert!(message(&error).contains(missing), "{missing}: {error}");
    };
    // Log: produce, fetch, admin.
    produce(&producer, "orders").await.unwrap();
    denied(
        produce(&consumer, "orders").await,
        "lacks produce on topic \"orders\"",
    );
    let fetch = |client: Client| async move {
        client
            .fetch(proto::FetchRequest {
                topic: "orders".into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
    };
    fetch(consumer.clone()).await.unwrap();
    denied(fetch(producer.clone()).await, "lacks consume on topic \"orders\"");
    denied(
        producer.create_topic(NewTopic::new("mine", 1)).await.map(|_| ()),
        "lacks admin on the cluster",
    );
    denied(
        producer.delete_topic("orders").await,
        "lacks admin on the cluster",
    );
    let listed = consumer.list_topics(false).await.unwrap();
    assert_eq!(listed.len(), 1, "only the topics a principal may use are listed");

    // Jobs: enqueue, work, admin.
    let jobs = |client: &Client| client.jobs_client();
    let enqueue = |client: Client| async move {
        client
            .jobs_client()
            .enqueue(proto::EnqueueRequest {
                queue: "emails".into(),
                payload: bytes::Bytes::from_static(b"{}"),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(Error::from)
    };
    enqueue(enqueuer.clone()).await.unwrap();
    denied(enqueue(worker.clone()).await, "lacks enqueue on queue \"emails\"");
    let claim = |client: Client| async move {
        client
            .jobs_client()
            .claim(proto::ClaimRequest {
                queues: vec!["emails".into()],
                max_jobs: 1,
                ..Default::default()
            })
            .await
            .map(|answer| answer.into_inner().jobs)
            .map_err(Error::from)
    };
    let claimed = claim(worker.clone()).await.unwrap();
    assert_eq!(claimed.len(), 1);
    denied(
        claim(enqueuer.clone()).await.map(|_| ()),
        "lacks work on queue \"emails\"",
    );
    // Completing a job needs work on its queue, looked up by its id.
    let complete = jobs(&enqueuer)
        .complete(proto::CompleteRequest {
            job_id: claimed[0].job_id.clone(),
            lease_token: claimed[0].lease_token.clone(),
            ..Default::default()
        })
        .await
        .map(|_| ())
        .map_err(Error::from);
    denied(complete, "lacks work on queue \"emails\"");
    let purge = jobs(&worker)
        .purge_dead(proto::PurgeDeadRequest {
            target: Some(proto::purge_dead_request::Target::Filter(proto::DeadJobFilter {
                queue: "emails".into(),
                ..Default::default()
            })),
            dry_run: false,
        })
        .await
        .map(|_| ())
        .map_err(Error::from);
    denied(purge, "lacks admin on queue \"emails\"");
    let pause = jobs(&worker)
        .pause_queue(proto::PauseQueueRequest {
            queue: "emails".into(),
        })
        .await
        .map(|_| ())
        .map_err(Error::from);
    denied(pause, "lacks admin on queue \"emails\"");
    let configure = jobs(&worker)
        .configure_queue(proto::ConfigureQueueRequest {
            queue: "emails".into(),
            set: Some(proto::QueueConfig {
                concurrency_limit: Some(1_000_000),
                ..Default::default()
            }),
            reset: vec![],
        })
        .await
        .map(|_| ())
        .map_err(Error::from);
    denied(configure, "lacks admin on queue \"emails\"");
    let delete = jobs(&worker)
        .delete_queue(proto::DeleteQueueRequest {
            queue: "emails".into(),
            force: true,
        })
        .await
        .map(|_| ())
        .map_err(Error::from);
    denied(delete, "lacks admin on queue \"emails\"");

    // Metrics and Admin: the cluster's admin.
    denied(
        producer
            .metrics_history(HistoryQuery {
                series: vec!["spool_topics".into()],
                ..Default::default()
            })
            .await
            .map(|_| ()),
        "lacks admin on the cluster",
    );
    denied(
        producer.list_tokens().await.map(|_| ()),
        "lacks admin on the cluster",
    );
    assert_eq!(root.list_tokens().await.unwrap().len(), 5);
}

#[tokio::test]
async fn internal_topics_are_unreachable_even_with_every_grant() {
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("tokens.toml");
    let tokens = token_file(&file, &[("root", &["cluster=admin", "topic:*=*", "queue:*=*"])]);
    let server = Spoold::start(
        &scratch.path().join("data"),
        &[&format!("tokens_file={}", file.display())],
    );
    let root = client(&server, Some(&tokens[0])).await;
    for topic in ["__jobs", "__audit", "__checkpoints"] {
        let error = root
            .fetch(proto::FetchRequest {
                topic: topic.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(code(&error), Code::PermissionDenied, "{topic}: {error}");
        assert!(message(&error).contains("is internal"), "{error}");
        let error = produce(&root, topic).await.unwrap_err();
        assert_eq!(code(&error), Code::PermissionDenied, "{topic}: {error}");
    }
}

#[tokio::test]
async fn admin_actions_are_audited_and_read_back_with_spool_audit() {
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("tokens.toml");
    let tokens = token_file(&file, &[("root", &["cluster=admin", "topic:*=*", "queue:*=*"])]);
    let server = Spoold::start(
        &scratch.path().join("data"),
        &[&format!("tokens_file={}", file.display())],
    );
    let root = client(&server, Some(&tokens[0])).await;
    root.create_topic(NewTopic::new("orders", 2)).await.unwrap();
    root.delete_topic("orders").await.unwrap();
    root.jobs_client()
        .enqueue(proto::EnqueueRequest {
            queue: "emails".into(),
            payload: bytes::Bytes::from_static(b"{}"),
            ..Default::default()
        })
        .await
        .unwrap();
    root.jobs_client()
        .pause_queue(proto::PauseQueueRequest {
            queue: "emails".into(),
        })
        .await
        .unwrap();
    let token = &tokens[0];
    let created = server
        .spool(&[
            "--token",
            token,
            "token",
            "create",
            "billing",
            "--grant",
            "topic:orders=consume",
        ])
        .ok();
    assert!(created.trim().starts_with("spool_"), "{created}");

    let records = server.json_lines(&["--token", token, "audit", "--format", "json"]);
    let actions: Vec<&str> = records.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        ["create_token", "pause_queue", "delete_topic", "create_topic"]
    );
    for record in &records {
        assert_eq!(record["principal"], "root", "{record}");
        assert_eq!(record["address"], "127.0.0.1", "{record}");
        assert_eq!(record["via"], "grpc", "{record}");
    }
    assert_eq!(records[2]["target"]["topic"], "orders");
    assert_eq!(records[0]["target"]["principal"], "billing");
    let only = server.json_lines(&[
        "--token",
        token,
        "audit",
        "--format",
        "json",
        "--action",
        "delete_topic",
    ]);
    assert_eq!(only.len(), 1);
    let none = server.json_lines(&[
        "--token",
        token,
        "audit",
        "--format",
        "json",
        "--principal",
        "billing",
    ]);
    assert!(none.is_empty(), "{none:?}");
    // Without a token the trail is not readable.
    let refused = server.fails(&["audit"]);
    assert!(
        refused.contains("authorization: Bearer")
            || refused.contains("Unauthenticated")
            || refused.contains("token"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_header_garbage_is_always_unauthenticated() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("tokens.toml");
    let tokens = token_file(&file, &[("root", &["cluster=admin"])]);
    let server = Spoold::start(
        &scratch.path().join("data"),
        &[&format!("tokens_file={}", file.display())],
    );
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let strategy = prop_oneof![
        "[ -~]{0,120}",
        "(Bearer|bearer|BEARER|Basic) [ -~]{0,100}",
        "Bearer spool_[0-9a-f_]{0,80}",
        Just(format!("Bearer {}x", tokens[0])),
        Just(format!("Bearer {}", &tokens[0][..20])),
    ];
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        runner.run(&strategy, |header| {
            let Ok(value) = tonic::metadata::AsciiMetadataValue::try_from(header.as_str()) else {
                return Ok(());
            };
            let mut request = tonic::Request::new(proto::ListTopicsRequest::default());
            request.metadata_mut().insert("authorization", value);
            let mut log = proto::log_client::LogClient::new(channel.clone());
            let answer = handle.block_on(log.list_topics(request));
            let status = answer.expect_err("garbage authenticated");
            prop_assert_eq!(status.code(), Code::Unauthenticated, "{:?}: {:?}", header, status);
            Ok(())
        })
    });
    result.unwrap();
    // The server is still healthy and answers a good token.
    client(&server, Some(&tokens[0]))
        .await
        .list_topics(false)
        .await
        .unwrap();
}

/// A CA and certificates it signs, as PEM files in a directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

struct Authority {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn authority(name: &str) -> Authority {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).unwrap().pem();
    Authority { params, key, pem }
}

/// A leaf certificate and key signed by `ca`; `expired` puts its validity
/// in the past.
fn leaf(ca: &Authority, common_name: &str, expired: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.subject_alt_names = vec![
        rcgen::SanType::DnsName("localhost".try_into().unwrap()),
        rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()),
    ];
    params.distinguished_name.push(DnType::CommonName, common_name);
    if expired {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    let issuer = Issuer::new(ca.params.clone(), &ca.key);
    (
        params.signed_by(&key, &issuer).unwrap().pem(),
        key.serialize_pem(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn pki(ca: &Authority) -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = leaf(ca, "localhost", false);
    Pki {
        ca: write(dir.path(), "ca.pem", &ca.pem),
        server_cert: write(dir.path(), "server.pem", &cert),
        server_key: write(dir.path(), "server.key", &key),
        dir,
    }
}

fn tls_options(ca: &Path, token: Option<&str>) -> ClientOptions {
    ClientOptions {
        tls_ca: Some(ca.to_owned()),
        ..options(token)
    }
}

async fn tls_call(url: &str, options: ClientOptions) -> Result<Vec<spool_client::TopicConfig>, Error> {
    let client = Client::connect_with(url.to_owned(), options).await?;
    client.list_topics(false).await
}

#[tokio::test]
async fn tls_refuses_plaintext_wrong_ca_expired_and_missing_client_certificates() {
    let ca = authority("Spool test CA");
    let other = authority("Another CA");
    let pki = pki(&ca);
    let dir = pki.dir.path();
    let file = dir.join("tokens.toml");
    let tokens = token_file(&file, &[("alice", &["topic:orders=produce"])]);
    let data = tempfile::tempdir().unwrap();
    let server = tls_server_with(
        data.path(),
        &pki,
        &[
            &format!("tls_client_ca={}", pki.ca.display()),
            &format!("tokens_file={}", file.display()),
        ],
    );
    let url = format!("https://localhost:{}", server.addr.port());
    let (alice_cert, alice_key) = leaf(&ca, "alice", false);
    let alice = ClientOptions {
        tls_cert: Some(write(dir, "alice.pem", &alice_cert)),
        tls_key: Some(write(dir, "alice.key", &alice_key)),
        ..tls_options(&pki.ca, None)
    };

    // Plaintext to the TLS port.
    assert!(tls_call(&server.url(), options(Some(&tokens[0]))).await.is_err());
    // A CA that did not sign the server's certificate.
    let wrong_ca = write(dir, "other.pem", &other.pem);
    assert!(
        tls_call(
            &url,
            ClientOptions {
                tls_ca: Some(wrong_ca),
                ..alice.clone()
            }
        )
        .await
        .is_err()
    );
    // No client certificate, even with a valid token.
    assert!(
        tls_call(&url, tls_options(&pki.ca, Some(&tokens[0])))
            .await
            .is_err()
    );
    // An expired client certificate.
    let (old_cert, old_key) = leaf(&ca, "alice", true);
    let expired = ClientOptions {
        tls_cert: Some(write(dir, "old.pem", &old_cert)),
        tls_key: Some(write(dir, "old.key", &old_key)),
        ..alice.clone()
    };
    assert!(tls_call(&url, expired).await.is_err());
    // A client certificate from another CA.
    let (stranger_cert, stranger_key) = leaf(&other, "alice", false);
    let stranger = ClientOptions {
        tls_cert: Some(write(dir, "stranger.pem", &stranger_cert)),
        tls_key: Some(write(dir, "stranger.key", &stranger_key)),
        ..alice.clone()
    };
    assert!(tls_call(&url, stranger).await.is_err());

    // The certificate's subject names the principal: no token needed.
    let client = Client::connect_with(url.clone(), alice).await.unwrap();
    client.list_topics(false).await.unwrap();
    let error = client.create_topic(NewTopic::new("orders", 1)).await.unwrap_err();
    assert!(
        message(&error).contains("principal \"alice\" lacks admin on the cluster"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_keeps_producing_across_a_certificate_swap() {
    let ca = authority("First CA");
    let next = authority("Second CA");
    let pki = pki(&ca);
    let data = tempfile::tempdir().unwrap();
    let server = tls_server_with(data.path(), &pki, &[]);
    let url = format!("https://localhost:{}", server.addr.port());
    let client = Client::connect_with(url.clone(), tls_options(&pki.ca, None))
        .await
        .unwrap();
    client.create_topic(NewTopic::new("orders", 1)).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let producing = {
        let (stop, sent, client) = (Arc::clone(&stop), Arc::clone(&sent), client.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                produce(&client, "orders")
                    .await
                    .expect("a produce failed during the swap");
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A bad certificate first: refused, the old one stays.
    std::fs::write(&pki.server_cert, "garbage").unwrap();
    signal_hangup(&server);
    tokio::time::sleep(Duration::from_millis(300)).await;
    tls_call(&url, tls_options(&pki.ca, None)).await.unwrap();

    // Then a certificate from another CA, written by rename.
    let (cert, key) = leaf(&next, "localhost", false);
    let staged = pki.dir.path().join("staged");
    std::fs::create_dir(&staged).unwrap();
    std::fs::write(staged.join("server.key"), key).unwrap();
    std::fs::write(staged.join("server.pem"), cert).unwrap();
    std::fs::rename(staged.join("server.key"), &pki.server_key).unwrap();
    std::fs::rename(staged.join("server.pem"), &pki.server_cert).unwrap();
    let next_ca = write(pki.dir.path(), "next-ca.pem", &next.pem);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tls_call(&url, tls_options(&next_ca, None)).await.is_err() {
        assert!(Instant::now() < deadline, "the new certificate was never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = sent.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    producing.await.unwrap();
    assert!(
        sent.load(Ordering::Relaxed) > before,
        "the old connection stopped producing"
    );
    // New connections with the old CA are refused now.
    assert!(tls_call(&url, tls_options(&pki.ca, None)).await.is_err());
}

fn signal_hangup(server: &Spoold) {
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn non_loopback_without_tls_and_auth_refuses_to_start_and_insecure_starts() {
    let data = tempfile::tempdir().unwrap();
    let refused = Command::new(binary("spoold"))
        .arg("--data-dir")
        .arg(data.path())
        .args(["--listen", "0.0.0.0:0", "--admin-listen", "off"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("not a loopback address")
            && stderr.contains("spool init-security")
            && stderr.contains("--insecure"),
        "{stderr}"
    );
    let mut started = Command::new(binary("spoold"))
        .arg("--data-dir")
        .arg(data.path())
        .args(["--listen", "0.0.0.0:0", "--admin-listen", "off", "--insecure"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(started.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _ = started.kill();
    let _ = started.wait();
    assert!(line.starts_with("listening on 0.0.0.0:"), "{line}");
}

#[tokio::test]
async fn init_security_files_start_a_secure_server() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("tls");
    let made = Command::new(binary("spool"))
        .args(["init-security", "--dir"])
        .arg(&dir)
        .env_remove("SPOOL_SERVER")
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let printed = String::from_utf8_lossy(&made.stdout);
    assert!(
        printed.contains("--tls-cert") && printed.contains("SPOOL_TLS_CA"),
        "{printed}"
    );
    for name in [
        "ca.pem",
        "ca.key",
        "server.pem",
        "server.key",
        "tokens.toml",
        "admin.token",
    ] {
        let mode = std::fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
    let again = Command::new(binary("spool"))
        .args(["init-security", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!again.status.success(), "files were overwritten");

    let pki = Pki {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        dir: tempfile::tempdir().unwrap(),
    };
    let server = tls_server_with(
        &scratch.path().join("data"),
        &pki,
        &[&format!("tokens_file={}", dir.join("tokens.toml").display())],
    );
    let token = std::fs::read_to_string(dir.join("admin.token")).unwrap();
    let url = format!("https://127.0.0.1:{}", server.addr.port());
    let listed = Command::new(binary("spool"))
        .args(["topic", "create", "orders", "--server", &url])
        .env("SPOOL_TLS_CA", dir.join("ca.pem"))
        .env("SPOOL_TOKEN", token.trim())
        .output()
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    let client = Client::connect_with(url, tls_options(&dir.join("ca.pem"), Some(token.trim())))
        .await
        .unwrap();
    assert_eq!(client.list_topics(false).await.unwrap()[0].name, "orders");
}

/// The dashboard with authentication on: a login with a token sets an
/// HTTP-only session cookie; calls with it work, a POST with it needs the
/// session's CSRF token; revoking the token or logging out ends it.
#[tokio::test]
async fn the_dashboard_logs_in_with_a_token_and_guards_its_actions_with_csrf() {
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("tokens.toml");
    let tokens = token_file(
        &file,
        &[
            ("ops", &["cluster=admin", "queue:*=*", "topic:*=*"]),
            ("reader", &["topic:*=consume"]),
        ],
    );
    let server = Spoold::start(
        &scratch.path().join("data"),
        &[&format!("tokens_file={}", file.display())],
    );
    let admin = server.admin_addr.unwrap();
    let ops = client(&server, Some(&tokens[0])).await;
    ops.jobs()
        .enqueue(spool_client::jobs::NewJob::new("emails", "{}"))
        .await
        .unwrap();
    let json = [("content-type", "application/json")];
    let login = |token: &str| {
        scrape::send(
            admin,
            "POST",
            "/api/v1/session",
            &json,
            format!("{{\"token\":\"{token}\"}}").as_bytes(),
        )
    };

    assert_eq!(scrape::get(admin, "/api/v1/overview").status, 401);
    assert_eq!(scrape::get(admin, "/api/v1/session").status, 401);
    assert_eq!(
        scrape::get(admin, "/").status,
        200,
        "the page itself is open: it shows the login"
    );
    assert_eq!(login("spool_00000000_00").status, 401);
    let refused = login(&tokens[1]);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.contains("lacks admin on the cluster"),
        "{}",
        refused.body
    );

    let answer = login(&tokens[0]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let cookie = answer.headers["set-cookie"].clone();
    assert!(cookie.starts_with("spool_session="), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "a plaintext listener cannot set a Secure cookie: {cookie}"
    );
    let session: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(session["principal"], "ops");
    let csrf = session["csrf_token"].as_str().unwrap().to_owned();
    let pair = cookie.split(';').next().unwrap().to_owned();

    let with_cookie = [("cookie", pair.as_str())];
    assert_eq!(
        scrape::request(admin, "GET", "/api/v1/overview", &with_cookie).status,
        200
    );
    let pause =
        |headers: &[(&str, &str)]| scrape::send(admin, "POST", "/api/v1/queues/emails/pause", headers, b"{}");
    let no_csrf = pause(&[("cookie", &pair), ("content-type", "application/json")]);
    assert_eq!(no_csrf.status, 403, "{}", no_csrf.body);
    assert!(no_csrf.body.contains("X-CSRF-Token"), "{}", no_csrf.body);
    let wrong = pause(&[
        ("cookie", &pair),
        ("content-type", "application/json"),
        ("x-csrf-token", "0"),
    ]);
    assert_eq!(wrong.status, 403);
    let done = pause(&[
        ("cookie", &pair),
        ("content-type", "application/json"),
        ("x-csrf-token", &csrf),
    ]);
    assert_eq!(done.status, 200, "{}", done.body);
    let audit = ops.read_audit(Default::default()).await.unwrap();
    let paused = audit.iter().find(|r| r.action == "pause_queue").expect("audited");
    assert_eq!(paused.principal, "ops");
    assert_eq!(paused.via, "http");

    // Logging out ends the session.
    let out = scrape::send(
        admin,
        "POST",
        "/api/v1/session/logout",
        &[
            ("cookie", &pair),
            ("content-type", "application/json"),
            ("x-csrf-token", &csrf),
        ],
        b"{}",
    );
    assert_eq!(out.status, 200);
    assert!(out.headers["set-cookie"].contains("Max-Age=0"));
    assert_eq!(
        scrape::request(admin, "GET", "/api/v1/overview", &with_cookie).status,
        401
    );

    // Revoking the token ends its sessions, without a restart.
    let again = login(&tokens[0]);
    let pair = again.headers["set-cookie"].split(';').next().unwrap().to_owned();
    let revoke = Command::new(binary("spool"))
        .args(["token", "revoke", &tokens[0][6..14], "--file"])
        .arg(&file)
        .env_remove("SPOOL_SERVER")
        .output()
        .unwrap();
    assert!(revoke.status.success(), "{revoke:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while scrape::request(admin, "GET", "/api/v1/overview", &[("cookie", &pair)]).status != 401 {
        assert!(Instant::now() < deadline, "the session outlived its token");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One HTTP/1.1 request over TLS to `addr`, trusting the CA in `ca`;
/// the status line and headers (lower-case names) of the answer.
async fn https(addr: std::net::SocketAddr, ca: &Path, request: &str) -> std::io::Result<(u16, String)> {
    use rustls::pki_types::pem::PemObject as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca)?;
    for certificate in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(name, tcp).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.ok();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Ok((status, text.to_lowercase()))
}

/// The admin listener serves TLS with the gRPC listener's certificate: a
/// plaintext request gets no answer, HTTPS is served, and a dashboard login
/// over it sets a `Secure` cookie.
#[tokio::test]
async fn the_admin_listener_serves_tls_and_its_session_cookie_is_secure() {
    let ca = authority("Spool test CA");
    let pki = pki(&ca);
    let file = pki.dir.path().join("tokens.toml");
    let tokens = token_file(&file, &[("ops", &["cluster=admin"])]);
    let data = tempfile::tempdir().unwrap();
    let server = tls_server_with(data.path(), &pki, &[&format!("tokens_file={}", file.display())]);
    let admin = server.admin_addr.unwrap();

    // Plaintext to the TLS admin port: no HTTP answer (a TLS alert, or the
    // connection closed).
    let mut plain = std::net::TcpStream::connect(admin).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    std::io::Write::write_all(&mut plain, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut plain, &mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plaintext was served: {:?}",
        String::from_utf8_lossy(&answer)
    );
    let (status, _) = https(
        admin,
        &pki.ca,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let (status, _) = https(
        admin,
        &pki.ca,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(status, 401, "the metrics need a token over TLS too");

    let body = format!("{{\"token\":\"{}\"}}", tokens[0]);
    let login = format!(
        "POST /api/v1/session HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, answer) = https(admin, &pki.ca, &login).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let cookie = answer
        .lines()
        .find(|line| line.starts_with("set-cookie:"))
        .expect("a session cookie")
        .to_owned();
    for attribute in ["httponly", "samesite=strict", "secure"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
}
