//! `spool`: the command-line client of a Spool server.
//!
//! It manages topics, produces records from stdin, consumes and replays them
//! to stdout, reads offsets, reads and stores checkpoints, enqueues and
//! inspects background jobs (`spool job`, `spool queue`), shows a live view
//! of topics and queues (`spool top`), and benchmarks a server (`spool
//! bench`). Every command talks to one server (`--server`, env
//! `SPOOL_SERVER`, default `http://127.0.0.1:7070`) through `spool-client`.
//!
//! Layout: `args.rs` (the clap command line; `args/jobs.rs` for the job
//! commands), `commands/` (one module per command family), `bench/` (the
//! benchmarks), `units.rs` (durations and sizes), `time.rs` (RFC 3339
//! timestamps), `json.rs` (records as JSON lines), `output.rs` (every write
//! to stdout and stderr), `table.rs` and `progress.rs` (terminal output),
//! `terminal.rs` (raw mode and the alternate screen of `spool top`),
//! `errors.rs` (messages that say what to do).
//!
//! What it is not: no server, no configuration file, no interactive mode
//! beyond `spool top`'s `q`.
//! Exit codes: 0 success (also when the reader of stdout went away, as in
//! `spool consume orders | head -1`), 1 an error reported on stderr, 2 a
//! usage error (clap's).

#![deny(unsafe_code)]
// Writes go through `output.rs`, which turns a closed stdout into a quiet
// exit instead of the panic of `println!`.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod args;
mod bench;
mod commands;
mod errors;
mod json;
mod output;
mod progress;
mod table;
mod terminal;
mod time;
mod units;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use spool_client::{Client, ClientOptions};

use crate::args::{Cli, Command};
use crate::errors::{Reported, Subject, explain};
use crate::output::{errln, stdout_error};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Warnings of the client library (a checkpoint clamped into the log,
    // a worker retrying) reach the user; failures do not come this way but
    // as the command's one `error:` line. Colour only on a terminal.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.threads {
        builder.worker_threads(usize::from(threads));
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            errln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let server = cli.server();
    // The command runs as a task on the runtime's workers, not on this
    // thread: the client's connection tasks live there, and a command
    // driven from the blocked main thread pays a wake of another thread and
    // a context switch at every hand-off to them and back
    // (docs/performance.md, "Third pass").
    let result = runtime.block_on(async {
        match tokio::spawn(run(cli)).await {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => Err(anyhow::anyhow!("the command's task stopped: {error}")),
        }
    });
    // Subscriptions and sender tasks may still be parked: do not wait.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `spool topic list | head -1` closes our stdout: the reader has
        // what it wanted, which is success.
        Err(error) if stdout_error(&error).is_some_and(|e| e.is_closed()) => ExitCode::SUCCESS,
        Err(error) => {
            errln!("error: {}", render(&error, &server));
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let options = cli.client_options();
    let server = cli.server();
    // Token commands without a server work on a local file.
    let command = match cli.command {
        Command::Token(command) if cli.server.is_none() || command.names_file() => {
            return commands::token::run(command);
        }
        Command::InitSecurity(args) => return commands::init_security::run(args),
        command => command,
    };
    let context = Context::connect(server, options).await?;
    match command {
        Command::Topic(command) => commands::topic::run(&context, command).await,
        Command::Produce(args) => commands::produce::run(&context, args).await,
        Command::Consume(args) => commands::consume::run(&context, args).await,
        Command::Replay(args) => commands::consume::replay(&context, args).await,
        Command::Offsets(args) => commands::offsets::offsets(&context, args).await,
        Command::Checkpoint(command) => commands::offsets::checkpoint(&context, command).await,
        Command::Job(command) => commands::job::run(&context, command).await,
        Command::Queue(command) => commands::queue::run(&context, command).await,
        Command::Bench(command) => bench::run(&context, command).await,
        Command::Top(args) => commands::top::run(&context, args).await,
        Command::Metrics(command) => commands::metrics::run(&context, command).await,
        Command::Token(command) => commands::token::remote(&context, command).await,
        Command::Audit(args) => commands::audit::run(&context, args).await,
        Command::Cluster(command) => commands::cluster::run(&context, command).await,
        Command::InitSecurity(_) => unreachable!("handled before connecting"),
    }
}

/// What every command needs: the server's address and a connection to it.
#[derive(Debug, Clone)]
pub struct Context {
    pub server: String,
    pub client: Client,
    /// Token and TLS settings, for commands that open more connections.
    pub options: ClientOptions,
}

impl Context {
    async fn connect(server: String, options: ClientOptions) -> anyhow::Result<Self> {
        let url = normalize_url(&server);
        let client = Client::connect_with(url, options.clone())
            .await
            .explain(Subject {
                server: &server,
                ..Subject::default()
            })?;
        Ok(Context {
            server,
            client,
            options,
        })
    }

    /// The subject of errors about `topic`.
    pub fn about<'a>(&'a self, topic: &'a str) -> Subject<'a> {
        Subject {
            server: &self.server,
            topic: Some(topic),
            ..Subject::default()
        }
    }

    /// The subject of errors about storing a checkpoint in `topic`.
    pub fn about_checkpoint<'a>(&'a self, topic: &'a str) -> Subject<'a> {
        Subject {
            checkpoint: true,
            ..self.about(topic)
        }
    }

    /// The subject of errors about job `id` (its decimal form).
    pub fn about_job<'a>(&'a self, id: &'a str) -> Subject<'a> {
        Subject {
            server: &self.server,
            job: Some(id),
            ..Subject::default()
        }
    }

    pub fn subject(&self) -> Subject<'_> {
        Subject {
            server: &self.server,
            ..Subject::default()
        }
    }
}

/// Accepts `host:port` for `http://host:port`.
fn normalize_url(server: &str) -> String {
    if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    }
}

/// Phrases client errors for the user at the call site.
pub trait Explain<T> {
    fn explain(self, subject: Subject<'_>) -> anyhow::Result<T>;
}

impl<T> Explain<T> for Result<T, spool_client::Error> {
    fn explain(self, subject: Subject<'_>) -> anyhow::Result<T> {
        self.map_err(|error| anyhow::Error::new(Reported(explain(&error, subject))))
    }
}

fn render(error: &anyhow::Error, server: &str) -> String {
    if let Some(client_error) = error.downcast_ref::<spool_client::Error>() {
        return explain(
            client_error,
            Subject {
                server,
                ..Subject::default()
            },
        );
    }
    format!("{error:#}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_addresses_get_a_scheme() {
        assert_eq!(normalize_url("127.0.0.1:7070"), "http://127.0.0.1:7070");
        assert_eq!(normalize_url("http://h:1"), "http://h:1");
    }
}
