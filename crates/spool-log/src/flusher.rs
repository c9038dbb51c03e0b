//! Group commit: threads that run fsyncs for partitions with waiting
//! `Fsync` appenders, so that one flush covers every append made before it.
//!
//! An appender that needs durability queues its partition (once: a flag
//! keeps it from being queued twice) and waits on the partition's durable
//! offset. A flusher thread takes the partition off the queue, clears the
//! flag, reads the high watermark and syncs up to it. Appends that land
//! while that sync runs queue the partition again and are covered by the
//! next sync, together with everything else that arrived meanwhile.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::error::Result;

/// What the flusher flushes: a partition, seen through this trait so that
/// the flusher does not depend on the partition that depends on it.
pub(crate) trait FlushTarget: std::fmt::Debug + Send + Sync {
    /// The flag that keeps the target from being queued twice.
    fn flush_queued(&self) -> &AtomicBool;

    /// Syncs everything published so far. A failure is the target's to
    /// handle (a partition poisons itself); the flusher moves on.
    fn flush(&self) -> Result<()>;
}

#[derive(Debug, Default)]
struct Queue {
    partitions: VecDeque<Arc<dyn FlushTarget>>,
    stopped: bool,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Flusher {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Flusher {
    /// Starts `threads` flusher threads.
    pub fn start(self: &Arc<Self>, threads: usize) -> std::io::Result<Vec<JoinHandle<()>>> {
        (0..threads)
            .map(|i| {
                let flusher = Arc::clone(self);
                std::thread::Builder::new()
                    .name(format!("spool-flush-{i}"))
                    .spawn(move || flusher.run())
            })
            .collect()
    }

    /// Queues `partition` for a flush unless it is queued already. Returns
    /// false if the flusher has stopped.
    pub fn request<T: FlushTarget + 'static>(&self, partition: &Arc<T>) -> bool {
        if partition.flush_queued().swap(true, Ordering::SeqCst) {
            return true;
        }
        let mut queue = self.queue.lock().expect("flush queue lock");
        if queue.stopped {
            partition.flush_queued().store(false, Ordering::SeqCst);
            return false;
        }
        queue
            .partitions
            .push_back(Arc::clone(partition) as Arc<dyn FlushTarget>);
        drop(queue);
        self.ready.notify_one();
        true
    }

    /// Stops the threads once the queue is empty.
    pub fn stop(&self) {
        self.queue.lock().expect("flush queue lock").stopped = true;
        self.ready.notify_all();
    }

    fn run(&self) {
        loop {
            let partition = {
                let mut queue = self.queue.lock().expect("flush queue lock");
                loop {
                    if let Some(partition) = queue.partitions.pop_front() {
                        break partition;
                    }
                    if queue.stopped {
                        return;
                    }
                    queue = self.ready.wait(queue).expect("flush queue lock");
                }
            };
            // Clear before reading the high watermark, so an append that
            // lands after the read queues the partition again.
            partition.flush_queued().store(false, Ordering::SeqCst);
            // A failure poisons the partition and wakes its waiters with
            // the error; the flusher itself carries on with other partitions.
            let _ = partition.flush();
        }
    }
}
