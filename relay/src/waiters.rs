//! Long-poll support: `/fetch {recipient, wait}` requests park here until a packet for their
//! recipient is stored. A waiting request is a future holding one `Notify` subscription, no
//! thread, so thousands of them cost a few hundred bytes each.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

#[derive(Default)]
pub struct Waiters {
    by_recipient: Mutex<HashMap<[u8; 32], Arc<Notify>>>,
    waiting: AtomicUsize,
}

/// A registration for one recipient; unregisters on drop.
pub struct Subscription<'a> {
    waiters: &'a Waiters,
    recipient: [u8; 32],
    pub notify: Arc<Notify>,
}

impl Waiters {
    /// Wakes every request waiting for this recipient.
    pub fn notify(&self, recipient: &[u8; 32]) {
        if let Some(n) = self.by_recipient.lock().get(recipient) {
            n.notify_waiters();
        }
    }

    pub fn subscribe(&self, recipient: [u8; 32]) -> Subscription<'_> {
        let notify = self
            .by_recipient
            .lock()
            .entry(recipient)
            .or_default()
            .clone();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Subscription {
            waiters: self,
            recipient,
            notify,
        }
    }

    /// Requests currently parked.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        self.waiters.waiting.fetch_sub(1, Ordering::Relaxed);
        let mut map = self.waiters.by_recipient.lock();
        // The map's reference and ours: nobody else waits, so drop the entry.
        if Arc::strong_count(&self.notify) == 2 {
            map.remove(&self.recipient);
        }
    }
}
