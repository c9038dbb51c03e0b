//! Cluster mode with mutual TLS between the nodes (`peer_tls_ca`,
//! docs/security.md, "Peers"), with the certificates that
//! `spool init-security --node ...` makes: three real `spoold` processes
//! elect leaders, replicate and acknowledge produces at QUORUM, also
//! after a node is killed and restarted; a connection to a peer listener
//! without a certificate, with one of another CA, or in the clear is
//! refused before any Raft call reaches the node, and the cluster goes on
//! as before. A node whose peer address is not loopback does not start
//! without peer TLS.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::cluster::{Extra, TestCluster, runtime};
use spool_proto::v1;
use spool_proto::v1::peer_client::PeerClient;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const TOPIC: &str = "secured";

/// Runs `spool init-security --dir DIR` with a `--node ID=127.0.0.1,localhost`
/// for nodes 1..=count.
fn init_security(dir: &Path, count: u64) -> Result<()> {
    let nodes: Vec<String> = (1..=count)
        .flat_map(|id| ["--node".to_owned(), format!("{id}=127.0.0.1,localhost")])
        .collect();
    let output = Command::new(common::binary("spool"))
        .args(["init-security", "--dir"])
        .arg(dir)
        .args(&nodes)
        .output()
        .context("running spool init-security")?;
    ensure!(
        output.status.success(),
        "init-security failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    ensure!(
        printed.contains("--peer-tls-ca") && printed.contains("--node-id 3"),
        "init-security printed no node commands: {printed}"
    );
    Ok(())
}

/// Three nodes with the certificates of `pki` (from [`init_security`]) on
/// both their listeners and mutual TLS between them.
fn secure_cluster(pki: &Path) -> TestCluster {
    let dir = pki.to_owned();
    let settings = move |id: u64| {
        let file = |name: String| dir.join(name).display().to_string();
        vec![
            format!("tls_cert={}", file(format!("node-{id}.pem"))),
            format!("tls_key={}", file(format!("node-{id}.key"))),
            format!("peer_tls_ca={}", file("ca.pem".into())),
        ]
    };
    TestCluster::start_with(
        3,
        Extra {
            settings: Some(Box::new(settings)),
            tls_ca: Some(pki.join("ca.pem")),
        },
    )
}

#[test]
fn a_cluster_with_peer_tls_elects_replicates_and_acknowledges_quorum_produces() -> Result<()> {
    let pki = tempfile::tempdir()?;
    init_security(pki.path(), 3)?;
    let mut cluster = secure_cluster(pki.path());
    runtime()?.block_on(async {
        cluster.create_topic(TOPIC, 1).await?;
        for id in cluster.ids() {
            cluster
                .produce_through(id, TOPIC, &format!("before-{id}"), 5)
                .await?;
        }
        let leader = cluster.agreed_leader(&cluster.ids(), TOPIC, 0).await?;
        let status = cluster.status(1).await?;
        ensure!(
            status.nodes.iter().all(|node| node.reachable),
            "a node is unreachable over peer TLS: {status:?}"
        );
        cluster.check(&cluster.ids()).await?;

        // A new leader is elected over TLS, and the restarted node
        // reconnects and catches up.
        cluster.kill9(leader);
        let alive: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != leader).collect();
        let next = cluster.agreed_leader(&alive, TOPIC, 0).await?;
        ensure!(next != leader);
        cluster.produce_through(alive[0], TOPIC, "during", 5).await?;
        cluster.restart(leader);
        cluster.produce_through(leader, TOPIC, "after", 5).await?;
        cluster.check(&cluster.ids()).await?;
        Ok::<_, anyhow::Error>(())
    })
}

/// How a test client reaches a peer listener.
enum Caller {
    /// `http://`: no TLS at all.
    Plaintext,
    /// TLS that trusts the nodes' CA, presenting `identity` if any.
    Tls {
        ca: PathBuf,
        identity: Option<(PathBuf, PathBuf)>,
    },
}

/// A client of the peer listener at `address`, connected as `caller`;
/// the error is whatever the connection said.
async fn peer_client(
    address: &str,
    caller: &Caller,
) -> Result<PeerClient<tonic::transport::Channel>, String> {
    let endpoint = match caller {
        Caller::Plaintext => Endpoint::from_shared(format!("http://{address}")).map_err(|e| e.to_string())?,
        Caller::Tls { ca, identity } => {
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(
                std::fs::read(ca).map_err(|e| e.to_string())?,
            ));
            if let Some((cert, key)) = identity {
                let cert = std::fs::read(cert).map_err(|e| e.to_string())?;
                let key = std::fs::read(key).map_err(|e| e.to_string())?;
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            Endpoint::from_shared(format!("https://{address}"))
                .and_then(|endpoint| endpoint.tls_config(tls))
                .map_err(|e| e.to_string())?
        }
    };
    let channel = endpoint
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    Ok(PeerClient::new(channel))
}

/// Calls `DescribeReplicas` on the peer listener at `address` as `caller`;
/// the error is whatever the connection or the call said.
async fn describe_replicas(address: &str, caller: &Caller) -> Result<v1::DescribeReplicasResponse, String> {
    let call = async {
        peer_client(address, caller)
            .await?
            .describe_replicas(v1::DescribeReplicasRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| format!("call: {status:?}"))
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap_or_else(|_| Err("no answer in 10 s".into()))
}

#[test]
fn peer_connections_without_a_node_certificate_are_refused() -> Result<()> {
    let pki = tempfile::tempdir()?;
    init_security(pki.path(), 3)?;
    let other = tempfile::tempdir()?;
    init_security(other.path(), 3)?;
    let cluster = secure_cluster(pki.path());
    let ca = pki.path().join("ca.pem");
    runtime()?.block_on(async {
        cluster.create_topic(TOPIC, 1).await?;
        cluster.produce_through(1, TOPIC, "before", 5).await?;
        let target = cluster.peer_address(2).to_owned();

        // The test's own client works with a node's certificate, so that
        // the refusals below are the certificates', not the client's.
        let node = Caller::Tls {
            ca: ca.clone(),
            identity: Some((pki.path().join("node-1.pem"), pki.path().join("node-1.key"))),
        };
        let answer = describe_replicas(&target, &node)
            .await
            .map_err(anyhow::Error::msg)
            .context("a node's certificate is refused")?;
        ensure!(!answer.replicas.is_empty(), "node 2 describes no replica");

        // Each is refused at the connection, never by the Peer service:
        // the node's TLS alert (no certificate, or one it cannot verify)
        // or its closing the connection, whichever the client reads
        // first; HTTP/2 in the clear is not a TLS record, and the node
        // closes it too.
        const AT_THE_CONNECTION: [&str; 5] = ["alert", "closed", "reset", "GoAway", "connect"];
        let refused = [
            ("in the clear", Caller::Plaintext),
            (
                "without a certificate",
                Caller::Tls {
                    ca: ca.clone(),
                    identity: None,
                },
            ),
            (
                "with a certificate of another CA",
                Caller::Tls {
                    ca: ca.clone(),
                    identity: Some((other.path().join("node-1.pem"), other.path().join("node-1.key"))),
                },
            ),
        ];
        for (how, caller) in &refused {
            match describe_replicas(&target, caller).await {
                Ok(answer) => anyhow::bail!("a peer call {how} was answered: {answer:?}"),
                Err(error) => ensure!(
                    AT_THE_CONNECTION.iter().any(|sign| error.contains(sign)),
                    "a peer call {how} failed otherwise than at the connection: {error}"
                ),
            }
        }

        // The cluster is as it was.
        cluster.produce_through(3, TOPIC, "after", 5).await?;
        cluster.check(&cluster.ids()).await?;
        Ok::<_, anyhow::Error>(())
    })
}

/// A peer speaks only for the node its certificate names (common name
/// `spool-node-ID`): a Raft message from another node's identity, even
/// over a connection with a valid node certificate, is PERMISSION_DENIED
/// before it reaches a replica; one from its own passes that check.
#[test]
fn a_peer_speaks_only_for_the_node_its_certificate_names() -> Result<()> {
    let pki = tempfile::tempdir()?;
    init_security(pki.path(), 3)?;
    let cluster = secure_cluster(pki.path());
    let as_node_1 = Caller::Tls {
        ca: pki.path().join("ca.pem"),
        identity: Some((pki.path().join("node-1.pem"), pki.path().join("node-1.key"))),
    };
    runtime()?.block_on(async {
        cluster.create_topic(TOPIC, 1).await?;
        cluster.produce_through(1, TOPIC, "before", 5).await?;
        let mut client = peer_client(cluster.peer_address(2), &as_node_1)
            .await
            .map_err(anyhow::Error::msg)?;
        // Term 1, below the group's: harmless even where it is accepted.
        let group = v1::RaftGroup {
            topic: TOPIC.to_owned(),
            partition: 0,
            incarnation: 0,
        };
        let vote = |candidate: u64| v1::RaftVoteRequest {
            group: Some(group.clone()),
            from: 1,
            request_json: format!(
                r#"{{"vote":{{"leader_id":{{"term":1,"voted_for":{candidate}}},"committed":false}},"last_log_id":null}}"#
            )
            .into_bytes()
            .into(),
        };
        let status = client
            .vote(vote(3))
            .await
            .err()
            .context("a vote request for node 3 over node 1's certificate was answered")?;
        ensure!(
            status.code() == tonic::Code::PermissionDenied && status.message().contains("node 1"),
            "{status:?}"
        );
        let elect = client
            .elect(v1::RaftElectRequest {
                group: Some(group.clone()),
                from: 3,
            })
            .await
            .err()
            .context("an elect request from node 3 over node 1's certificate was answered")?;
        ensure!(elect.code() == tonic::Code::PermissionDenied, "{elect:?}");
        // Its own identity passes: the replica answers (its vote is not
        // granted, the term being old), or refuses the request for naming
        // another creation of the topic (NOT_FOUND).
        match client.vote(vote(1)).await {
            Ok(reply) => {
                let answer = String::from_utf8_lossy(&reply.get_ref().result_json).into_owned();
                ensure!(answer.contains(r#""vote_granted":false"#), "{answer}");
            }
            Err(status) => ensure!(status.code() == tonic::Code::NotFound, "{status:?}"),
        }
        cluster.produce_through(3, TOPIC, "after", 5).await?;
        cluster.check(&cluster.ids()).await?;
        Ok::<_, anyhow::Error>(())
    })
}

/// Replaces `path` with `contents` as deployment tools do (a new file
/// renamed over it), so that the nodes' file watcher sees the change.
fn replace_file(path: &Path, contents: &[u8]) -> Result<()> {
    let staged = path.with_extension("new");
    std::fs::write(&staged, contents)?;
    std::fs::rename(&staged, path)?;
    Ok(())
}

/// The peer certificates move to a new CA while every node runs: first
/// every node trusts both CAs, then presents its new certificate, then
/// trusts only the new CA, each step picked up from the files (no
/// restart). A node restarted afterwards is reached by the others over
/// new connections, which must present their new certificates and trust
/// the new CA only: it catches up. (The outgoing side once kept the
/// files read at start, and the restarted node never heard from the
/// others.)
#[test]
fn peer_certificates_move_to_a_new_ca_without_a_restart() -> Result<()> {
    let pki = tempfile::tempdir()?;
    init_security(pki.path(), 3)?;
    let next = tempfile::tempdir()?;
    init_security(next.path(), 3)?;
    let mut cluster = secure_cluster(pki.path());
    let runtime = runtime()?;
    runtime.block_on(async {
        cluster.create_topic(TOPIC, 1).await?;
        cluster.produce_through(1, TOPIC, "before", 5).await
    })?;
    let old_ca = std::fs::read(pki.path().join("ca.pem"))?;
    let new_ca = std::fs::read(next.path().join("ca.pem"))?;
    // Longer than the watcher's poll (1 s) and a reload.
    let settle = || std::thread::sleep(Duration::from_millis(2_500));
    replace_file(&pki.path().join("ca.pem"), &[old_ca, new_ca.clone()].concat())?;
    settle();
    for id in 1..=3 {
        for file in [format!("node-{id}.key"), format!("node-{id}.pem")] {
            replace_file(&pki.path().join(&file), &std::fs::read(next.path().join(&file))?)?;
        }
    }
    settle();
    replace_file(&pki.path().join("ca.pem"), &new_ca)?;
    settle();
    runtime.block_on(cluster.produce_through(2, TOPIC, "rotated", 5))?;
    cluster.kill9(3);
    cluster.restart(3);
    runtime.block_on(async {
        cluster.produce_through(1, TOPIC, "after", 5).await?;
        cluster.check(&cluster.ids()).await
    })
}

#[test]
fn a_node_with_a_non_loopback_peer_address_and_no_peer_tls_does_not_start() -> Result<()> {
    let data = tempfile::tempdir()?;
    // Validation fails before anything listens: no address is reached.
    let output = Command::new(common::binary("spoold"))
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "--node-id",
            "1",
            "--peers",
            "1=10.0.0.1:7080,2=10.0.0.2:7080,3=10.0.0.3:7080",
        ])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .output()
        .context("running spoold")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(!output.status.success(), "spoold started: {stderr}");
    ensure!(
        stderr.contains("peer_tls_ca") && stderr.contains("10.0.0.1:7080") && stderr.contains("--insecure"),
        "the refusal does not say what to set: {stderr}"
    );
    Ok(())
}
