//! `TransparentService` and `CallService` over the engine: transparent mode per contact, and
//! calls whose Opus audio flows through one bidirectional `Audio` stream per call.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use jasper_engine::{EngineError, TRANSPARENT_MODE_WARNING};
use jasper_proto::convert;
use jasper_proto::v1 as pb;
use parking_lot::Mutex;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use crate::service::Api;
use crate::status::{engine_status, status};

/// Longest wait an `OpenSession` may ask for.
const MAX_CONNECT_WAIT: Duration = Duration::from_secs(60);

/// Which `Audio` stream of each call receives the peer's frames: the newest. A frontend that
/// reopens its stream (after a restart of its own, say) takes the audio over at once, and the
/// older stream ends, instead of the two splitting the frames between them.
#[derive(Clone, Default)]
pub struct AudioReaders(Arc<Mutex<HashMap<String, watch::Sender<u64>>>>);

impl AudioReaders {
    /// Registers a new reader of `call`: its generation, and a receiver that changes when a
    /// newer reader arrives.
    fn claim(&self, call: &str) -> (u64, watch::Receiver<u64>) {
        let mut readers = self.0.lock();
        readers.retain(|_, tx| tx.receiver_count() > 0);
        let tx = readers
            .entry(call.to_owned())
            .or_insert_with(|| watch::channel(0).0);
        let generation = *tx.borrow() + 1;
        tx.send_replace(generation);
        (generation, tx.subscribe())
    }
}

#[tonic::async_trait]
impl pb::transparent_service_server::TransparentService for Api {
    async fn warning(
        &self,
        _: Request<pb::TransparentWarningRequest>,
    ) -> Result<Response<pb::TransparentWarningResponse>, Status> {
        Ok(Response::new(pb::TransparentWarningResponse {
            text: TRANSPARENT_MODE_WARNING.into(),
        }))
    }

    async fn set(
        &self,
        request: Request<pb::SetTransparentRequest>,
    ) -> Result<Response<pb::SetTransparentResponse>, Status> {
        let r = request.into_inner();
        let enabled = r.enabled;
        let status = self
            .blocking(move |e| e.transparent().set(&r.contact, r.enabled))
            .await?;
        Ok(Response::new(pb::SetTransparentResponse {
            status: Some(convert::transparent_status(status)),
            warning: if enabled {
                TRANSPARENT_MODE_WARNING.into()
            } else {
                String::new()
            },
        }))
    }

    async fn status(
        &self,
        request: Request<pb::TransparentStatusRequest>,
    ) -> Result<Response<pb::TransparentStatusResponse>, Status> {
        let contact = request.into_inner().contact;
        let statuses = self
            .blocking(move |e| match contact {
                Some(c) => e.transparent().status(&c).map(|s| vec![s]),
                None => e.transparent().statuses(),
            })
            .await?;
        Ok(Response::new(pb::TransparentStatusResponse {
            statuses: statuses
                .into_iter()
                .map(convert::transparent_status)
                .collect(),
        }))
    }

    async fn open_session(
        &self,
        request: Request<pb::OpenSessionRequest>,
    ) -> Result<Response<pb::OpenSessionResponse>, Status> {
        let r = request.into_inner();
        let wait = match r.wait_ms {
            0 => Duration::from_secs(10),
            ms => Duration::from_millis(u64::from(ms)).min(MAX_CONNECT_WAIT),
        };
        let status = self
            .engine
            .transparent()
            .connect(&r.contact, wait)
            .await
            .map_err(|e| engine_status(&e))?;
        Ok(Response::new(pb::OpenSessionResponse {
            status: Some(convert::transparent_status(status)),
        }))
    }

    async fn close_session(
        &self,
        request: Request<pb::CloseSessionRequest>,
    ) -> Result<Response<pb::CloseSessionResponse>, Status> {
        let contact = request.into_inner().contact;
        let status = self
            .engine
            .transparent()
            .disconnect(&contact)
            .await
            .map_err(|e| engine_status(&e))?;
        Ok(Response::new(pb::CloseSessionResponse {
            status: Some(convert::transparent_status(status)),
        }))
    }
}

pub type AudioStream = Pin<Box<dyn Stream<Item = Result<pb::AudioOut, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::call_service_server::CallService for Api {
    async fn start(
        &self,
        request: Request<pb::StartCallRequest>,
    ) -> Result<Response<pb::StartCallResponse>, Status> {
        let contact = request.into_inner().contact;
        let call = self
            .engine
            .calls()
            .start(&contact)
            .await
            .map_err(|e| engine_status(&e))?;
        Ok(Response::new(pb::StartCallResponse {
            call: Some(convert::call(call)),
        }))
    }

    async fn accept(
        &self,
        request: Request<pb::AcceptCallRequest>,
    ) -> Result<Response<pb::AcceptCallResponse>, Status> {
        let id = request.into_inner().call_id;
        let call = self.blocking(move |e| e.calls().accept(&id)).await?;
        Ok(Response::new(pb::AcceptCallResponse {
            call: Some(convert::call(call)),
        }))
    }

    async fn reject(
        &self,
        request: Request<pb::RejectCallRequest>,
    ) -> Result<Response<pb::RejectCallResponse>, Status> {
        let id = request.into_inner().call_id;
        let call = self.blocking(move |e| e.calls().reject(&id)).await?;
        Ok(Response::new(pb::RejectCallResponse {
            call: Some(convert::call(call)),
        }))
    }

    async fn hang_up(
        &self,
        request: Request<pb::HangUpRequest>,
    ) -> Result<Response<pb::HangUpResponse>, Status> {
        let id = request.into_inner().call_id;
        let call = self.blocking(move |e| e.calls().hang_up(&id)).await?;
        Ok(Response::new(pb::HangUpResponse {
            call: Some(convert::call(call)),
        }))
    }

    async fn list(
        &self,
        _: Request<pb::ListCallsRequest>,
    ) -> Result<Response<pb::ListCallsResponse>, Status> {
        Ok(Response::new(pb::ListCallsResponse {
            calls: self
                .engine
                .calls()
                .list()
                .into_iter()
                .map(convert::call)
                .collect(),
        }))
    }

    type AudioStream = AudioStream;

    async fn audio(
        &self,
        request: Request<Streaming<pb::AudioIn>>,
    ) -> Result<Response<Self::AudioStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound.message().await?.ok_or_else(|| {
            status(
                tonic::Code::InvalidArgument,
                "invalid_argument",
                "the audio stream ended before naming its call",
            )
        })?;
        if first.call_id.is_empty() {
            return Err(status(
                tonic::Code::InvalidArgument,
                "invalid_argument",
                "the first AudioIn must carry call_id",
            ));
        }
        let call_id = first.call_id.clone();
        self.engine
            .calls()
            .get(&call_id)
            .map_err(|e| engine_status(&e))?;
        let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Result<pb::AudioOut, Status>>(64);

        // Client → peer: every frame goes out on the call's track; a refused frame ends the
        // stream with the refusal.
        let engine = self.engine.clone();
        // Weak: the response stream ends when the call does, even while the client keeps its
        // side open.
        let (id, errors) = (call_id.clone(), out_tx.downgrade());
        tokio::spawn(async move {
            let mut next = first.frame;
            loop {
                if let Some(f) = next.take()
                    && let Err(e) = engine.calls().send_audio(&id, f.opus, f.duration_us).await
                {
                    if let Some(errors) = errors.upgrade() {
                        let _ = errors.send(Err(engine_status(&e))).await;
                    }
                    return;
                }
                match inbound.message().await {
                    Ok(Some(m)) => next = m.frame,
                    Ok(None) | Err(_) => return,
                }
            }
        });

        // Peer → client, until the call ends, the client goes away or a newer stream of the
        // same call takes over.
        let calls = self.engine.calls();
        let (generation, mut newest) = self.audio_readers.claim(&call_id);
        tokio::spawn(async move {
            loop {
                // A client gone or replaced must not take (and lose) one more frame: waiting
                // for a frame is cancelled as soon as either happens.
                let next = tokio::select! {
                    next = calls.next_audio(&call_id, Duration::from_secs(1)) => next,
                    _ = out_tx.closed() => return,
                    _ = newest.wait_for(|g| *g != generation) => return,
                };
                let item = match next {
                    Ok(Some(frame)) => Ok(pb::AudioOut {
                        frame: Some(convert::audio_frame(frame)),
                    }),
                    Ok(None) => continue,
                    Err(EngineError::CallState(_)) => return,
                    Err(e) => Err(engine_status(&e)),
                };
                let last = item.is_err();
                if out_tx.send(item).await.is_err() || last {
                    return;
                }
            }
        });
        let stream = futures::stream::unfold(out_rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
