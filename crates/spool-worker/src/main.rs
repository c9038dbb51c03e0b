//! `spool-worker`: runs a shell command (`--exec`) or calls an HTTP endpoint
//! (`--http`) for each job of one or more Spool queues.
//!
//! It is a thin binary over [`spool_client::worker`], which claims jobs in
//! batches, bounds concurrency, heartbeats, batches acknowledgements,
//! reconnects with backoff and shuts down gracefully on SIGTERM or SIGINT.
//! What a job's exit code or HTTP status means is in `--help` and in the
//! handler modules. `metrics.rs` counts what the handlers do and serves
//! it at `/metrics` with `--metrics-listen`.
//!
//! Layout: `args.rs` (the clap command line and its help), `exec.rs` (the
//! command handler), `process_group.rs` (killing a command with its
//! children; the crate's only `unsafe`, one `kill(2)` call), `guard.rs` (the
//! process that kills the commands' groups when the worker dies without
//! doing so), `http.rs` (the HTTP handler, hyper 1).
//!
//! What it is not: no TLS for `--http`, no configuration file, no
//! scheduling of its own (delays, retries and dead jobs are the server's).
//! A worker killed with SIGKILL cannot kill its commands' process groups
//! itself; its guard does, so no command runs beside the re-delivery of its
//! job after the lease.
//! Exit codes: 0 after a clean shutdown, 1 on an error, 2 on a usage error.

#![deny(unsafe_code)]

mod args;
mod exec;
mod guard;
mod http;
mod metrics;
mod process_group;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use spool_client::worker::{Worker, WorkerConfig};
use spool_client::{Client, ClientOptions};
use spool_telemetry::otlp::{Exporter, OtlpSettings, init_subscriber};
use tokio::signal::unix::{SignalKind, signal};

use crate::args::Cli;
use crate::exec::ExecHandler;
use crate::http::HttpHandler;
use crate::metrics::WorkerMetrics;

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == guard::GUARD_ARG)
    {
        guard::run(std::io::stdin().lock());
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    // The exporter's gRPC channel lives on the runtime.
    let exporter = {
        let _entered = runtime.enter();
        match init_tracing(&cli) {
            Ok(exporter) => exporter,
            Err(error) => {
                eprintln!("error: {error:#}");
                return ExitCode::from(2);
            }
        }
    };
    let result = runtime.block_on(run(cli));
    if let Some(exporter) = exporter {
        // Sends the last spans; the runtime is still there to carry them.
        exporter.shutdown();
    }
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// Logs on stderr, and the trace spans' export when an endpoint is given
/// (`--otlp-endpoint`, else `OTEL_EXPORTER_OTLP_ENDPOINT`).
fn init_tracing(cli: &Cli) -> anyhow::Result<Option<Exporter>> {
    let otlp = OtlpSettings::resolve(
        cli.otlp_endpoint.as_deref(),
        |name| std::env::var(name).ok(),
        "spool-worker",
    )
    .context("invalid OTEL_EXPORTER_OTLP_ENDPOINT")?;
    let exporter = init_subscriber(false, otlp.as_ref())?;
    if let Some(otlp) = &otlp {
        tracing::info!(endpoint = %otlp.endpoint, service_name = %otlp.service_name, "exporting trace spans over OTLP");
    }
    Ok(exporter)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Installed before anything else so an early SIGTERM is a graceful
    // shutdown, not the default of dying on the spot.
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let shutdown = async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "received a signal");
    };

    // Connects on the first call: a worker may start before its server, and
    // it keeps retrying (with backoff) while the server is away.
    let options = ClientOptions {
        token: cli.token.clone(),
        tls_ca: cli.tls_ca.clone(),
        tls_cert: cli.tls_cert.clone(),
        tls_key: cli.tls_key.clone(),
        ..ClientOptions::default()
    };
    let client = Client::connect_lazy(cli.server.clone(), options)
        .with_context(|| format!("invalid server address {:?}", cli.server))?;
    let mut config = WorkerConfig {
        concurrency: cli.concurrency as usize,
        prefetch: cli.prefetch as usize,
        lease: cli.lease,
        timeout: Some(cli.timeout),
        retry_delay: cli.retry_delay,
        grace: cli.grace,
        ..WorkerConfig::default()
    };
    if let Some(worker_id) = cli.worker_id {
        config.worker_id = worker_id;
    }
    let metrics = WorkerMetrics::new(&cli.queues, u64::from(cli.concurrency));
    if let Some(address) = cli.metrics_listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} (--metrics-listen)"))?;
        let address = listener.local_addr()?;
        let exposition = Arc::new(metrics.exposition());
        tokio::spawn(spool_metrics::http::serve(
            listener,
            move |request| {
                let exposition = Arc::clone(&exposition);
                async move { metrics::answer(&exposition, &request) }
            },
            std::future::pending(),
        ));
        tracing::info!(%address, "serving metrics");
        // Machine-readable, for scripts and tests; a closed stdout must not
        // stop the worker, so write errors are ignored.
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "metrics listening on {address}");
        let _ = stdout.flush();
    }
    let mut worker = Worker::new(&client, config);
    if let Some(command) = cli.exec {
        tracing::info!(%command, "running a command per job");
        guard::Guard::start().context("cannot start the guard process of the commands")?;
        let handler = ExecHandler::new(
            command,
            cli.result_bytes_max,
            cli.retry_delay,
            Arc::clone(&metrics),
        );
        for queue in &cli.queues {
            worker = worker.handle(queue.clone(), metrics.meter(queue, handler.clone()));
        }
    } else if let Some(url) = cli.http {
        tracing::info!(%url, "posting each job");
        let handler = HttpHandler::new(
            url,
            cli.result_bytes_max,
            cli.retry_delay,
            cli.retry_after_max,
            Arc::clone(&metrics),
        );
        for queue in &cli.queues {
            worker = worker.handle(queue.clone(), metrics.meter(queue, handler.clone()));
        }
    }
    tracing::info!(server = %cli.server, "connecting");
    // The runtime logs what it did when it stops.
    worker.run_until(shutdown).await.context("the worker stopped")?;
    Ok(())
}
