//! Bounds on produce bytes being appended at once, in total and per
//! connection, so a producer faster than the disk waits (and then hears
//! RESOURCE_EXHAUSTED) instead of growing server memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::metrics::refusals::{self, Reason};

/// Permits are counted in KiB so that a `u32` of them covers terabytes.
const UNIT_BYTES: u64 = 1024;

#[derive(Debug)]
pub struct InflightLimiter {
    total: Arc<Semaphore>,
    total_units: u32,
    per_connection_units: u32,
    connections: Mutex<HashMap<SocketAddr, Arc<Semaphore>>>,
    wait: Duration,
}

/// Room held by one request; released when dropped.
#[derive(Debug)]
pub struct InflightPermit {
    _total: OwnedSemaphorePermit,
    _connection: Option<OwnedSemaphorePermit>,
}

fn units(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT_BYTES).max(1)).unwrap_or(u32::MAX)
}

impl InflightLimiter {
    pub fn new(total_bytes: u64, per_connection_bytes: u64, wait: Duration) -> Self {
        InflightLimiter {
            total: Arc::new(Semaphore::new(units(total_bytes) as usize)),
            total_units: units(total_bytes),
            per_connection_units: units(per_connection_bytes),
            connections: Mutex::new(HashMap::new()),
            wait,
        }
    }

    /// Waits for room for `bytes` from `peer` (unknown peers share the total
    /// limit only); RESOURCE_EXHAUSTED if none frees up in time.
    pub async fn acquire(&self, peer: Option<SocketAddr>, bytes: u64) -> Result<InflightPermit, Status> {
        let wanted = units(bytes);
        let connection = peer.map(|peer| {
            let mut connections = self.connections.lock().expect("connections lock");
            // Forget connections nobody holds room for any more.
            if connections.len() > 1024 {
                connections.retain(|_, s| Arc::strong_count(s) > 1);
            }
            Arc::clone(
                connections
                    .entry(peer)
                    .or_insert_with(|| Arc::new(Semaphore::new(self.per_connection_units as usize))),
            )
        });
        let acquire = async {
            let connection = match connection {
                Some(semaphore) => Some(
                    semaphore
                        .acquire_many_owned(wanted.min(self.per_connection_units))
                        .await
                        .expect("never closed"),
                ),
                None => None,
            };
            let total = Arc::clone(&self.total)
                .acquire_many_owned(wanted)
                .await
                .expect("never closed");
            InflightPermit {
                _total: total,
                _connection: connection,
            }
        };
        tokio::time::timeout(self.wait, acquire).await.map_err(|_| {
            refusals::count(Reason::InflightBytes);
            Status::resource_exhausted(format!(
                "the server has no room for {bytes} more bytes in flight; \
                 back off and retry, or produce with smaller batches"
            ))
        })
    }
}

impl InflightLimiter {
    /// Bytes held by requests now, in whole KiB as the permits count them.
    pub fn inflight_bytes(&self) -> u64 {
        let free = self.total.available_permits() as u64;
        u64::from(self.total_units).saturating_sub(free) * UNIT_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_then_refuses_when_full() {
        let limiter = InflightLimiter::new(8 * 1024, 4 * 1024, Duration::from_millis(50));
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let first = limiter.acquire(Some(peer), 4 * 1024).await.unwrap();
        assert_eq!(limiter.inflight_bytes(), 4 * 1024);
        let refused = refusals::refused(Reason::InflightBytes);
        let err = limiter.acquire(Some(peer), 1024).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(refusals::refused(Reason::InflightBytes) > refused);
        // Another connection still has room under the total.
        let other: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let _second = limiter.acquire(Some(other), 4 * 1024).await.unwrap();
        drop(first);
        limiter.acquire(Some(peer), 1024).await.unwrap();
    }
}
