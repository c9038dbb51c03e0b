//! A monotonically advancing offset that threads and futures can wait on.
//!
//! The partition keeps two: the high watermark (for long-polling readers)
//! and the durable offset (for `Fsync` appenders). Waiting needs no async
//! runtime: blocking callers park on a condition variable, async callers
//! get a plain [`std::future::Future`] woken through its `Waker`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Why a watch stopped advancing for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEnd {
    /// The partition was closed or deleted.
    Closed,
    /// A write or fsync failed; the partition refuses appends.
    Poisoned,
}

#[derive(Debug)]
struct Waiters {
    next_id: u64,
    futures: Vec<(u64, u64, Waker)>,
    end: Option<WatchEnd>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct OffsetWatch {
    value: AtomicU64,
    /// Blocked threads plus registered futures; lets `advance` skip the
    /// lock on the hot path when nobody waits.
    waiting: AtomicUsize,
    waiters: Mutex<Waiters>,
    condvar: Condvar,
}

impl OffsetWatch {
    pub fn new(value: u64) -> Self {
        OffsetWatch {
            value: AtomicU64::new(value),
            waiting: AtomicUsize::new(0),
            waiters: Mutex::new(Waiters {
                next_id: 0,
                futures: Vec::new(),
                end: None,
            }),
            condvar: Condvar::new(),
        }
    }

    pub fn get(&self) -> u64 {
        self.value.load(Ordering::SeqCst)
    }

    /// Raises the value (never lowers it) and wakes waiters it satisfies.
    pub fn advance(&self, value: u64) {
        self.value.fetch_max(value, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.wake(false);
        }
    }

    /// Lowers the value (never raises it), for a log truncated back to
    /// `value`. Waiters for targets above it keep waiting.
    pub fn retreat(&self, value: u64) {
        self.value.fetch_min(value, Ordering::SeqCst);
    }

    /// Ends the watch: every present and future waiter below its target
    /// gets an error.
    pub fn end(&self, end: WatchEnd) {
        let mut waiters = self.waiters.lock().expect("watch lock");
        waiters.end.get_or_insert(end);
        drop(waiters);
        self.wake(true);
    }

    fn wake(&self, all: bool) {
        let value = self.get();
        let mut waiters = self.waiters.lock().expect("watch lock");
        let before = waiters.futures.len();
        waiters.futures.retain(|(_, target, waker)| {
            let done = all || *target <= value;
            if done {
                waker.wake_by_ref();
            }
            !done
        });
        let removed = before - waiters.futures.len();
        self.waiting.fetch_sub(removed, Ordering::SeqCst);
        drop(waiters);
        self.condvar.notify_all();
    }

    fn check(&self, target: u64, end: Option<WatchEnd>) -> Option<Result<u64, WatchEnd>> {
        let value = self.get();
        if value >= target {
            return Some(Ok(value));
        }
        end.map(Err)
    }

    /// Blocks until the value reaches `target`, the watch ends, or the
    /// timeout passes. Returns the value reached (possibly below `target` on
    /// timeout).
    pub fn wait_blocking(&self, target: u64, timeout: Option<Duration>) -> Result<u64, WatchEnd> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut waiters = self.waiters.lock().expect("watch lock");
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let result = loop {
            if let Some(result) = self.check(target, waiters.end) {
                break result;
            }
            match deadline {
                None => waiters = self.condvar.wait(waiters).expect("watch lock"),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break Ok(self.get());
                    }
                    waiters = self
                        .condvar
                        .wait_timeout(waiters, deadline - now)
                        .expect("watch lock")
                        .0;
                }
            }
        };
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        result
    }

    /// A future that resolves once the value reaches `target`.
    pub fn wait(self: &Arc<Self>, target: u64) -> WaitFor {
        WaitFor {
            watch: Arc::clone(self),
            target,
            registration: None,
        }
    }
}

/// Future returned by [`OffsetWatch::wait`]; resolves to the value reached.
#[derive(Debug)]
pub struct WaitFor {
    watch: Arc<OffsetWatch>,
    target: u64,
    registration: Option<u64>,
}

impl Future for WaitFor {
    type Output = Result<u64>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let watch = &this.watch;
        if watch.get() >= this.target {
            return Poll::Ready(Ok(watch.get()));
        }
        let mut waiters = watch.waiters.lock().expect("watch lock");
        if let Some(id) = this.registration {
            if let Some(entry) = waiters.futures.iter_mut().find(|(i, _, _)| *i == id) {
                entry.2.clone_from(cx.waker());
            } else {
                // Woken and removed: register again below if still short.
                this.registration = None;
            }
        }
        if this.registration.is_none() {
            let id = waiters.next_id;
            waiters.next_id += 1;
            waiters.futures.push((id, this.target, cx.waker().clone()));
            watch.waiting.fetch_add(1, Ordering::SeqCst);
            this.registration = Some(id);
        }
        // Check after registering so an advance in between is not missed.
        match watch.check(this.target, waiters.end) {
            Some(result) => {
                drop(waiters);
                this.unregister();
                Poll::Ready(result.map_err(end_error))
            }
            None => Poll::Pending,
        }
    }
}

impl WaitFor {
    fn unregister(&mut self) {
        if let Some(id) = self.registration.take() {
            let mut waiters = self.watch.waiters.lock().expect("watch lock");
            if let Some(i) = waiters.futures.iter().position(|(i, _, _)| *i == id) {
                waiters.futures.swap_remove(i);
                self.watch.waiting.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

impl Drop for WaitFor {
    fn drop(&mut self) {
        self.unregister();
    }
}

pub(crate) fn end_error(end: WatchEnd) -> Error {
    match end {
        WatchEnd::Closed => Error::Closed,
        // The partition fills in names where it has them; a bare future
        // only knows that appends are refused.
        WatchEnd::Poisoned => Error::Poisoned {
            topic: String::new(),
            partition: 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn blocking_wait_wakes_on_advance() {
        let watch = Arc::new(OffsetWatch::new(0));
        let w = Arc::clone(&watch);
        let handle = std::thread::spawn(move || w.wait_blocking(10, None));
        std::thread::sleep(Duration::from_millis(20));
        watch.advance(5);
        watch.advance(12);
        assert_eq!(handle.join().unwrap(), Ok(12));
    }

    #[test]
    fn blocking_wait_times_out_with_the_current_value() {
        let watch = OffsetWatch::new(3);
        assert_eq!(watch.wait_blocking(10, Some(Duration::from_millis(5))), Ok(3));
    }

    #[test]
    fn future_is_woken_by_advance_and_fails_on_end() {
        let watch = Arc::new(OffsetWatch::new(0));
        let flag = Arc::new(Flag(Default::default()));
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        let mut fut = watch.wait(2);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        watch.advance(1);
        assert!(!flag.0.load(Ordering::SeqCst));
        watch.advance(2);
        assert!(flag.0.load(Ordering::SeqCst));
        assert!(matches!(Pin::new(&mut fut).poll(&mut cx), Poll::Ready(Ok(2))));

        let mut fut = watch.wait(100);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        watch.end(WatchEnd::Closed);
        assert!(matches!(
            Pin::new(&mut fut).poll(&mut cx),
            Poll::Ready(Err(Error::Closed))
        ));
        drop(fut);
        assert_eq!(watch.waiting.load(Ordering::SeqCst), 0);
    }
}
