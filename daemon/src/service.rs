//! The `jasper.v1` services over one [`Engine`]: each call unpacks its request, runs the engine
//! method (on a blocking thread when it touches SQLite, RSA or the keyring), and packs the
//! answer. Nothing is decided here.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use jasper_engine::{Engine, EngineError};
use jasper_proto::convert;
use jasper_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::status::{engine_status, status};

/// Page size of `MessageService.List` when the request leaves it at 0.
pub const DEFAULT_PAGE: usize = 50;

/// Implements every service of the API; cheap to clone (the engine is an `Arc` inside).
#[derive(Clone)]
pub struct Api {
    pub(crate) engine: Engine,
}

impl Api {
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }

    /// Runs a synchronous engine call (a read) on a blocking thread: a history read is a real
    /// SQLite scan, and runtime workers also drive every other client's stream. (Writes are
    /// async in the engine, which moves their sealing and fsync off the runtime itself.)
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> Result<T, EngineError> + Send + 'static,
    {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || f(&engine))
            .await
            .map_err(|e| {
                status(
                    tonic::Code::Internal,
                    "internal",
                    format!("task failed: {e}"),
                )
            })?
            .map_err(|e| engine_status(&e))
    }
}

#[tonic::async_trait]
impl pb::identity_service_server::IdentityService for Api {
    async fn create(
        &self,
        _: Request<pb::CreateIdentityRequest>,
    ) -> Result<Response<pb::CreateIdentityResponse>, Status> {
        let info = self
            .engine
            .identity()
            .create()
            .await
            .map_err(|e| engine_status(&e))?;
        Ok(Response::new(pb::CreateIdentityResponse {
            identity: Some(convert::identity(info)),
        }))
    }

    async fn show(
        &self,
        _: Request<pb::ShowIdentityRequest>,
    ) -> Result<Response<pb::ShowIdentityResponse>, Status> {
        let info = self.blocking(|e| e.identity().info()).await?;
        Ok(Response::new(pb::ShowIdentityResponse {
            identity: Some(convert::identity(info)),
        }))
    }

    async fn import(
        &self,
        request: Request<pb::ImportIdentityRequest>,
    ) -> Result<Response<pb::ImportIdentityResponse>, Status> {
        let pem = request.into_inner().pkcs8_pem;
        let info = self
            .engine
            .identity()
            .import(&pem)
            .await
            .map_err(|e| engine_status(&e))?;
        Ok(Response::new(pb::ImportIdentityResponse {
            identity: Some(convert::identity(info)),
        }))
    }

    async fn export(
        &self,
        _: Request<pb::ExportIdentityRequest>,
    ) -> Result<Response<pb::ExportIdentityResponse>, Status> {
        let pkcs8_pem = self.blocking(|e| e.identity().export()).await?;
        tracing::info!("private key exported on request");
        Ok(Response::new(pb::ExportIdentityResponse { pkcs8_pem }))
    }
}

#[tonic::async_trait]
impl pb::contact_service_server::ContactService for Api {
    async fn add(
        &self,
        request: Request<pb::AddContactRequest>,
    ) -> Result<Response<pb::AddContactResponse>, Status> {
        let r = request.into_inner();
        let contact = self
            .engine
            .contacts()
            .add(&r.key, &r.name, r.avatar)
            .await
            .map_err(|e| engine_status(&e))?;
        Ok(Response::new(pb::AddContactResponse {
            contact: Some(convert::contact(contact)),
        }))
    }

    async fn list(
        &self,
        _: Request<pb::ListContactsRequest>,
    ) -> Result<Response<pb::ListContactsResponse>, Status> {
        let contacts = self.blocking(|e| e.contacts().list()).await?;
        Ok(Response::new(pb::ListContactsResponse {
            contacts: contacts.into_iter().map(convert::contact).collect(),
        }))
    }
}

#[tonic::async_trait]
impl pb::conversation_service_server::ConversationService for Api {
    async fn list(
        &self,
        _: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        let conversations = self.blocking(|e| e.conversations().list()).await?;
        Ok(Response::new(pb::ListConversationsResponse {
            conversations: conversations
                .into_iter()
                .map(convert::conversation)
                .collect(),
        }))
    }

    async fn get(
        &self,
        request: Request<pb::GetConversationRequest>,
    ) -> Result<Response<pb::GetConversationResponse>, Status> {
        let target = request.into_inner().target;
        let conversation = self
            .blocking(move |e| e.conversations().resolve(&target))
            .await?;
        Ok(Response::new(pb::GetConversationResponse {
            conversation: Some(convert::conversation(conversation)),
        }))
    }

    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::CreateGroupResponse>, Status> {
        let r = request.into_inner();
        let conversation = self
            .engine
            .groups()
            .create(&r.name, &r.members)
            .await
            .map_err(|e| engine_status(&e))?;
        Ok(Response::new(pb::CreateGroupResponse {
            conversation: Some(convert::conversation(conversation)),
        }))
    }

    async fn add_members(
        &self,
        request: Request<pb::AddMembersRequest>,
    ) -> Result<Response<pb::AddMembersResponse>, Status> {
        let r = request.into_inner();
        let conversation = self
            .engine
            .groups()
            .change(&r.group, &r.members, true)
            .await
            .map_err(|e| engine_status(&e))?;
        Ok(Response::new(pb::AddMembersResponse {
            conversation: Some(convert::conversation(conversation)),
        }))
    }

    async fn remove_members(
        &self,
        request: Request<pb::RemoveMembersRequest>,
    ) -> Result<Response<pb::RemoveMembersResponse>, Status> {
        let r = request.into_inner();
        let conversation = self
            .engine
            .groups()
            .change(&r.group, &r.members, false)
            .await
            .map_err(|e| engine_status(&e))?;
        Ok(Response::new(pb::RemoveMembersResponse {
            conversation: Some(convert::conversation(conversation)),
        }))
    }

    async fn send_to_group(
        &self,
        request: Request<pb::SendToGroupRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let r = request.into_inner();
        let message = self
            .engine
            .groups()
            .send(&r.group, &r.text)
            .await
            .map_err(|e| engine_status(&e))?;
        Ok(Response::new(pb::SendMessageResponse {
            message: Some(convert::message(message)),
        }))
    }

    async fn mark_read(
        &self,
        request: Request<pb::MarkReadRequest>,
    ) -> Result<Response<pb::MarkReadResponse>, Status> {
        let r = request.into_inner();
        // An empty target is the engine's INVALID_ARGUMENT, as over the FFI.
        let conversation = self
            .blocking(move |e| e.conversations().mark_read(&r.target, r.through.as_deref()))
            .await?;
        Ok(Response::new(pb::MarkReadResponse {
            conversation: Some(convert::conversation(conversation)),
        }))
    }
}

#[tonic::async_trait]
impl pb::message_service_server::MessageService for Api {
    async fn send(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let r = request.into_inner();
        let message = match r.attach {
            Some(file) => {
                // The engine encrypts on a blocking thread and streams the upload itself.
                self.engine
                    .attachments()
                    .send(&r.to, &r.text, std::path::Path::new(&file))
                    .await
                    .map_err(|e| engine_status(&e))?
            }
            None => self
                .engine
                .messages()
                .send(&r.to, &r.text)
                .await
                .map_err(|e| engine_status(&e))?,
        };
        Ok(Response::new(pb::SendMessageResponse {
            message: Some(convert::message(message)),
        }))
    }

    async fn edit(
        &self,
        request: Request<pb::EditMessageRequest>,
    ) -> Result<Response<pb::EditMessageResponse>, Status> {
        let r = request.into_inner();
        let message = self
            .engine
            .messages()
            .edit(&r.id, &r.text)
            .await
            .map_err(|e| engine_status(&e))?;
        Ok(Response::new(pb::EditMessageResponse {
            message: Some(convert::message(message)),
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteMessageRequest>,
    ) -> Result<Response<pb::DeleteMessageResponse>, Status> {
        let id = request.into_inner().id;
        let message = self
            .engine
            .messages()
            .delete(&id)
            .await
            .map_err(|e| engine_status(&e))?;
        Ok(Response::new(pb::DeleteMessageResponse {
            message: Some(convert::message(message)),
        }))
    }

    async fn react(
        &self,
        request: Request<pb::ReactRequest>,
    ) -> Result<Response<pb::ReactResponse>, Status> {
        let r = request.into_inner();
        let message = self
            .engine
            .messages()
            .react(&r.id, &r.reaction)
            .await
            .map_err(|e| engine_status(&e))?;
        Ok(Response::new(pb::ReactResponse {
            message: Some(convert::message(message)),
        }))
    }

    async fn list(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let r = request.into_inner();
        let limit = match r.limit {
            0 => DEFAULT_PAGE,
            n => n as usize,
        };
        let page = self
            .blocking(move |e| {
                e.conversations()
                    .messages(&r.with, r.before.as_deref(), limit)
            })
            .await?;
        Ok(Response::new(pb::ListMessagesResponse {
            messages: page.messages.into_iter().map(convert::message).collect(),
            before: page.before,
        }))
    }

    async fn routes(
        &self,
        request: Request<pb::MessageRoutesRequest>,
    ) -> Result<Response<pb::MessageRoutesResponse>, Status> {
        let id = request.into_inner().id;
        let routes = self.blocking(move |e| e.outbox().routes(&id)).await?;
        Ok(Response::new(pb::MessageRoutesResponse {
            routes: routes
                .into_iter()
                .map(|(recipient, relay)| pb::MessageRoute { recipient, relay })
                .collect(),
        }))
    }

    type DownloadStream = DownloadStream;

    async fn download(
        &self,
        request: Request<pb::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let r = request.into_inner();
        let engine = self.engine.clone();
        let (out_tx, out_rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            // Progress goes out while the download runs; a slow client only drops updates.
            let progress_tx = out_tx.clone();
            let result = engine
                .attachments()
                .download(
                    &r.id,
                    r.index as usize,
                    std::path::Path::new(&r.out),
                    move |p| {
                        let _ = progress_tx.try_send(Ok(pb::DownloadUpdate {
                            update: Some(pb::download_update::Update::Progress(
                                pb::DownloadProgress {
                                    received: p.received,
                                    total: p.total,
                                },
                            )),
                        }));
                    },
                )
                .await;
            let last = match result {
                Ok(d) => Ok(pb::DownloadUpdate {
                    update: Some(pb::download_update::Update::Done(pb::DownloadResult {
                        path: d.path,
                        size: d.size,
                        sha256: d.sha256,
                        media_type: d.media_type,
                    })),
                }),
                Err(e) => Err(engine_status(&e)),
            };
            let _ = out_tx.send(last).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out_rx),
        )))
    }
}

pub type DownloadStream =
    Pin<Box<dyn Stream<Item = Result<pb::DownloadUpdate, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::relay_service_server::RelayService for Api {
    async fn list(
        &self,
        _: Request<pb::ListRelaysRequest>,
    ) -> Result<Response<pb::ListRelaysResponse>, Status> {
        let relays = self.blocking(|e| e.relays().list()).await?;
        Ok(Response::new(pb::ListRelaysResponse {
            relays: relays.into_iter().map(convert::relay).collect(),
        }))
    }

    async fn add(
        &self,
        request: Request<pb::AddRelayRequest>,
    ) -> Result<Response<pb::AddRelayResponse>, Status> {
        let address = request.into_inner().address;
        let relay = self
            .engine
            .relays()
            .add(&address)
            .await
            .map_err(|e| engine_status(&e))?;
        Ok(Response::new(pb::AddRelayResponse {
            relay: Some(convert::relay(relay)),
        }))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveRelayRequest>,
    ) -> Result<Response<pb::RemoveRelayResponse>, Status> {
        let address = request.into_inner().address;
        self.engine
            .relays()
            .remove(&address)
            .await
            .map_err(|e| engine_status(&e))?;
        Ok(Response::new(pb::RemoveRelayResponse {}))
    }

    async fn rx_relay(
        &self,
        _: Request<pb::RxRelayRequest>,
    ) -> Result<Response<pb::RxRelayResponse>, Status> {
        let address = self.blocking(|e| e.relays().rx()).await?;
        Ok(Response::new(pb::RxRelayResponse { address }))
    }

    async fn get_anonymity(
        &self,
        _: Request<pb::GetAnonymityRequest>,
    ) -> Result<Response<pb::GetAnonymityResponse>, Status> {
        let report = self.blocking(|e| e.relays().anonymity()).await?;
        Ok(Response::new(pb::GetAnonymityResponse {
            report: Some(convert::anonymity_report(report)),
        }))
    }
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::event_service_server::EventService for Api {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let from_seq = request.into_inner().from_seq;
        tracing::debug!(from_seq, "event subscriber attached");
        let stream = self
            .engine
            .events()
            .subscribe(from_seq)
            .map(|item| match item {
                Ok(event) => Ok(convert::event(event)),
                Err(e) => Err(engine_status(&e)),
            });
        Ok(Response::new(Box::pin(stream)))
    }
    async fn latest(
        &self,
        _: Request<pb::LatestEventRequest>,
    ) -> Result<Response<pb::LatestEventResponse>, Status> {
        Ok(Response::new(pb::LatestEventResponse {
            seq: self.engine.events().latest_seq(),
        }))
    }
}
