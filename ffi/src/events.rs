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
    gate: Arc<Gate>,
    last_seq: Arc<AtomicU64>,
}

/// What makes `cancel()` final: each `on_event` starts only through the gate, and closing it
/// waits for a call in progress. Without it an event taken off the stream just before the
/// cancel was still handed over just after it (seen from the JVM tests: one event more after
/// `cancel()` had returned).
#[derive(Default)]
struct Gate {
    state: std::sync::Mutex<GateState>,
    idle: std::sync::Condvar,
}

#[derive(Default)]
struct GateState {
    closed: bool,
    /// The thread running `on_event`, while one does.
    running_on: Option<std::thread::ThreadId>,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `deliver` unless the gate is closed; `false` when it was.
    fn pass(&self, deliver: impl FnOnce()) -> bool {
        {
            let mut state = self.lock();
            if state.closed {
                return false;
            }
            state.running_on = Some(std::thread::current().id());
        }
        // Reset even if the listener panics, so that `close` never waits for ever.
        struct Done<'a>(&'a Gate);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.lock().running_on = None;
                self.0.idle.notify_all();
            }
        }
        let _done = Done(self);
        deliver();
        true
    }

    /// Closes the gate and waits for a call in progress, unless that call is the one closing
    /// it (a listener that cancels its own subscription).
    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        let me = std::thread::current().id();
        while state.running_on.is_some_and(|t| t != me) {
            state = self
                .idle
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

impl Subscription {
    /// Starts delivering; must be called inside the ffi runtime's context.
    pub(crate) fn start(
        engine: &Engine,
        from_seq: u64,
        listener: Arc<dyn EventListener>,
    ) -> Arc<Subscription> {
        let stop = CancellationToken::new();
        let gate = Arc::new(Gate::default());
        let last_seq = Arc::new(AtomicU64::new(from_seq));
        let task_stop = stop.clone();
        let task_gate = gate.clone();
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
                        let gate = task_gate.clone();
                        let last = task_last.clone();
                        // The app's code may block: off the async workers. The seq is stored
                        // inside the gate, so that `last_seq()` after `cancel()` is final too.
                        let delivered = tokio::task::spawn_blocking(move || {
                            gate.pass(|| {
                                listener.on_event(event);
                                last.store(seq, Ordering::Release);
                            })
                        })
                        .await;
                        match delivered {
                            Ok(true) => {}
                            Ok(false) => return,
                            Err(e) => {
                                tracing::warn!(seq, "event listener failed: {e}");
                                task_last.store(seq, Ordering::Release);
                            }
                        }
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
        Arc::new(Subscription {
            stop,
            gate,
            last_seq,
        })
    }
}

#[uniffi::export]
impl Subscription {
    /// Stops delivery: when it returns, no `on_event` runs and none follows. It waits for one
    /// already running to finish, unless it is called from inside that `on_event`.
    pub fn cancel(&self) {
        self.stop.cancel();
        self.gate.close();
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
        self.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn closing_the_gate_waits_for_the_call_in_progress_and_admits_no_other() {
        let gate = Arc::new(Gate::default());
        let finished = Arc::new(AtomicBool::new(false));
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let call = {
            let (gate, finished) = (gate.clone(), finished.clone());
            std::thread::spawn(move || {
                gate.pass(|| {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    finished.store(true, Ordering::SeqCst);
                })
            })
        };
        started.recv().unwrap();
        let closer = {
            let (gate, finished) = (gate.clone(), finished.clone());
            std::thread::spawn(move || {
                gate.close();
                finished.load(Ordering::SeqCst)
            })
        };
        // Give the closer time to reach its wait; had it not waited, it would see `false`.
        std::thread::sleep(Duration::from_millis(100));
        release.send(()).unwrap();
        assert!(
            closer.join().unwrap(),
            "close returned while on_event was running"
        );
        assert!(call.join().unwrap());
        assert!(!gate.pass(|| panic!("a call after close")));
    }

    #[test]
    fn a_listener_may_close_its_own_gate() {
        let gate = Gate::default();
        assert!(gate.pass(|| gate.close()));
        assert!(!gate.pass(|| {}));
    }
}
