//! Wiring of one `jasperd`: key store, engine, the gRPC routes (with reflection), the Unix
//! socket and optional TCP servers, and an orderly shutdown.

use std::future::Future;
use std::io::Write;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::sync::Arc;
use std::time::Duration;

use jasper_engine::Engine;
use jasper_keystore::{KeyStore, KeyStoreKind};
use jasper_proto::v1 as pb;
use tonic::service::{InterceptorLayer, Routes};
use tonic::transport::Server;

use crate::config::DaemonConfig;
use crate::error::DaemonError;
use crate::listener::{self, BearerToken, SocketFile};
use crate::secrets::KeyringSecrets;
use crate::service::Api;

/// How long in-flight calls get to finish after a shutdown request.
const DRAIN: Duration = Duration::from_secs(10);

/// What must happen before any thread exists: the keyutils session keyring and the socket.
pub struct Prepared {
    config: DaemonConfig,
    listener: StdUnixListener,
    socket: SocketFile,
}

/// Process-level set-up; call at the top of `main`, before the tokio runtime is built.
pub fn prepare(config: DaemonConfig) -> Result<Prepared, DaemonError> {
    // keyutils keeps the session keyring per thread and threads inherit it, so this must run
    // before the runtime's threads exist; it is needed when keyutils is chosen or may be the
    // fallback of the default.
    match config.key_store {
        Some(KeyStoreKind::Keyutils) => jasper_keystore::prepare_process_for_keyutils()?,
        None => {
            if let Err(e) = jasper_keystore::prepare_process_for_keyutils() {
                tracing::warn!(error = %e, "keyutils unavailable as a fallback key store");
            }
        }
        Some(_) => {}
    }
    let (listener, socket) = listener::bind_unix(&config.socket)?;
    Ok(Prepared {
        config,
        listener,
        socket,
    })
}

/// The API's routes: the six services and server reflection (v1 and v1alpha, for grpcurl),
/// which also describes `google.rpc.ErrorInfo` so tools can decode error details.
pub fn routes(api: Api) -> Result<Routes, DaemonError> {
    let reflection = |e: tonic_reflection::server::Error| DaemonError::Serve(e.to_string());
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(jasper_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(reflection)?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(jasper_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(reflection)?;
    let mut builder = Routes::builder();
    builder
        .add_service(pb::identity_service_server::IdentityServiceServer::new(
            api.clone(),
        ))
        .add_service(pb::contact_service_server::ContactServiceServer::new(
            api.clone(),
        ))
        .add_service(pb::conversation_service_server::ConversationServiceServer::new(api.clone()))
        .add_service(pb::message_service_server::MessageServiceServer::new(
            api.clone(),
        ))
        .add_service(pb::relay_service_server::RelayServiceServer::new(
            api.clone(),
        ))
        .add_service(pb::transparent_service_server::TransparentServiceServer::new(api.clone()))
        .add_service(pb::call_service_server::CallServiceServer::new(api.clone()))
        .add_service(pb::event_service_server::EventServiceServer::new(api))
        .add_service(v1)
        .add_service(v1alpha);
    Ok(builder.routes())
}

fn rpc_span(request: &http::Request<()>) -> tracing::Span {
    tracing::info_span!("rpc", method = %request.uri().path())
}

/// Opens the engine and serves until `shutdown` resolves; then stops the engine, lets calls
/// drain, and removes the socket.
pub async fn run(
    prepared: Prepared,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let Prepared {
        config,
        listener,
        socket,
    } = prepared;
    let kind = config.key_store;
    let store = tokio::task::spawn_blocking(move || KeyStore::open(kind))
        .await
        .map_err(|e| DaemonError::Serve(format!("key store task: {e}")))??;
    tracing::info!(store = %store.kind(), "key store opened");
    let engine = Engine::open(config.engine.clone(), Arc::new(KeyringSecrets::new(store))).await?;
    let result = serve(&config, listener, &socket, engine.clone(), shutdown).await;
    engine.shutdown();
    drop(socket);
    result
}

async fn serve(
    config: &DaemonConfig,
    listener: StdUnixListener,
    socket: &SocketFile,
    engine: Engine,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let routes = routes(Api::new(engine.clone()))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let listener = tokio::net::UnixListener::from_std(listener)
        .map_err(|e| DaemonError::Serve(format!("socket {}: {e}", socket.path().display())))?;
    let mut servers = tokio::task::JoinSet::new();
    let unix = Server::builder()
        .trace_fn(rpc_span)
        .add_routes(routes.clone())
        .serve_with_incoming_shutdown(listener::unix_incoming(listener), stopped());
    servers.spawn(async move { unix.await.map_err(|e| format!("unix socket: {e}")) });

    if let Some(tcp) = &config.tcp {
        let tcp_listener = tokio::net::TcpListener::bind(tcp.listen)
            .await
            .map_err(|e| DaemonError::Serve(format!("tcp {}: {e}", tcp.listen)))?;
        tracing::info!(address = %tcp.listen, "serving on loopback TCP (bearer token required)");
        let server = Server::builder()
            .trace_fn(rpc_span)
            .tcp_nodelay(true)
            .layer(InterceptorLayer::new(BearerToken::new(&tcp.token)))
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(tcp_listener),
                stopped(),
            );
        servers.spawn(async move { server.await.map_err(|e| format!("tcp: {e}")) });
    }

    if let Some(m) = &config.metrics {
        let listener = tokio::net::TcpListener::bind(m.listen)
            .await
            .map_err(|e| DaemonError::Serve(format!("metrics {}: {e}", m.listen)))?;
        tracing::info!(address = %m.listen, "serving /metrics on loopback (bearer token required)");
        let app = crate::metrics::router(engine.clone(), BearerToken::new(&m.token));
        let stop = stopped();
        servers.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
                .map_err(|e| format!("metrics: {e}"))
        });
    }

    // Tests and supervisors read this line: the API is reachable from now on.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "jasperd listening on {}", socket.path().display());
    let _ = out.flush();
    drop(out);
    tracing::info!(socket = %socket.path().display(), "serving");

    let failed = tokio::select! {
        _ = shutdown => {
            tracing::info!("shutdown requested");
            None
        }
        Some(done) = servers.join_next() => Some(match done {
            Ok(Ok(())) => "a server stopped unexpectedly".to_owned(),
            Ok(Err(e)) => e,
            Err(e) => format!("server task: {e}"),
        }),
    };
    // Stopping the engine first ends every event stream, so connections can close.
    engine.shutdown();
    let _ = stop_tx.send(true);
    if tokio::time::timeout(DRAIN, async {
        while servers.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!("calls still in flight after {DRAIN:?}; closing anyway");
        servers.abort_all();
    }
    match failed {
        Some(e) => Err(DaemonError::Serve(e)),
        None => Ok(()),
    }
}
