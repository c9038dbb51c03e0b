//! [`RunSlots`]: the handlers that may run at once, handed to waiting jobs
//! highest priority first, then in claim order, the order the server meant
//! them to run in.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// A fixed number of slots and the jobs waiting for one.
#[derive(Debug)]
pub(crate) struct RunSlots {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Slots nobody holds. Only ever above zero while nobody waits.
    free: usize,
    /// By (priority, highest first; claim sequence). Entries whose receiver
    /// is gone are skipped when a slot frees up.
    waiting: BTreeMap<(Reverse<i32>, u64), oneshot::Sender<RunSlot>>,
}

/// Permission to run one handler; gives the slot to the next waiting job
/// when dropped.
#[derive(Debug)]
pub(crate) struct RunSlot {
    slots: Option<Arc<RunSlots>>,
}

/// A place in line for a slot, taken in claim order.
#[derive(Debug)]
pub(crate) enum Ticket {
    Granted(RunSlot),
    Waiting(oneshot::Receiver<RunSlot>),
}

impl Ticket {
    /// Waits for the slot.
    pub(crate) async fn ready(self) -> RunSlot {
        match self {
            Ticket::Granted(slot) => slot,
            // The sender is only dropped after sending, or with the slots,
            // which the ticket's owner keeps alive.
            Ticket::Waiting(receiver) => receiver.await.expect("slots outlive their tickets"),
        }
    }
}

impl RunSlots {
    pub(crate) fn new(count: usize) -> Arc<Self> {
        Arc::new(RunSlots {
            state: Mutex::new(State {
                free: count,
                waiting: BTreeMap::new(),
            }),
        })
    }

    /// Takes a place in line for job number `sequence` (in claim order) of
    /// `priority`.
    pub(crate) fn enter(self: &Arc<Self>, priority: i32, sequence: u64) -> Ticket {
        let mut state = self.state.lock().expect("slots lock");
        if state.free > 0 {
            state.free -= 1;
            return Ticket::Granted(RunSlot {
                slots: Some(Arc::clone(self)),
            });
        }
        let (sender, receiver) = oneshot::channel();
        state.waiting.insert((Reverse(priority), sequence), sender);
        Ticket::Waiting(receiver)
    }

    fn give_back(self: &Arc<Self>) {
        let mut state = self.state.lock().expect("slots lock");
        while let Some((_, sender)) = state.waiting.pop_first() {
            let slot = RunSlot {
                slots: Some(Arc::clone(self)),
            };
            match sender.send(slot) {
                Ok(()) => return,
                // That job stopped waiting; defuse the slot so its drop does
                // not come back here, and try the next.
                Err(mut slot) => slot.slots = None,
            }
        }
        state.free += 1;
    }

    #[cfg(test)]
    fn free(&self) -> usize {
        self.state.lock().unwrap().free
    }
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        if let Some(slots) = self.slots.take() {
            slots.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(ticket: &Ticket) -> bool {
        matches!(ticket, Ticket::Granted(_))
    }

    #[tokio::test]
    async fn slots_go_by_priority_then_claim_order() {
        let slots = RunSlots::new(1);
        let first = slots.enter(0, 1);
        assert!(granted(&first));
        let low = slots.enter(0, 2);
        let later_low = slots.enter(0, 3);
        let high = slots.enter(5, 4);
        assert!(!granted(&low) && !granted(&later_low) && !granted(&high));
        drop(first.ready().await);
        let high = high.ready().await;
        let Ticket::Waiting(mut low) = low else { panic!() };
        assert!(low.try_recv().is_err(), "the high-priority job goes first");
        drop(high);
        let low = low.await.unwrap();
        drop(low);
        drop(later_low.ready().await);
        assert_eq!(slots.free(), 1);
    }

    #[tokio::test]
    async fn a_ticket_given_up_passes_its_turn_on() {
        let slots = RunSlots::new(1);
        let held = slots.enter(0, 1).ready().await;
        let gone = slots.enter(0, 2);
        let next = slots.enter(0, 3);
        drop(gone);
        drop(held);
        let slot = next.ready().await;
        assert_eq!(slots.free(), 0);
        drop(slot);
        assert_eq!(slots.free(), 1);
    }

    #[tokio::test]
    async fn a_slot_sent_to_a_ticket_dropped_before_it_looked_comes_back() {
        let slots = RunSlots::new(1);
        let held = slots.enter(0, 1).ready().await;
        let waiting = slots.enter(0, 2);
        drop(held); // sent to `waiting`, which never receives it
        assert_eq!(slots.free(), 0);
        drop(waiting);
        assert_eq!(slots.free(), 1);
    }
}
