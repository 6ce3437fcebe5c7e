//! The durable event log: every change a frontend shows is an event with a sequence number,
//! written in the transaction that made the change; streams resume after any number.

use std::time::Duration;

use futures::Stream;

use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::model::*;

/// `engine.events()`: subscribe from a sequence number, or pull the next event.
#[derive(Clone)]
pub struct Events {
    pub(crate) engine: Engine,
}

impl Events {
    /// Events after `from_seq`, then live ones, forever (until the engine stops). Nothing is
    /// lost across disconnects: the log is durable and a resumed stream re-reads it.
    pub fn subscribe(&self, from_seq: u64) -> impl Stream<Item = Result<Event>> + Send + 'static {
        let engine = self.engine.clone();
        let latest = self.engine.inner.latest_event.subscribe();
        futures::stream::unfold(
            (engine, latest, from_seq, std::collections::VecDeque::new()),
            |(engine, mut latest, mut after, mut buffer)| async move {
                loop {
                    if let Some(e) = buffer.pop_front() {
                        let e: Event = e;
                        after = e.seq;
                        return Some((Ok(e), (engine, latest, after, buffer)));
                    }
                    match engine.events().events_after(after, 256).await {
                        Ok(events) if !events.is_empty() => buffer.extend(events),
                        Ok(_) => {
                            tokio::select! {
                                changed = latest.changed() => if changed.is_err() { return None },
                                _ = engine.inner.stop.cancelled() => return None,
                            }
                        }
                        Err(e) => return Some((Err(e), (engine, latest, after, buffer))),
                    }
                }
            },
        )
    }

    /// The seq of the newest event recorded (0 while the log is empty): where a frontend
    /// that has just loaded its snapshot subscribes from.
    pub fn latest_seq(&self) -> u64 {
        *self.engine.inner.latest_event.borrow()
    }

    /// Reads the event log off the runtime threads (a long backlog is a real SQLite scan).
    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.inner.db.events_after(after, limit))
            .await
            .map_err(|e| EngineError::Storage(format!("event read task failed: {e}")))?
    }

    /// The next event after `after_seq`, waiting up to `timeout` (pull style, for bindings).
    pub async fn next(&self, after_seq: u64, timeout: Duration) -> Result<Option<Event>> {
        let mut latest = self.engine.inner.latest_event.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(e) = self.events_after(after_seq, 1).await?.into_iter().next() {
                return Ok(Some(e));
            }
            tokio::select! {
                _ = latest.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
                _ = self.engine.inner.stop.cancelled() => return Err(EngineError::ShuttingDown),
            }
        }
    }
}
