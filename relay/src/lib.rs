//! # jasper-relay
//!
//! The Jasper v1.0.0 mesh relay as a library (the `jasper-relay` binary is a thin shell):
//! HTTP endpoints ([`http`]), storage ([`store`]), the mesh of peers ([`mesh`]) and the single
//! ingestion path that validates every packet before it is stored ([`ingest`]).

pub mod admission;
pub mod config;
pub mod error;
pub mod http;
pub mod ingest;
pub mod listener;
pub mod load;
pub mod mesh;
pub mod metrics;
pub mod store;
pub mod waiters;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jasper_core::protocol::PacketLimits;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::RelayConfig;
pub use error::RelayError;

use crate::admission::Admission;
use crate::http::AppState;
use crate::ingest::Ingest;
use crate::load::LoadMeter;
use crate::mesh::Mesh;
use crate::mesh::sketch::LiveSketch;
use crate::store::MessageStore;
use crate::waiters::Waiters;

/// Packets waiting to be pushed to peers before new ones are left to sync.
const BROADCAST_QUEUE: usize = 10_000;

/// A started relay: its address, and the handle to stop it.
pub struct RunningRelay {
    pub local_addr: SocketAddr,
    stop: CancellationToken,
    server: JoinHandle<Result<(), RelayError>>,
}

impl RunningRelay {
    /// A token that stops the relay when cancelled.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Waits until the relay has stopped (after the stop token is cancelled) and its store is
    /// flushed.
    pub async fn wait(self) -> Result<(), RelayError> {
        self.server
            .await
            .map_err(|e| RelayError::Storage(format!("server task failed: {e}")))?
    }
}

/// Opens the configured store.
pub async fn open_store(config: &RelayConfig) -> Result<Arc<dyn MessageStore>, RelayError> {
    Ok(match &config.redis {
        Some(url) => {
            let prefix =
                std::env::var("JASPER_RELAY_REDIS_PREFIX").unwrap_or_else(|_| "jasper:".into());
            let feed_len = match std::env::var("JASPER_RELAY_REDIS_FEED_LEN") {
                Err(_) => store::redis::FEED_LEN,
                Ok(v) => v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    RelayError::Config(format!(
                        "JASPER_RELAY_REDIS_FEED_LEN={v}: expected a whole number 1 or more"
                    ))
                })?,
            };
            let retention = config.tombstone_retention.as_secs();
            let store = if config.redis_cluster {
                let seeds: Vec<String> = url.split(',').map(|u| u.trim().to_owned()).collect();
                let prefix = store::redis::cluster_prefix(&prefix);
                tracing::info!(url, prefix, feed_len, "using a Redis Cluster store");
                store::redis::RedisStore::open_cluster(&seeds, &prefix, retention).await?
            } else {
                tracing::info!(url, prefix, feed_len, "using Redis store");
                store::redis::RedisStore::open(url, &prefix, retention).await?
            };
            Arc::new(
                store
                    .with_feed_len(feed_len)
                    .with_quotas(config.admission.quotas),
            )
        }
        None => {
            tracing::info!(dir = %config.data_dir.display(), "using embedded store");
            Arc::new(store::log::LogStore::open_with(
                &config.data_dir,
                config.tombstone_retention,
                store::log::LogOptions {
                    quotas: config.admission.quotas,
                    ..Default::default()
                },
            )?)
        }
    })
}

/// Binds, opens the store and starts serving and syncing.
pub async fn start(config: RelayConfig) -> Result<RunningRelay, RelayError> {
    let config = Arc::new(config);
    let store = open_store(&config).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| RelayError::Config(format!("cannot listen on {}: {e}", config.listen)))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| RelayError::Config(format!("listener has no address: {e}")))?;

    let stop = CancellationToken::new();
    let (broadcast_tx, broadcast_rx) = tokio::sync::mpsc::channel(BROADCAST_QUEUE);
    let limits = PacketLimits {
        max_message_len: config.max_body_bytes,
        ..PacketLimits::default()
    };
    // A shared store's feed is read from before the sketch is loaded, so that nothing
    // another process stores meanwhile is missed (what is both loaded and fed is added once).
    let feed_from = if store.shared() {
        Some(store.feed_end().await?)
    } else {
        None
    };
    // Built before this process stores anything: from here on every stored packet is added
    // as it comes.
    let sketch = Arc::new(LiveSketch::load(store.as_ref()).await?);
    let waiters = Arc::new(Waiters::default());
    let admission = Arc::new(Admission::new(config.admission.clone()));
    admission.resolve_peers(&config.peers).await;
    let ingest = Arc::new(Ingest::new(
        store.clone(),
        admission.clone(),
        waiters.clone(),
        sketch.clone(),
        limits,
        config.ttl.as_secs(),
        broadcast_tx,
    ));
    // Processes sharing a store are one relay to the mesh: one instance id.
    let instance = store.instance().await?.unwrap_or_else(random_instance_id);
    let mesh = Arc::new(Mesh::new(config.clone(), ingest.clone(), instance.clone()));
    tracing::info!(%local_addr, instance, peers = config.peers.len(), "relay starting");

    let mut background = vec![tokio::spawn(
        mesh.clone().run_broadcaster(broadcast_rx, stop.clone()),
    )];
    background.push(tokio::spawn(mesh.clone().run_tree(stop.clone())));
    background.push(tokio::spawn(mesh.clone().every(
        config.sync_interval,
        stop.clone(),
        |m| m.sync_round(),
    )));
    background.push(tokio::spawn(mesh.clone().every(
        config.server_sync_interval,
        stop.clone(),
        |m| m.server_sync_round(),
    )));
    // The sketch drops packets the second they expire, as the store stops serving them, so
    // that two relays' sketches agree on what is live.
    let expiring = sketch.clone();
    background.push(tokio::spawn(mesh.clone().every(
        Duration::from_secs(1),
        stop.clone(),
        move |_| {
            let sketch = expiring.clone();
            async move {
                sketch.expire(store::unix_now());
            }
        },
    )));
    if let Some(from) = feed_from {
        background.push(tokio::spawn(follow_feed(
            store.clone(),
            sketch.clone(),
            waiters,
            from,
            stop.clone(),
        )));
    }
    // Addresses whose budget is full again are forgotten (bounds the limiters' memory), and
    // the configured peers' hosts resolved again (a peer may move).
    let pruned = admission.clone();
    let peers = config.peers.clone();
    background.push(tokio::spawn(mesh.clone().every(
        Duration::from_secs(10),
        stop.clone(),
        move |_| {
            let (admission, peers) = (pruned.clone(), peers.clone());
            async move {
                admission.prune();
                admission.resolve_peers(&peers).await;
            }
        },
    )));
    let purge_every = (config.ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let purge_store = store.clone();
    background.push(tokio::spawn(mesh.clone().every(
        purge_every,
        stop.clone(),
        move |_| {
            let store = purge_store.clone();
            async move {
                match store.purge_expired().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "purged expired packets"),
                    Err(e) => tracing::error!(error = %e, "purge failed"),
                }
            }
        },
    )));

    let state = Arc::new(AppState {
        config: config.clone(),
        ingest,
        mesh,
        load: LoadMeter::default(),
        requests: Default::default(),
        stop: stop.clone(),
    });
    let app = http::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let stop_serving = stop.clone();
    let connections = admission.clone();
    let server = tokio::spawn(async move {
        // `tap_io` with nothing to do: axum gives connection info (the client's address) to
        // listeners of its own and to tapped ones.
        let listener = axum::serve::ListenerExt::tap_io(
            listener::AdmittedListener::new(listener, connections),
            |_| {},
        );
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop_serving.cancelled().await })
            .await;
        for task in background {
            task.abort();
        }
        let closed = store.close().await;
        tracing::info!("relay stopped");
        served.map_err(|e| RelayError::Config(format!("server failed: {e}")))?;
        closed
    });
    Ok(RunningRelay {
        local_addr,
        stop,
        server,
    })
}

/// How long one read of a shared store's feed waits for an entry.
const FEED_WAIT: Duration = Duration::from_secs(5);

/// Follows a shared store's feed: every packet any process stores goes into this process's
/// sketch and wakes its long-polls for the recipient (the feed is the hint; the long-poll then
/// reads the store, which is the truth). A gap in the feed (this process fell behind its
/// trimming) is filled from the store itself.
async fn follow_feed(
    store: Arc<dyn MessageStore>,
    sketch: Arc<LiveSketch>,
    waiters: Arc<Waiters>,
    mut at: store::FeedPosition,
    stop: CancellationToken,
) {
    loop {
        let page = tokio::select! {
            page = store.feed_after(&at, FEED_WAIT) => page,
            _ = stop.cancelled() => return,
        };
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the shared store's feed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.cancelled() => return,
                }
            }
        };
        for e in &page.entries {
            sketch.add(&e.hash, e.expires_at);
            waiters.notify(&e.recipient_fp);
        }
        at = page.end;
        if page.gap {
            match sketch.catch_up(store.as_ref()).await {
                Ok(n) => tracing::warn!(added = n, "feed gap: sketch caught up from the store"),
                Err(e) => tracing::error!(error = %e, "feed gap: cannot read the store"),
            }
        }
    }
}

pub(crate) fn random_instance_id() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}
