//! Reloading the token file and the TLS certificates without a restart:
//! on SIGHUP, and when one of the files changes (its modification time,
//! size or inode, checked every [`POLL_INTERVAL`]; a rename over the file,
//! as `spool token` and most deployment tools write, changes the inode).
//! A reload that fails keeps what is in force and logs the error; the
//! next change or SIGHUP tries again.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::access::Access;
use crate::tls::Certificates;

/// How often the files' metadata is compared.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What identifies a version of a file: modification time, size, inode.
type Stamp = Option<(i64, i64, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((
        metadata.mtime(),
        metadata.mtime_nsec(),
        metadata.size(),
        metadata.ino(),
    ))
}

/// A file watched for changes.
#[derive(Debug)]
struct Watched {
    path: PathBuf,
    stamp: Stamp,
}

impl Watched {
    fn new(path: &Path) -> Watched {
        Watched {
            path: path.to_owned(),
            stamp: stamp(path),
        }
    }

    /// Whether the file changed since the last look.
    fn changed(&mut self) -> bool {
        let now = stamp(&self.path);
        let changed = now != self.stamp;
        self.stamp = now;
        changed
    }
}

fn reload_tokens(access: &Access, cause: &str) {
    match access.reload() {
        Ok(count) => tracing::info!(tokens = count, cause, "token file reloaded"),
        Err(error) => tracing::error!(%error, cause, "token file not reloaded; the tokens in force stay"),
    }
}

fn reload_certificates(certificates: &Certificates, cause: &str) {
    match certificates.reload() {
        Ok(()) => {
            tracing::info!(cert = %certificates.files().cert.display(), cause, "TLS certificates reloaded")
        }
        Err(error) => {
            tracing::error!(%error, cause, "TLS certificates not reloaded; the certificates in force stay")
        }
    }
}

/// Watches until shutdown. `certificates` are the listeners' (the gRPC
/// and the admin listener each have their own configuration).
pub async fn run(
    access: Arc<Access>,
    certificates: Vec<Arc<Certificates>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "no SIGHUP handler; files are still reloaded when they change");
            None
        }
    };
    let mut tokens = access.tokens_file().map(Watched::new);
    let mut tls: Vec<(Arc<Certificates>, Vec<Watched>)> = certificates
        .into_iter()
        .map(|c| {
            let files = c.files();
            let mut watched = vec![Watched::new(&files.cert), Watched::new(&files.key)];
            watched.extend(files.client_ca.as_deref().map(Watched::new));
            (c, watched)
        })
        .collect();
    let mut interval = tokio::time::interval(POLL_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let hangup_received = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = hangup_received => {
                if let Some(watched) = tokens.as_mut() {
                    watched.changed();
                    reload_tokens(&access, "SIGHUP");
                }
                for (certificates, watched) in &mut tls {
                    watched.iter_mut().for_each(|w| { w.changed(); });
                    reload_certificates(certificates, "SIGHUP");
                }
            }
            _ = interval.tick() => {
                if let Some(watched) = tokens.as_mut()
                    && watched.changed()
                {
                    reload_tokens(&access, "file changed");
                }
                for (certificates, watched) in &mut tls {
                    // Every file is looked at, so one write of cert and key
                    // together reloads once.
                    let changed = watched.iter_mut().fold(false, |any, w| w.changed() | any);
                    if changed {
                        reload_certificates(certificates, "file changed");
                    }
                }
            }
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}
