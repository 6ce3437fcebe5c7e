//! The listener adapter over the engine's durable event stream: a task on the ffi runtime reads
//! the stream and hands each event to the app's `EventListener`, one at a time, in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use jasper_engine::Engine;
use tokio_util::sync::CancellationToken;

use jasper_model::Event;

/// Receives events, implemented by the app. Called on an engine thread (not the app's main
/// thread), one call at a time and in `seq` order; the next event waits until `on_event`
/// returns, so hand long work to the app's own executor. An exception thrown here is dropped
/// and the next event is delivered.
#[uniffi::export(callback_interface)]
pub trait EventListener: Send + Sync {
    fn on_event(&self, event: Event);
}

/// Hears how far a `download` is, implemented by the app: ciphertext bytes received of the
/// expected total. Called on an engine thread, in order, never after `download` returned.
#[uniffi::export(callback_interface)]
pub trait DownloadListener: Send + Sync {
    fn on_progress(&self, received: u64, total: u64);
}

/// A running `subscribe`: delivery stops at `cancel()` or when this object is destroyed.
#[derive(uniffi::Object)]
pub struct Subscription {
    stop: CancellationToken,
    last_seq: Arc<AtomicU64>,
}

impl Subscription {
    /// Starts delivering; must be called inside the ffi runtime's context.
    pub(crate) fn start(
        engine: &Engine,
        from_seq: u64,
        listener: Arc<dyn EventListener>,
    ) -> Arc<Subscription> {
        let stop = CancellationToken::new();
        let last_seq = Arc::new(AtomicU64::new(from_seq));
        let task_stop = stop.clone();
        let task_last = last_seq.clone();
        let mut events = Box::pin(engine.events().subscribe(from_seq));
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    biased;
                    _ = task_stop.cancelled() => return,
                    next = events.next() => next,
                };
                match next {
                    Some(Ok(event)) => {
                        let seq = event.seq;
                        let listener = listener.clone();
                        // The app's code may block: off the async workers.
                        let delivered =
                            tokio::task::spawn_blocking(move || listener.on_event(event)).await;
                        if let Err(e) = delivered {
                            tracing::warn!(seq, "event listener failed: {e}");
                        }
                        task_last.store(seq, Ordering::Release);
                    }
                    Some(Err(e)) => {
                        // The stream retries the same position; don't spin on a broken database.
                        tracing::warn!("event stream: {e}");
                        tokio::select! {
                            _ = task_stop.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                    None => return,
                }
            }
        });
        Arc::new(Subscription { stop, last_seq })
    }
}

#[uniffi::export]
impl Subscription {
    /// Stops delivery. An `on_event` already running finishes; no other call follows.
    pub fn cancel(&self) {
        self.stop.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// The `seq` of the last event handed to the listener (`from_seq` before the first):
    /// subscribe again from it to resume without gaps or repeats.
    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
