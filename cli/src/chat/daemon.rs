//! The frontend's side of the gRPC API: one task that holds the connection to `jasperd`,
//! carries out the frontend's [`Request`]s and reports back [`Update`]s, and survives the
//! daemon going away: it reconnects, reloads what is shown and resumes the event stream after
//! the last event it passed on, so a restart of the daemon loses nothing on screen.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use jasper_client::{ApiError, Client};
use jasper_proto::convert::from_pb;
use jasper_proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::{Code, Status, Streaming};

use super::app::{Link, PAGE, Request, Update};

/// How long to wait between connection attempts while the daemon is away.
const RETRY: Duration = Duration::from_millis(500);

/// Runs until `requests` closes (the frontend quit).
pub async fn run(
    socket: PathBuf,
    mut requests: mpsc::UnboundedReceiver<Request>,
    updates: mpsc::UnboundedSender<Update>,
) {
    // The last event passed on; None until the first connection reads where the log stands.
    let mut last_seq: Option<u64> = None;
    loop {
        let _ = updates.send(Update::Link(Link::Connecting));
        let session = start_session(&socket, &mut last_seq, &updates).await;
        let (mut client, mut events) = match session {
            Ok(session) => session,
            Err(e) => {
                let _ = updates.send(Update::Link(Link::Down(e.message)));
                // Requests made while the daemon is away fail at once (a send goes back to the
                // compose line) rather than waiting on a connection that may never come.
                if !drain_while_waiting(&mut requests, &updates, RETRY).await {
                    return;
                }
                continue;
            }
        };
        let _ = updates.send(Update::Link(Link::Up));
        let lost = loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(event)) => {
                        let Ok(event) = from_pb::event(event) else { continue };
                        last_seq = Some(event.seq);
                        let _ = updates.send(Update::Event(event));
                    }
                    Some(Err(status)) => break describe(&status),
                    None => break "the daemon closed the event stream".to_owned(),
                },
                request = requests.recv() => {
                    let Some(request) = request else { return };
                    if let Err(error) = execute(&mut client, request.clone(), &updates).await {
                        let gone = error.grpc_code == Code::Unavailable;
                        let message = error.message.clone();
                        let _ = updates.send(Update::Failed { request, error });
                        if gone {
                            break message;
                        }
                    }
                }
            }
        };
        let _ = updates.send(Update::Link(Link::Down(lost)));
        if !drain_while_waiting(&mut requests, &updates, RETRY).await {
            return;
        }
    }
}

/// Connects, subscribes, then loads the snapshot: the stream starts from before the
/// snapshot, so nothing recorded while it loads is missed (events it repeats carry whole
/// objects and change nothing).
async fn start_session(
    socket: &std::path::Path,
    last_seq: &mut Option<u64>,
    updates: &mpsc::UnboundedSender<Update>,
) -> Result<(Client, Streaming<pb::Event>), ApiError> {
    let mut client = Client::connect(socket).await?;
    let from_seq = match *last_seq {
        Some(seq) => seq,
        None => {
            let seq = client
                .events
                .latest(pb::LatestEventRequest {})
                .await
                .map_err(|s| ApiError::from_status(&s))?
                .into_inner()
                .seq;
            *last_seq = Some(seq);
            seq
        }
    };
    let events = client
        .events
        .subscribe(pb::SubscribeRequest { from_seq })
        .await
        .map_err(|s| ApiError::from_status(&s))?
        .into_inner();
    let snapshot = snapshot(&mut client).await?;
    let _ = updates.send(snapshot);
    Ok((client, events))
}

async fn snapshot(c: &mut Client) -> Result<Update, ApiError> {
    let identity = match c.identity.show(pb::ShowIdentityRequest {}).await {
        Ok(r) => r.into_inner().identity.map(from_pb::identity),
        Err(s) if ApiError::from_status(&s).code == "no_identity" => None,
        Err(s) => return Err(ApiError::from_status(&s)),
    };
    let conversations = c
        .conversations
        .list(pb::ListConversationsRequest {})
        .await
        .map_err(|s| ApiError::from_status(&s))?
        .into_inner()
        .conversations
        .into_iter()
        .map(from_pb::conversation)
        .collect();
    let calls = c
        .calls
        .list(pb::ListCallsRequest {})
        .await
        .map_err(|s| ApiError::from_status(&s))?
        .into_inner()
        .calls
        .into_iter()
        .map(from_pb::call)
        .collect();
    let anonymity = match identity {
        Some(_) => c
            .relays
            .get_anonymity(pb::GetAnonymityRequest {})
            .await
            .ok()
            .and_then(|r| r.into_inner().report)
            .map(|r| r.summary),
        None => None,
    };
    Ok(Update::Snapshot {
        identity,
        conversations,
        calls,
        anonymity,
    })
}

/// Carries out one request, reporting its result as updates.
async fn execute(
    c: &mut Client,
    request: Request,
    updates: &mpsc::UnboundedSender<Update>,
) -> Result<(), ApiError> {
    let st = |s: Status| ApiError::from_status(&s);
    let report = |u: Update| {
        let _ = updates.send(u);
    };
    match request {
        Request::Open { conversation_id } => {
            let page = c
                .messages
                .list(pb::ListMessagesRequest {
                    with: format!("#{conversation_id}"),
                    before: None,
                    limit: PAGE,
                })
                .await
                .map_err(st)?
                .into_inner();
            report(Update::History {
                conversation_id,
                messages: page.messages.into_iter().map(from_pb::message).collect(),
                before: page.before,
                older: false,
            });
        }
        Request::Older {
            conversation_id,
            before,
        } => {
            let page = c
                .messages
                .list(pb::ListMessagesRequest {
                    with: format!("#{conversation_id}"),
                    before: Some(before),
                    limit: PAGE,
                })
                .await
                .map_err(st)?
                .into_inner();
            report(Update::History {
                conversation_id,
                messages: page.messages.into_iter().map(from_pb::message).collect(),
                before: page.before,
                older: true,
            });
        }
        Request::Resolve { target } => {
            let conversation = c
                .conversations
                .get(pb::GetConversationRequest { target })
                .await
                .map_err(st)?
                .into_inner()
                .conversation
                .ok_or_else(|| missing("the conversation"))?;
            report(Update::Resolved(from_pb::conversation(conversation)));
        }
        Request::Refresh { conversation_id } => {
            let conversation = c
                .conversations
                .get(pb::GetConversationRequest {
                    target: format!("#{conversation_id}"),
                })
                .await
                .map_err(st)?
                .into_inner()
                .conversation
                .ok_or_else(|| missing("the conversation"))?;
            report(Update::Conversation(from_pb::conversation(conversation)));
        }
        Request::MarkRead { conversation_id } => {
            let conversation = c
                .conversations
                .mark_read(pb::MarkReadRequest {
                    target: format!("#{conversation_id}"),
                    through: None,
                })
                .await
                .map_err(st)?
                .into_inner()
                .conversation
                .ok_or_else(|| missing("the conversation"))?;
            report(Update::Conversation(from_pb::conversation(conversation)));
        }
        Request::Send {
            conversation_id,
            text,
            attach,
        } => {
            let r = c
                .messages
                .send(pb::SendMessageRequest {
                    to: format!("#{conversation_id}"),
                    text,
                    attach: attach.map(|p| p.display().to_string()),
                })
                .await
                .map_err(st)?
                .into_inner();
            message(r.message, &report)?;
        }
        Request::Edit { id, text } => {
            let r = c
                .messages
                .edit(pb::EditMessageRequest { id, text })
                .await
                .map_err(st)?
                .into_inner();
            message(r.message, &report)?;
        }
        Request::Delete { id } => {
            let r = c
                .messages
                .delete(pb::DeleteMessageRequest { id })
                .await
                .map_err(st)?
                .into_inner();
            message(r.message, &report)?;
        }
        Request::React { id, reaction } => {
            let r = c
                .messages
                .react(pb::ReactRequest { id, reaction })
                .await
                .map_err(st)?
                .into_inner();
            message(r.message, &report)?;
        }
        Request::Call { contact } => {
            let r = c
                .calls
                .start(pb::StartCallRequest { contact })
                .await
                .map_err(st)?
                .into_inner();
            call(r.call, &report)?;
        }
        Request::Accept { call_id } => {
            let r = c
                .calls
                .accept(pb::AcceptCallRequest { call_id })
                .await
                .map_err(st)?
                .into_inner();
            call(r.call, &report)?;
        }
        Request::Reject { call_id } => {
            let r = c
                .calls
                .reject(pb::RejectCallRequest { call_id })
                .await
                .map_err(st)?
                .into_inner();
            call(r.call, &report)?;
        }
        Request::HangUp { call_id } => {
            let r = c
                .calls
                .hang_up(pb::HangUpRequest { call_id })
                .await
                .map_err(st)?
                .into_inner();
            call(r.call, &report)?;
        }
        Request::Save { id, index, out } => {
            let mut stream = c
                .messages
                .download(pb::DownloadRequest {
                    id,
                    index,
                    out: out.display().to_string(),
                })
                .await
                .map_err(st)?
                .into_inner();
            while let Some(update) = stream.next().await {
                if let Some(pb::download_update::Update::Done(done)) = update.map_err(st)?.update {
                    report(Update::Notice(format!(
                        "saved {} ({} bytes, sha256 checked)",
                        done.path, done.size
                    )));
                    return Ok(());
                }
            }
            return Err(missing("the download's result"));
        }
    }
    Ok(())
}

fn message(m: Option<pb::Message>, report: &impl Fn(Update)) -> Result<(), ApiError> {
    let m = m.ok_or_else(|| missing("the message"))?;
    report(Update::Message(from_pb::message(m)));
    Ok(())
}

fn call(c: Option<pb::Call>, report: &impl Fn(Update)) -> Result<(), ApiError> {
    let c = c.ok_or_else(|| missing("the call"))?;
    report(Update::Call(from_pb::call(c)));
    Ok(())
}

/// Waits `pause`, failing every request that comes meanwhile as unavailable; false once the
/// frontend has quit.
async fn drain_while_waiting(
    requests: &mut mpsc::UnboundedReceiver<Request>,
    updates: &mpsc::UnboundedSender<Update>,
    pause: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + pause;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return true,
            request = requests.recv() => match request {
                None => return false,
                Some(request) => {
                    let error = ApiError {
                        code: "unavailable".into(),
                        message: "the daemon is unreachable; reconnecting".into(),
                        grpc_code: Code::Unavailable,
                    };
                    let _ = updates.send(Update::Failed { request, error });
                }
            },
        }
    }
}

fn describe(status: &Status) -> String {
    let e = ApiError::from_status(status);
    format!("{}: {}", e.code, e.message)
}

fn missing(what: &str) -> ApiError {
    ApiError {
        code: "internal".into(),
        message: format!("the daemon's answer lacks {what}"),
        grpc_code: Code::Internal,
    }
}
