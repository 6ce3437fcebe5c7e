//! A client of the local API over the daemon's Unix socket: what the CLI uses, and what tests
//! and bots in Rust can use too.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use jasper_proto::v1 as pb;
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::status::{ApiError, error_chain};

/// Opens a channel to `jasperd` on `socket`.
pub async fn connect_unix(socket: &Path) -> Result<Channel, ApiError> {
    let path: PathBuf = socket.to_owned();
    // The URI is required by the API but unused: the connector ignores it.
    Endpoint::from_static("http://jasperd.local")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| ApiError {
            code: "unavailable".into(),
            message: format!(
                "cannot reach jasperd at {}: {} (is it running?)",
                socket.display(),
                error_chain(&e)
            ),
            grpc_code: Code::Unavailable,
        })
}

/// One stub per service, sharing one connection.
#[derive(Clone)]
pub struct Client {
    pub identity: pb::identity_service_client::IdentityServiceClient<Channel>,
    pub contacts: pb::contact_service_client::ContactServiceClient<Channel>,
    pub conversations: pb::conversation_service_client::ConversationServiceClient<Channel>,
    pub messages: pb::message_service_client::MessageServiceClient<Channel>,
    pub relays: pb::relay_service_client::RelayServiceClient<Channel>,
    pub events: pb::event_service_client::EventServiceClient<Channel>,
    pub transparent: pb::transparent_service_client::TransparentServiceClient<Channel>,
    pub calls: pb::call_service_client::CallServiceClient<Channel>,
}

impl Client {
    pub async fn connect(socket: &Path) -> Result<Self, ApiError> {
        Ok(Self::new(connect_unix(socket).await?))
    }

    pub fn new(channel: Channel) -> Self {
        Self {
            identity: pb::identity_service_client::IdentityServiceClient::new(channel.clone()),
            contacts: pb::contact_service_client::ContactServiceClient::new(channel.clone()),
            conversations: pb::conversation_service_client::ConversationServiceClient::new(
                channel.clone(),
            ),
            messages: pb::message_service_client::MessageServiceClient::new(channel.clone()),
            relays: pb::relay_service_client::RelayServiceClient::new(channel.clone()),
            events: pb::event_service_client::EventServiceClient::new(channel.clone()),
            transparent: pb::transparent_service_client::TransparentServiceClient::new(
                channel.clone(),
            ),
            calls: pb::call_service_client::CallServiceClient::new(channel),
        }
    }
}
