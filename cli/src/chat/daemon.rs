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
    // One unary call: its answer's `field`, converted to the model, reported as `variant`.
    macro_rules! answer {
        ($call:expr, $field:ident => $convert:path => $variant:path) => {{
            let value = $call
                .await
                .map_err(st)?
                .into_inner()
                .$field
                .ok_or_else(|| missing(concat!("the ", stringify!($field))))?;
            report($variant($convert(value)));
        }};
    }
    match request {
        Request::Open { conversation_id } => {
            report(history(c, conversation_id, None).await?);
        }
        Request::Older {
            conversation_id,
            before,
        } => {
            report(history(c, conversation_id, Some(before)).await?);
        }
        Request::Resolve { target } => answer!(
            c.conversations.get(pb::GetConversationRequest { target }),
            conversation => from_pb::conversation => Update::Resolved
        ),
        Request::Refresh { conversation_id } => answer!(
            c.conversations.get(pb::GetConversationRequest {
                target: format!("#{conversation_id}"),
            }),
            conversation => from_pb::conversation => Update::Conversation
        ),
        Request::MarkRead { conversation_id } => answer!(
            c.conversations.mark_read(pb::MarkReadRequest {
                target: format!("#{conversation_id}"),
                through: None,
            }),
            conversation => from_pb::conversation => Update::Conversation
        ),
        Request::Send {
            conversation_id,
            text,
            attach,
        } => answer!(
            c.messages.send(pb::SendMessageRequest {
                to: format!("#{conversation_id}"),
                text,
                attach: attach.map(|p| p.display().to_string()),
            }),
            message => from_pb::message => Update::Message
        ),
        Request::Edit { id, text } => answer!(
            c.messages.edit(pb::EditMessageRequest { id, text }),
            message => from_pb::message => Update::Message
        ),
        Request::Delete { id } => answer!(
            c.messages.delete(pb::DeleteMessageRequest { id }),
            message => from_pb::message => Update::Message
        ),
        Request::React { id, reaction } => answer!(
            c.messages.react(pb::ReactRequest { id, reaction }),
            message => from_pb::message => Update::Message
        ),
        Request::Call { contact } => answer!(
            c.calls.start(pb::StartCallRequest { contact }),
            call => from_pb::call => Update::Call
        ),
        Request::Accept { call_id } => answer!(
            c.calls.accept(pb::AcceptCallRequest { call_id }),
            call => from_pb::call => Update::Call
        ),
        Request::Reject { call_id } => answer!(
            c.calls.reject(pb::RejectCallRequest { call_id }),
            call => from_pb::call => Update::Call
        ),
        Request::HangUp { call_id } => answer!(
            c.calls.hang_up(pb::HangUpRequest { call_id }),
            call => from_pb::call => Update::Call
        ),
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

/// A page of history: the newest (`before` unset), or the one before the cursor `before`.
async fn history(
    c: &mut Client,
    conversation_id: i64,
    before: Option<String>,
) -> Result<Update, ApiError> {
    let older = before.is_some();
    let page = c
        .messages
        .list(pb::ListMessagesRequest {
            with: format!("#{conversation_id}"),
            before,
            limit: PAGE,
        })
        .await
        .map_err(|s| ApiError::from_status(&s))?
        .into_inner();
    Ok(Update::History {
        conversation_id,
        messages: page.messages.into_iter().map(from_pb::message).collect(),
        before: page.before,
        older,
    })
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
