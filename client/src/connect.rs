//! Connections to `jasperd`: over its Unix socket (what the CLI uses, and what tests and bots
//! in Rust can use too), or over its optional loopback TCP listener, where every call carries
//! the bearer token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use jasper_proto::v1 as pb;
use tonic::Code;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{ApiError, error_chain};

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

/// Opens a channel to `jasperd`'s TCP listener (`--tcp`) on `addr`, a loopback address. Its
/// calls need the bearer token: use [`Client::connect_tcp`], or [`Client::with_bearer`].
pub async fn connect_tcp(addr: SocketAddr) -> Result<Channel, ApiError> {
    // The token travels in clear text, and jasperd listens on loopback only: anything else
    // would be another host, which must never receive it.
    if !addr.ip().is_loopback() {
        return Err(invalid(format!(
            "{addr}: jasperd's TCP listener is on loopback only (127.0.0.0/8, ::1)"
        )));
    }
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| invalid(format!("{addr}: {}", error_chain(&e))))?;
    endpoint.connect().await.map_err(|e| ApiError {
        code: "unavailable".into(),
        message: format!(
            "cannot reach jasperd at {addr}: {} (is it running with --tcp?)",
            error_chain(&e)
        ),
        grpc_code: Code::Unavailable,
    })
}

fn invalid(message: String) -> ApiError {
    ApiError {
        code: "invalid_argument".into(),
        message,
        grpc_code: Code::InvalidArgument,
    }
}

/// Puts `authorization: Bearer <token>` on every call, which jasperd's TCP listener requires.
/// Empty (adds nothing) for the Unix socket, where the daemon checks the peer's uid instead.
#[derive(Clone, Default)]
pub struct BearerHeader(Option<AsciiMetadataValue>);

impl BearerHeader {
    /// The header for `token`, trimmed as jasperd trims its `--token-file`.
    pub fn new(token: &str) -> Result<Self, ApiError> {
        let mut value: AsciiMetadataValue = format!("Bearer {}", token.trim())
            .parse()
            .map_err(|_| invalid("the bearer token must be printable ASCII".into()))?;
        // Kept out of HTTP/2 header compression tables and debug output.
        value.set_sensitive(true);
        Ok(Self(Some(value)))
    }
}

impl std::fmt::Debug for BearerHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.0.is_some() {
            "<redacted>"
        } else {
            "none"
        };
        f.debug_tuple("BearerHeader").field(&shown).finish()
    }
}

impl Interceptor for BearerHeader {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// What every stub of a [`Client`] calls through: the channel, with the bearer header if any.
pub type Transport = InterceptedService<Channel, BearerHeader>;

/// One stub per service, sharing one connection.
#[derive(Clone)]
pub struct Client {
    pub identity: pb::identity_service_client::IdentityServiceClient<Transport>,
    pub contacts: pb::contact_service_client::ContactServiceClient<Transport>,
    pub conversations: pb::conversation_service_client::ConversationServiceClient<Transport>,
    pub messages: pb::message_service_client::MessageServiceClient<Transport>,
    pub relays: pb::relay_service_client::RelayServiceClient<Transport>,
    pub events: pb::event_service_client::EventServiceClient<Transport>,
    pub transparent: pb::transparent_service_client::TransparentServiceClient<Transport>,
    pub calls: pb::call_service_client::CallServiceClient<Transport>,
}

impl Client {
    /// Connects over the Unix socket.
    pub async fn connect(socket: &Path) -> Result<Self, ApiError> {
        Ok(Self::new(connect_unix(socket).await?))
    }

    /// Connects over loopback TCP, sending `token` with every call.
    pub async fn connect_tcp(addr: SocketAddr, token: &str) -> Result<Self, ApiError> {
        // Checked before connecting, so a bad token is reported as such.
        let bearer = BearerHeader::new(token)?;
        Ok(Self::with_bearer(connect_tcp(addr).await?, bearer))
    }

    /// Stubs over `channel`, without a bearer token (the Unix socket).
    pub fn new(channel: Channel) -> Self {
        Self::with_bearer(channel, BearerHeader::default())
    }

    /// Stubs over `channel` whose every call carries `bearer`.
    pub fn with_bearer(channel: Channel, bearer: BearerHeader) -> Self {
        let transport = InterceptedService::new(channel, bearer);
        Self {
            identity: pb::identity_service_client::IdentityServiceClient::new(transport.clone()),
            contacts: pb::contact_service_client::ContactServiceClient::new(transport.clone()),
            conversations: pb::conversation_service_client::ConversationServiceClient::new(
                transport.clone(),
            ),
            messages: pb::message_service_client::MessageServiceClient::new(transport.clone()),
            relays: pb::relay_service_client::RelayServiceClient::new(transport.clone()),
            events: pb::event_service_client::EventServiceClient::new(transport.clone()),
            transparent: pb::transparent_service_client::TransparentServiceClient::new(
                transport.clone(),
            ),
            calls: pb::call_service_client::CallServiceClient::new(transport),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::{Request, Response, Status};

    use super::*;

    /// An identity service that answers `Show` only to the right bearer token, as jasperd's
    /// TCP listener would, and echoes the header it got as the key store.
    struct Guarded;

    #[tonic::async_trait]
    impl pb::identity_service_server::IdentityService for Guarded {
        async fn create(
            &self,
            _: Request<pb::CreateIdentityRequest>,
        ) -> Result<Response<pb::CreateIdentityResponse>, Status> {
            Err(Status::unimplemented("create"))
        }

        async fn show(
            &self,
            request: Request<pb::ShowIdentityRequest>,
        ) -> Result<Response<pb::ShowIdentityResponse>, Status> {
            let header = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            if header != "Bearer s3cret-token-0123456789" {
                return Err(Status::unauthenticated(format!("got {header:?}")));
            }
            Ok(Response::new(pb::ShowIdentityResponse {
                identity: Some(pb::Identity {
                    public_key: "KEY".into(),
                    fingerprint: "f".into(),
                    key_store: header,
                }),
            }))
        }

        async fn import(
            &self,
            _: Request<pb::ImportIdentityRequest>,
        ) -> Result<Response<pb::ImportIdentityResponse>, Status> {
            Err(Status::unimplemented("import"))
        }

        async fn export(
            &self,
            _: Request<pb::ExportIdentityRequest>,
        ) -> Result<Response<pb::ExportIdentityResponse>, Status> {
            Err(Status::unimplemented("export"))
        }
    }

    #[tokio::test]
    async fn tcp_calls_carry_the_bearer_token() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(pb::identity_service_server::IdentityServiceServer::new(
                    Guarded,
                ))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );

        // Trimmed like jasperd's token file, so its contents can be passed as they are.
        let mut c = Client::connect_tcp(addr, "s3cret-token-0123456789\n")
            .await
            .unwrap();
        let shown = c
            .identity
            .show(pb::ShowIdentityRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            shown.identity.unwrap().key_store,
            "Bearer s3cret-token-0123456789"
        );

        let mut wrong = Client::connect_tcp(addr, "another-token-0123456789")
            .await
            .unwrap();
        let status = wrong
            .identity
            .show(pb::ShowIdentityRequest {})
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);

        // Without a token (what the Unix socket gets) nothing is added.
        let mut none = Client::new(connect_tcp(addr).await.unwrap());
        let status = none
            .identity
            .show(pb::ShowIdentityRequest {})
            .await
            .unwrap_err();
        assert_eq!(status.message(), "got \"\"");
    }

    #[tokio::test]
    async fn the_token_is_never_sent_off_this_machine() {
        let err = Client::connect_tcp("192.0.2.1:7000".parse().unwrap(), "s3cret-token-0123456789")
            .await
            .err()
            .unwrap();
        assert_eq!(err.code, "invalid_argument");
        assert!(err.is_invalid_input());
        assert!(err.message.contains("loopback"), "{}", err.message);
    }

    #[test]
    fn a_bad_token_is_refused_and_a_good_one_never_printed() {
        let err = BearerHeader::new("line\nbreak").unwrap_err();
        assert_eq!(err.code, "invalid_argument");
        let bearer = BearerHeader::new("s3cret-token-0123456789").unwrap();
        assert!(!format!("{bearer:?}").contains("s3cret"));
        assert_eq!(
            format!("{:?}", BearerHeader::default()),
            "BearerHeader(\"none\")"
        );
    }

    #[tokio::test]
    async fn an_absent_daemon_is_unavailable() {
        let dir = std::env::temp_dir().join(format!("jasper-client-test-{}", std::process::id()));
        let err = connect_unix(&dir.join("jasperd.sock")).await.unwrap_err();
        assert_eq!(err.code, "unavailable");
        assert!(err.message.contains("is it running?"), "{}", err.message);
    }
}
