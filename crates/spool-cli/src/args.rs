//! The command line, declared with clap's derive API. The job commands
//! are in `args/jobs.rs`, the bench commands in `args/bench.rs`.

pub mod bench;
pub mod jobs;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use self::bench::{
    BenchCommand, BenchCommon, BenchConsumeArgs, BenchFetchArgs, BenchLatencyArgs, BenchProduceArgs,
    BenchProducerOptions,
};
pub use self::jobs::{BenchJobsArgs, BenchJobsMode, JobCommand, QueueCommand};

use crate::time::parse_timestamp_ms;
use crate::units::{parse_bytes, parse_duration_ms};

const MAIN_EXAMPLES: &str = "\
Examples:
  spool topic create orders --partitions 3 --retention 7d
  seq 1 1000 | spool produce orders
  spool consume orders --from earliest --count 10
  spool consume orders --from 2026-11-27T10:00:00Z --follow --format json
  spool replay orders --from earliest > orders.log
  spool bench produce --duration 10s
  spool job enqueue emails '{\"to\":\"a@example.com\"}'
  spool job list emails --state dead
  spool queue stats emails

Exit codes: 0 success, 1 an error reported on stderr, 2 a usage error.";

/// Command-line client of a Spool server.
#[derive(Debug, Parser)]
#[command(name = "spool", version, about, after_help = MAIN_EXAMPLES)]
pub struct Cli {
    /// Address of the server (default http://127.0.0.1:7070; https:// with
    /// --tls-ca for TLS).
    #[arg(long, global = true, env = "SPOOL_SERVER", value_name = "URL")]
    pub server: Option<String>,

    /// Bearer token sent with every call.
    #[arg(
        long,
        global = true,
        env = "SPOOL_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// PEM CA bundle that signed the server's certificate (for https:// URLs).
    #[arg(long, global = true, env = "SPOOL_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// PEM client certificate, for servers that ask for one (mutual TLS).
    #[arg(long, global = true, env = "SPOOL_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, global = true, env = "SPOOL_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Threads of the client's runtime (default: one per core). One
    /// request in flight needs one thread: with more, every hand-off
    /// between the command and its connection wakes another thread
    /// (`spool bench ... --threads 1` for the one-in-flight shapes;
    /// docs/performance.md).
    #[arg(long, global = true, env = "SPOOL_THREADS", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The server's address, given or the default.
    pub fn server(&self) -> String {
        self.server
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1:7070".to_owned())
    }

    /// How to connect: the token and TLS files.
    pub fn client_options(&self) -> spool_client::ClientOptions {
        spool_client::ClientOptions {
            token: self.token.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            ..spool_client::ClientOptions::default()
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Produce one record per line of stdin.
    Produce(ProduceArgs),
    /// Print records of a topic.
    Consume(ConsumeArgs),
    /// Print every record of every partition up to the end found at start.
    Replay(ReplayArgs),
    /// Print the earliest and latest offset of each partition.
    Offsets(OffsetsArgs),
    /// Read or store a named consumer's positions.
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// Enqueue, inspect, list, retry, purge and cancel background jobs.
    #[command(subcommand)]
    Job(JobCommand),
    /// Job queues: list them, and their counts, rates and latencies.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Measure throughput and latency against the server.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// A live view of topics and queues, refreshed every --interval; q
    /// quits. Prints one plain snapshot when not on a terminal.
    #[command(after_help = TOP_EXAMPLES)]
    Top(TopArgs),
    /// The server's own metrics over time, from the history it keeps.
    #[command(subcommand)]
    Metrics(MetricsCommand),
    /// Bearer tokens: create, list, revoke. In the token file (--file), or
    /// through the server (--server, a token with cluster=admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Read the audit trail of administrative actions (cluster=admin).
    #[command(after_help = AUDIT_EXAMPLES)]
    Audit(AuditArgs),
    /// A cluster's nodes, leaders and replica lag; move a leadership
    /// (cluster=admin; any node answers).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Create a CA, a server certificate and an admin token for a first
    /// secure setup, and print how to start spoold and the clients.
    #[command(name = "init-security", after_help = INIT_SECURITY_EXAMPLES)]
    InitSecurity(InitSecurityArgs),
}

const CLUSTER_EXAMPLES: &str = "\
Examples:
  spool cluster status
  spool cluster status --json
  spool cluster transfer-leader --topic orders --partition 2 --to 3
  spool cluster transfer-leader --metadata --to 1
  spool cluster add-node --node-id 4 --peer-address 127.0.0.1:7083
  spool cluster move-replica --topic orders --partition 0 --from 1 --to 4
  spool cluster remove-node --node-id 1

status asks every node over its peer listener: a node that does not answer within a second is
shown unreachable, and its replicas' lag is the leader's last word on them. transfer-leader
answers once the node named leads (exit code 1 otherwise); writes to the partition wait for the
moment it takes, usually well under a second. To restart a node without a leader election
timeout, move every leadership it holds to another node first.

add-node, move-replica and remove-node answer once the change is committed; a new replica first
catches up with the whole log (up to two minutes). Asked again after a failure, each goes on
where it stopped. To replace node 1 by node 4: start node 4 with --join, add it, move every
replica node 1 holds to it, remove node 1, stop node 1 (docs/cluster.md, \"Membership\").";

const AUDIT_EXAMPLES: &str = "\
Examples:
  spool audit
  spool audit --principal ops --action delete_topic --since 2026-11-27T00:00:00Z
  spool audit --format json --limit 1000";

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only actions of this principal.
    #[arg(long, value_name = "NAME")]
    pub principal: Option<String>,
    /// Only this action (create_topic, delete_topic, reset_checkpoint,
    /// retry_dead, purge_dead, cancel, pause_queue, resume_queue,
    /// create_token, revoke_token).
    #[arg(long, value_name = "ACTION")]
    pub action: Option<String>,
    /// Only records at or after (RFC 3339 or @epoch-ms).
    #[arg(long, value_name = "TIME", value_parser = crate::time::parse_timestamp_ms)]
    pub since: Option<i64>,
    /// Only records before (RFC 3339 or @epoch-ms).
    #[arg(long, value_name = "TIME", value_parser = crate::time::parse_timestamp_ms)]
    pub until: Option<i64>,
    /// Most records, newest first (at most 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Output format (json: one line per record).
    #[arg(long, value_enum, default_value_t = jobs::OutputFormat::Human)]
    pub format: jobs::OutputFormat,
}

const INIT_SECURITY_EXAMPLES: &str = "\
Examples:
  spool init-security
  spool init-security --dir /etc/spool --host spool.internal --host 10.0.0.5
  spool init-security --dir /etc/spool --node 1=10.0.0.1,node1.internal --node 2=10.0.0.2 --node 3=10.0.0.3

Writes ca.pem, ca.key, server.pem, server.key and tokens.toml (mode 0600) into --dir, and
prints the admin token once. With --node (a cluster), writes node-ID.pem and node-ID.key for
each node instead of server.pem and server.key: each certificate names the node's hosts and
serves both its client and its peer listener, and ca.pem is then the nodes' CA
(--peer-tls-ca); the spoold command of every node is printed.";

#[derive(Debug, Args)]
pub struct InitSecurityArgs {
    /// Directory for the files (created; must not hold them already).
    #[arg(long, default_value = "spool-tls", value_name = "DIR")]
    pub dir: std::path::PathBuf,
    /// A name or IP address clients use for the server; repeatable
    /// (default: localhost and 127.0.0.1).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// A cluster node as ID=HOST[,HOST...]: the names and IP addresses of
    /// its client and peer addresses; repeatable, one per node.
    #[arg(long = "node", value_name = "ID=HOSTS", value_parser = parse_node)]
    pub nodes: Vec<(u64, Vec<String>)>,
    /// Days the server certificate is valid.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
    /// Principal of the admin token.
    #[arg(long, default_value = "admin", value_name = "NAME")]
    pub principal: String,
}

/// `ID=HOST[,HOST...]` of `init-security --node`.
fn parse_node(value: &str) -> Result<(u64, Vec<String>), String> {
    let (id, hosts) = value
        .split_once('=')
        .ok_or_else(|| format!("{value:?} is not ID=HOST[,HOST...]"))?;
    let id = id
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("node id {id:?} is not a whole number"))?;
    let hosts: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|host| !host.is_empty())
        .map(str::to_owned)
        .collect();
    if hosts.is_empty() {
        return Err(format!("node {id} names no host"));
    }
    Ok((id, hosts))
}

const TOKEN_EXAMPLES: &str = "\
Examples:
  spool token create billing --grant 'topic:orders-*=consume' --grant 'queue:invoices=enqueue'
  spool token create ops --grant cluster=admin --grant 'topic:*=*' --grant 'queue:*=*'
  spool token list
  spool token revoke 3f9a0c12
  spool token list --server https://spool.internal:7070 --tls-ca ca.pem --token \"$ADMIN_TOKEN\"

With --file (or SPOOL_TOKENS_FILE) the commands edit that file; otherwise, with --server (or
SPOOL_SERVER), they go through the server (a token with cluster=admin), which rewrites its own
token file and uses the change at once; with neither, they edit spool-data/tokens.toml.

A grant is topic:PATTERN=PERMISSIONS (produce, consume, admin), queue:PATTERN=PERMISSIONS
(enqueue, work, admin) or cluster=admin; * in a pattern stands for any run of characters, and
* as the permissions for all of them. The file keeps only SHA-256 digests of the tokens: the
token is printed once, by create.";

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for a principal and print it (the only time it is shown).
    #[command(after_help = TOKEN_EXAMPLES)]
    Create {
        /// Who the token stands for (1 to 128 of A-Z a-z 0-9 . _ - @).
        principal: String,
        /// A permission on a name pattern; repeatable.
        #[arg(long = "grant", value_name = "GRANT")]
        grants: Vec<String>,
        #[command(flatten)]
        file: TokenFileArg,
    },
    /// List the tokens: id, principal, creation time and grants (never secrets).
    #[command(after_help = TOKEN_EXAMPLES)]
    List {
        #[command(flatten)]
        file: TokenFileArg,
        /// Output format (json: one line per token).
        #[arg(long, value_enum, default_value_t = jobs::OutputFormat::Human)]
        format: jobs::OutputFormat,
    },
    /// Remove a token by its id; it stops authenticating.
    #[command(after_help = TOKEN_EXAMPLES)]
    Revoke {
        /// The token's id (the 8 hex digits after `spool_`).
        id: String,
        #[command(flatten)]
        file: TokenFileArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Every node (reachable or not) and every Raft group: the metadata
    /// group and each partition, with its leader, term, commit and each
    /// replica's role and lag.
    #[command(after_help = CLUSTER_EXAMPLES)]
    Status {
        /// Output format (json: one object).
        #[arg(long, value_enum, default_value_t = jobs::OutputFormat::Human)]
        format: jobs::OutputFormat,
        /// The same as --format json.
        #[arg(long, conflicts_with = "format")]
        json: bool,
    },
    /// Make a node the leader of a partition (or of the metadata group),
    /// for example before restarting the node that leads it.
    #[command(name = "transfer-leader", after_help = CLUSTER_EXAMPLES)]
    TransferLeader {
        /// The partition's topic.
        #[arg(long, value_name = "TOPIC", required_unless_present_any = ["metadata", "jobs"])]
        topic: Option<String>,
        /// The partition (default 0).
        #[arg(long, value_name = "N", default_value_t = 0, conflicts_with_all = ["metadata", "jobs"])]
        partition: u32,
        /// The metadata group instead of a partition.
        #[arg(long, conflicts_with_all = ["topic", "jobs"])]
        metadata: bool,
        /// The job layer's group (`__jobs`) instead of a partition.
        #[arg(long, conflicts_with = "topic")]
        jobs: bool,
        /// The node to lead: one of the group's replicas.
        #[arg(long, value_name = "NODE")]
        to: u64,
    },
    /// Add a node, started with `spoold --join`, to the cluster: it joins
    /// the metadata and job layer's groups, and new topics may place
    /// replicas on it.
    #[command(name = "add-node", after_help = CLUSTER_EXAMPLES)]
    AddNode {
        /// The new node's id (never used by another node before).
        #[arg(long, value_name = "ID")]
        node_id: u64,
        /// Its peer listener, host:port, as its own --peers names it.
        #[arg(long, value_name = "ADDR")]
        peer_address: String,
    },
    /// Remove a node from the cluster, once it holds no partition's
    /// replica; stop it afterwards.
    #[command(name = "remove-node", after_help = CLUSTER_EXAMPLES)]
    RemoveNode {
        #[arg(long, value_name = "ID")]
        node_id: u64,
    },
    /// Move a partition's replica from one node to another.
    #[command(name = "move-replica", after_help = CLUSTER_EXAMPLES)]
    MoveReplica {
        #[arg(long, value_name = "TOPIC")]
        topic: String,
        /// The partition (default 0).
        #[arg(long, value_name = "N", default_value_t = 0)]
        partition: u32,
        /// The node that holds the replica now.
        #[arg(long, value_name = "NODE")]
        from: u64,
        /// The node to hold it.
        #[arg(long, value_name = "NODE")]
        to: u64,
    },
}

#[derive(Debug, Args)]
pub struct TokenFileArg {
    /// The token file (default spool-data/tokens.toml); given, the file is
    /// edited even when a server is named.
    #[arg(long = "file", env = "SPOOL_TOKENS_FILE", value_name = "PATH")]
    pub path: Option<std::path::PathBuf>,
}

impl TokenFileArg {
    /// The file to edit.
    pub fn path(&self) -> std::path::PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| "spool-data/tokens.toml".into())
    }
}

impl TokenCommand {
    /// Whether a token file was named (`--file` or SPOOL_TOKENS_FILE).
    pub fn names_file(&self) -> bool {
        let (TokenCommand::Create { file, .. }
        | TokenCommand::List { file, .. }
        | TokenCommand::Revoke { file, .. }) = self;
        file.path.is_some()
    }
}

#[derive(Debug, Subcommand)]
pub enum MetricsCommand {
    /// Points of series expressions over a time range, read from the
    /// history the server samples into `__metrics`.
    #[command(after_help = METRICS_HISTORY_EXAMPLES)]
    History(MetricsHistoryArgs),
}

const METRICS_HISTORY_EXAMPLES: &str = "\
Examples:
  spool metrics history 'rate(spool_jobs_completed_total{queue=\"emails\"})'
  spool metrics history 'quantile(0.99, spool_job_run_seconds{queue=\"emails\"})' --since 24h --step 10m
  spool metrics history 'spool_jobs{state=\"available\"}' 'max(spool_consumer_lag_seconds)'
  spool metrics history 'sum(rate(spool_log_appended_records_total))' --from 2026-12-01T00:00:00Z --to 2026-12-02T00:00:00Z

A series is a family as /metrics names it (counters end in _total), with optional label matches
in braces; rate(...) and increase(...) take a counter or a histogram, quantile(q, ...) a histogram;
sum, max, min and avg combine series. docs/observability.md (\"History\") lists the families.";

#[derive(Debug, Args)]
pub struct MetricsHistoryArgs {
    /// Series expressions; one column each (one per label set when an
    /// expression yields several).
    #[arg(required = true, value_name = "SERIES")]
    pub series: Vec<String>,
    /// How far back the range starts, when --from is not given.
    #[arg(long, default_value = "1h", value_parser = parse_duration_ms, value_name = "DURATION")]
    pub since: u64,
    /// Start of the range: an RFC 3339 time or @EPOCH_MS.
    #[arg(long, value_parser = parse_timestamp_ms, value_name = "TIME")]
    pub from: Option<i64>,
    /// End of the range (default now): an RFC 3339 time or @EPOCH_MS.
    #[arg(long, value_parser = parse_timestamp_ms, value_name = "TIME")]
    pub to: Option<i64>,
    /// Time between points (default: about 300 over the range; never
    /// below the server's sampling interval).
    #[arg(long, value_parser = parse_duration_ms, value_name = "DURATION")]
    pub step: Option<u64>,
    /// Output format (json: one line per series).
    #[arg(long, value_enum, default_value_t = jobs::OutputFormat::Human)]
    pub format: jobs::OutputFormat,
}

const TOP_EXAMPLES: &str = "\
Examples:
  spool top
  spool top --interval 5s --consumer billing --consumer audit
  spool top --once > snapshot.txt

Topics: partitions, records held, records appended per second (between two refreshes), size.
With --consumer NAME, the lag of that named consumer's checkpoints in each topic it has one in.
Queues: jobs scheduled, available, running (leases held) and dead, the oldest available job's
age, enqueued, completed and failed per second and the p99 of queue wait and run time over the
last minute, and the workers connected. On a terminal the view refreshes until q, Esc or Ctrl-C;
otherwise (or with --once) it prints one snapshot, taking two samples --interval apart for the
rates.";

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Time between refreshes (and between the two samples of --once).
    #[arg(long, default_value = "1s", value_parser = parse_interval_ms, value_name = "DURATION")]
    pub interval: u64,
    /// Print one plain-text snapshot and exit, even on a terminal.
    #[arg(long)]
    pub once: bool,
    /// A named consumer (as in `spool checkpoint`) whose lag to show per
    /// topic; repeatable.
    #[arg(long = "consumer", value_name = "NAME")]
    pub consumers: Vec<String>,
    /// Show the server's internal topics too (`__jobs`, `__checkpoints`).
    #[arg(long)]
    pub internal: bool,
}

/// A refresh interval: 100 ms to a day.
fn parse_interval_ms(text: &str) -> Result<u64, String> {
    match parse_duration_ms(text)? {
        ms @ 100..=86_400_000 => Ok(ms),
        _ => Err(format!("{text:?}: an interval is between 100ms and 1d")),
    }
}

const TOPIC_CREATE_EXAMPLES: &str = "\
Examples:
  spool topic create orders --partitions 3
  spool topic create clicks --partitions 12 --retention 2d --retention-bytes 10GiB
  spool topic create audit --retention forever --segment-bytes 256MiB
  spool topic create payments --partitions 6 --replication-factor 3   (cluster mode)

Durations: 500ms, 30s, 10m, 2h, 7d, 1w, 1h30m. Sizes: 4096, 512KiB, 10MiB, 1GiB (or KB, MB, GB).";

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    #[command(after_help = TOPIC_CREATE_EXAMPLES)]
    Create {
        /// Topic name: 1 to 249 of A-Z a-z 0-9 . _ - (not starting with __).
        name: String,
        /// Number of partitions (server default if left out).
        #[arg(long, short)]
        partitions: Option<u32>,
        /// Delete closed segments older than this, or `forever` to keep them.
        #[arg(long, value_parser = parse_retention_ms, value_name = "DURATION|forever")]
        retention: Option<i64>,
        /// Per partition, delete the oldest closed segments while larger than
        /// this, or `unlimited`.
        #[arg(long, value_parser = parse_retention_bytes, value_name = "SIZE|unlimited")]
        retention_bytes: Option<i64>,
        /// Roll to a new segment at this size.
        #[arg(long, value_parser = parse_bytes, value_name = "SIZE")]
        segment_bytes: Option<u64>,
        /// Cluster mode: nodes holding each partition's replicas (default
        /// min(3, nodes)).
        #[arg(long, value_name = "COUNT")]
        replication_factor: Option<u32>,
    },
    /// List topics.
    List {
        /// Also list the server's internal topics (names starting with __).
        #[arg(long)]
        internal: bool,
    },
    /// Show a topic's configuration and partitions.
    Describe { name: String },
    /// Delete a topic and all its records.
    Delete { name: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// Answer once in the server's page cache: faster, but a power cut can
    /// lose acknowledged records.
    None,
    /// Answer once fsynced to disk.
    Fsync,
    /// Cluster mode: answer once fsynced on a majority of the partition's
    /// replicas.
    Quorum,
}

impl From<DurabilityArg> for spool_client::Durability {
    fn from(value: DurabilityArg) -> Self {
        match value {
            DurabilityArg::None => spool_client::Durability::None,
            DurabilityArg::Fsync => spool_client::Durability::Fsync,
            DurabilityArg::Quorum => spool_client::Durability::Quorum,
        }
    }
}

const PRODUCE_EXAMPLES: &str = "\
Examples:
  echo hello | spool produce orders
  seq 1 100000 | spool produce orders --durability none
  spool produce orders --key customer-1 < events.txt
  echo '{\"key\":\"k1\",\"value\":\"v\",\"headers\":{\"trace\":\"abc\"}}' | spool produce orders --json

JSON lines: key, value and header values are strings, null, or {\"base64\": \"...\"} for binary;
timestamp_ms is optional. The output of `spool consume --format json` is valid input.

Each record is acknowledged once fsynced on the server; --durability none acknowledges it once in
the server's page cache: faster, but a power cut can lose what was acknowledged.

A line that cannot be produced (not a JSON record with --json, or larger than the server's size
limits, which the error names with the setting to raise) stops the command with exit status 1: the
lines before it are produced, it and the lines after it are not.";

#[derive(Debug, Args)]
#[command(after_help = PRODUCE_EXAMPLES)]
pub struct ProduceArgs {
    pub topic: String,
    /// Key of every record (chooses the partition).
    #[arg(long, short, conflicts_with = "json")]
    pub key: Option<String>,
    /// Send every record to this partition.
    #[arg(long, short)]
    pub partition: Option<u32>,
    /// How far a write must reach before the server acknowledges it.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Fsync)]
    pub durability: DurabilityArg,
    /// Read JSON lines with key, value, headers instead of plain values.
    #[arg(long)]
    pub json: bool,
    /// Send a partial batch after this long.
    #[arg(long, default_value_t = 5, value_name = "MS")]
    pub linger_ms: u64,
    /// Largest batch sent in one request.
    #[arg(long, default_value = "256KiB", value_parser = parse_bytes, value_name = "SIZE")]
    pub batch_bytes: u64,
    /// Number batches with a producer id and sequence, so that a batch
    /// retried after a lost answer (or a cluster failover) is stored once.
    #[arg(long)]
    pub idempotent: bool,
}

/// A `--from` position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    Earliest,
    Latest,
    Offset(u64),
    Timestamp(i64),
}

pub fn parse_from(text: &str) -> Result<StartFrom, String> {
    match text {
        "earliest" | "beginning" => Ok(StartFrom::Earliest),
        "latest" | "end" => Ok(StartFrom::Latest),
        _ if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) => text
            .parse()
            .map(StartFrom::Offset)
            .map_err(|_| format!("offset {text} is too large")),
        _ => parse_timestamp_ms(text)
            .map(StartFrom::Timestamp)
            .map_err(|error| format!("{error}; --from also takes earliest, latest or an offset")),
    }
}

fn parse_replay_from(text: &str) -> Result<StartFrom, String> {
    match parse_from(text)? {
        StartFrom::Latest | StartFrom::Offset(_) => {
            Err("replay starts at earliest or at a timestamp (RFC 3339 or @<epoch-ms>)".into())
        }
        from => Ok(from),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The value of each record on its own line.
    Value,
    /// One JSON object per record: partition, offset, timestamp_ms, key, value, headers.
    Json,
}

const CONSUME_EXAMPLES: &str = "\
Examples:
  spool consume orders                              everything there now, then exit
  spool consume orders --from latest --follow       new records until Ctrl-C
  spool consume orders --partition 0 --from 1200 --count 10
  spool consume orders --from 2026-11-27T10:00:00Z --format json
  spool consume orders --consumer billing --follow  resume at billing's checkpoint, store it on exit

--from takes earliest, latest, an offset, or a timestamp: RFC 3339 (2026-11-27T10:00:00Z,
2026-11-27T11:00:00+01:00) or @<epoch-ms>.";

#[derive(Debug, Args)]
#[command(after_help = CONSUME_EXAMPLES)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Read only this partition (default: all).
    #[arg(long, short)]
    pub partition: Option<u32>,
    /// Where to start: earliest, latest, OFFSET or TIMESTAMP. With
    /// --consumer, only partitions without a checkpoint start here (for
    /// earliest or latest) or all do (for an offset or timestamp).
    #[arg(long, value_parser = parse_from, value_name = "POSITION")]
    pub from: Option<StartFrom>,
    /// Keep waiting for new records (until Ctrl-C) instead of stopping at
    /// the end found at start.
    #[arg(long, short)]
    pub follow: bool,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Value)]
    pub format: Format,
    /// Start at this consumer's checkpoint and store the position reached on
    /// exit.
    #[arg(long, value_name = "NAME")]
    pub consumer: Option<String>,
}

const REPLAY_EXAMPLES: &str = "\
Examples:
  spool replay orders --from earliest --format json > orders.jsonl
  spool replay orders --from 2026-11-27T00:00:00Z | ./rebuild-state

Records of different partitions interleave; each partition's come in offset order. A progress
line (records, MB/s, ETA) is drawn on stderr when it is a terminal.";

#[derive(Debug, Args)]
#[command(after_help = REPLAY_EXAMPLES)]
pub struct ReplayArgs {
    pub topic: String,
    /// earliest, or a timestamp (RFC 3339 or @<epoch-ms>).
    #[arg(long, value_parser = parse_replay_from, default_value = "earliest", value_name = "POSITION")]
    pub from: StartFrom,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Value)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct OffsetsArgs {
    pub topic: String,
}

/// `PARTITION=OFFSET`.
pub fn parse_position(text: &str) -> Result<(u32, u64), String> {
    let (partition, offset) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: write PARTITION=OFFSET, like 0=1200"))?;
    let partition = partition
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: partition {partition:?} is not a number"))?;
    let offset = offset
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: offset {offset:?} is not a number"))?;
    Ok((partition, offset))
}

const CHECKPOINT_EXAMPLES: &str = "\
Examples:
  spool checkpoint get billing orders
  spool checkpoint set billing orders 0=1200 1=980 2=1044

An offset is the next one to read: one past the last record processed.";

#[derive(Debug, Subcommand)]
#[command(after_help = CHECKPOINT_EXAMPLES)]
pub enum CheckpointCommand {
    /// Show a consumer's stored positions and its lag.
    Get { consumer: String, topic: String },
    /// Store positions for a consumer.
    #[command(after_help = CHECKPOINT_EXAMPLES)]
    Set {
        consumer: String,
        topic: String,
        /// PARTITION=OFFSET pairs.
        #[arg(required = true, value_parser = parse_position, value_name = "PARTITION=OFFSET")]
        positions: Vec<(u32, u64)>,
        #[arg(long, value_enum, default_value_t = DurabilityArg::Fsync)]
        durability: DurabilityArg,
    },
}

fn parse_retention_ms(text: &str) -> Result<i64, String> {
    match text {
        "forever" | "infinite" | "unlimited" | "none" | "-1" => Ok(-1),
        _ => {
            let ms = parse_duration_ms(text)?;
            if ms == 0 {
                return Err("retention must be positive, or `forever`".into());
            }
            i64::try_from(ms).map_err(|_| format!("{text:?} is too long"))
        }
    }
}

fn parse_retention_bytes(text: &str) -> Result<i64, String> {
    match text {
        "unlimited" | "none" | "-1" => Ok(-1),
        _ => {
            let bytes = parse_bytes(text)?;
            if bytes == 0 {
                return Err("retention bytes must be positive, or `unlimited`".into());
            }
            i64::try_from(bytes).map_err(|_| format!("{text:?} is too large"))
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn init_security_nodes_are_an_id_and_hosts() {
        assert_eq!(
            parse_node("2=10.0.0.2, node2.internal"),
            Ok((2, vec!["10.0.0.2".to_owned(), "node2.internal".to_owned()]))
        );
        assert!(parse_node("10.0.0.2").unwrap_err().contains("ID=HOST"));
        assert!(parse_node("x=10.0.0.2").unwrap_err().contains("whole number"));
        assert!(parse_node("3=").unwrap_err().contains("no host"));
    }

    #[test]
    fn from_positions() {
        assert_eq!(parse_from("earliest"), Ok(StartFrom::Earliest));
        assert_eq!(parse_from("latest"), Ok(StartFrom::Latest));
        assert_eq!(parse_from("1200"), Ok(StartFrom::Offset(1200)));
        assert_eq!(parse_from("@1000"), Ok(StartFrom::Timestamp(1000)));
        assert_eq!(parse_from("1970-01-01T00:00:01Z"), Ok(StartFrom::Timestamp(1000)));
        assert!(parse_from("soon").unwrap_err().contains("earliest, latest"));
        assert!(parse_replay_from("latest").is_err());
        assert!(parse_replay_from("12").is_err());
        assert_eq!(parse_replay_from("earliest"), Ok(StartFrom::Earliest));
    }

    #[test]
    fn checkpoint_positions() {
        assert_eq!(parse_position("0=1200"), Ok((0, 1200)));
        assert!(parse_position("0:1200").is_err());
        assert!(parse_position("a=1").is_err());
        assert!(parse_position("1=-1").is_err());
    }

    #[test]
    fn retention_values() {
        assert_eq!(parse_retention_ms("7d"), Ok(604_800_000));
        assert_eq!(parse_retention_ms("forever"), Ok(-1));
        assert_eq!(
            parse_retention_ms("none"),
            Ok(-1),
            "spoold's retention_ms spelling"
        );
        assert!(parse_retention_ms("0s").is_err());
        assert_eq!(parse_retention_bytes("10GiB"), Ok(10 << 30));
        assert_eq!(parse_retention_bytes("unlimited"), Ok(-1));
    }

    #[test]
    fn usage_errors_are_clap_errors() {
        let error = Cli::try_parse_from(["spool", "consume", "orders", "--from", "soon"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        let error = Cli::try_parse_from(["spool", "topic", "create", "x", "--retention", "7"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        let cli = Cli::try_parse_from(["spool", "--server", "http://h:1", "offsets", "t"]).unwrap();
        assert_eq!(cli.server(), "http://h:1");
    }

    #[test]
    fn threads_is_a_global_count_of_at_least_one() {
        let cli = Cli::try_parse_from(["spool", "bench", "fetch", "--threads", "1"]).unwrap();
        assert_eq!(cli.threads, Some(1));
        let cli = Cli::try_parse_from(["spool", "offsets", "t"]).unwrap();
        assert_eq!(cli.threads, None);
        for bad in ["0", "-1", "many", "5000"] {
            let error = Cli::try_parse_from(["spool", "--threads", bad, "offsets", "t"]).unwrap_err();
            assert_eq!(error.exit_code(), 2, "--threads {bad}");
        }
    }

    #[test]
    fn produce_waits_for_fsync_by_default() {
        let Command::Produce(args) = Cli::try_parse_from(["spool", "produce", "t"]).unwrap().command else {
            panic!("not a produce");
        };
        assert_eq!(args.durability, DurabilityArg::Fsync);
    }
}
