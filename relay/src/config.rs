//! The relay's one typed configuration, built from (highest first) command-line flags,
//! `JASPER_RELAY_*` environment variables, a TOML file (`--config`), and defaults; validated
//! once at start-up so the rest of the relay never re-checks it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::admission::{AdmissionFile, AdmissionSettings};
use crate::error::RelayError;
use crate::mesh::peer::PeerAddr;
use crate::mesh::tree::TreeSettings;

/// Validated settings of one relay process.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub listen: SocketAddr,
    /// Peers given by the operator: trusted whatever their address range, never forgotten.
    pub peers: Vec<PeerAddr>,
    /// The address other relays should use for us; sent in server lists.
    pub advertise: Option<PeerAddr>,
    /// Redis URL; `None` selects the embedded store in `data_dir`.
    pub redis: Option<String>,
    /// `redis` is a comma-separated list of nodes of a Redis Cluster.
    pub redis_cluster: bool,
    pub data_dir: PathBuf,
    /// How long a message lives, from its first acceptance anywhere in the mesh.
    pub ttl: Duration,
    pub sync_interval: Duration,
    pub server_sync_interval: Duration,
    /// Accept loopback/private/link-local addresses learned from other relays (tests, LANs).
    pub allow_private_peers: bool,
    pub max_body_bytes: usize,
    pub max_sync_body_bytes: usize,
    pub max_hashes_per_request: usize,
    pub max_fetch_messages: usize,
    pub max_known_servers: usize,
    pub peer_timeout: Duration,
    pub broadcast_concurrency: usize,
    /// How new packets travel between relays (`mesh/tree.rs`).
    pub tree: TreeSettings,
    /// First quarantine length; each further quarantine of the same peer doubles it.
    pub quarantine_base: Duration,
    /// How long an expired hash is remembered after its expiry, so sync cannot revive it.
    pub tombstone_retention: Duration,
    /// Rate limits, long-poll bounds and storage quotas (`admission.rs`).
    pub admission: AdmissionSettings,
    pub log_json: bool,
}

pub const DEFAULT_TTL_SECS: u64 = 7 * 24 * 3600;
pub const DEFAULT_SYNC_SECS: u64 = 60;
pub const DEFAULT_SERVER_SYNC_SECS: u64 = 3600;
/// The reference relay's body limit (Express `json({limit: "100kb"})`).
pub const DEFAULT_MAX_BODY: usize = 102_400;
/// Longest long-poll a client may ask for.
pub const MAX_WAIT_SECS: u64 = 30;

/// Command line of `jasper-relay`. Every flag also reads `JASPER_RELAY_<NAME>`.
#[derive(Debug, Parser, Default)]
#[command(
    name = "jasper-relay",
    version = jasper_core::version_text!(),
    about = "Jasper mesh relay"
)]
pub struct Args {
    /// TOML file with the same settings (flags and environment win over it).
    #[arg(long, env = "JASPER_RELAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long, env = "JASPER_RELAY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// A peer relay HOST:PORT (repeatable; comma-separated in the environment).
    #[arg(long = "peer", env = "JASPER_RELAY_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// HOST:PORT other relays should use to reach this one.
    #[arg(long, env = "JASPER_RELAY_ADVERTISE")]
    pub advertise: Option<String>,
    /// Redis URL (redis://host:port/db); without it the embedded store is used. With
    /// `--redis-cluster`, one or more nodes of the cluster, comma-separated.
    #[arg(long, env = "JASPER_RELAY_REDIS")]
    pub redis: Option<String>,
    /// `--redis` names nodes of a Redis Cluster (or Valkey cluster).
    #[arg(long, env = "JASPER_RELAY_REDIS_CLUSTER")]
    pub redis_cluster: bool,
    /// Directory of the embedded store.
    #[arg(long, env = "JASPER_RELAY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Message lifetime in seconds (default 7 days).
    #[arg(long, env = "JASPER_RELAY_TTL")]
    pub ttl: Option<u64>,
    /// Seconds between hash syncs with each peer (default 60).
    #[arg(long, env = "JASPER_RELAY_SYNC_INTERVAL")]
    pub sync_interval: Option<u64>,
    /// Seconds between server-list exchanges (default 3600).
    #[arg(long, env = "JASPER_RELAY_SERVER_SYNC_INTERVAL")]
    pub server_sync_interval: Option<u64>,
    /// Accept private and loopback addresses learned from other relays.
    #[arg(long, env = "JASPER_RELAY_ALLOW_PRIVATE_PEERS")]
    pub allow_private_peers: Option<bool>,
    /// Largest /send body in bytes (default 102400).
    #[arg(long, env = "JASPER_RELAY_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Seconds before a peer request is abandoned (default 5).
    #[arg(long, env = "JASPER_RELAY_PEER_TIMEOUT")]
    pub peer_timeout: Option<u64>,
    /// Seconds of a peer's first quarantine (default 30; doubles each time).
    #[arg(long, env = "JASPER_RELAY_QUARANTINE_SECS")]
    pub quarantine_secs: Option<u64>,
    /// Broadcast: `tree` (default: push along a spanning tree, announce to the other peers)
    /// or `flood` (push every packet to every peer).
    #[arg(long, env = "JASPER_RELAY_BROADCAST")]
    pub broadcast: Option<String>,
    /// `off` lifts the per-address rate limits, the bound on parked long-polls and automatic
    /// stamps (a private relay, a load test); `on` by default. Storage quotas apply either way.
    #[arg(long, env = "JASPER_RELAY_RATE_LIMITS")]
    pub rate_limits: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "JASPER_RELAY_LOG_JSON")]
    pub log_json: Option<bool>,
}

/// The TOML file: the same names as the flags, in snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    #[serde(default)]
    pub peers: Vec<String>,
    pub advertise: Option<String>,
    pub redis: Option<String>,
    pub redis_cluster: Option<bool>,
    pub data_dir: Option<PathBuf>,
    pub ttl: Option<u64>,
    pub sync_interval: Option<u64>,
    pub server_sync_interval: Option<u64>,
    pub allow_private_peers: Option<bool>,
    pub max_body_bytes: Option<usize>,
    pub max_sync_body_bytes: Option<usize>,
    pub max_hashes_per_request: Option<usize>,
    pub max_fetch_messages: Option<usize>,
    pub max_known_servers: Option<usize>,
    pub peer_timeout: Option<u64>,
    pub broadcast_concurrency: Option<usize>,
    pub broadcast: Option<String>,
    pub tree_min_peers: Option<usize>,
    pub graft_after_ms: Option<u64>,
    pub quarantine_secs: Option<u64>,
    pub tombstone_retention: Option<u64>,
    pub log_json: Option<bool>,
    /// `[admission]`: rate limits and quotas.
    pub admission: Option<AdmissionFile>,
}

impl RelayConfig {
    /// Parses the process's flags and environment, reads the TOML file if named, validates.
    pub fn from_env_and_args() -> Result<Self, RelayError> {
        Self::from_args(Args::parse())
    }

    pub fn from_args(args: Args) -> Result<Self, RelayError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    RelayError::Config(format!("cannot read {}: {e}", path.display()))
                })?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| RelayError::Config(format!("{}: {e}", path.display())))?
            }
            None => FileConfig::default(),
        };
        let secs = |flag: Option<u64>, file: Option<u64>, default: u64, name: &str| {
            let v = flag.or(file).unwrap_or(default);
            if v == 0 {
                Err(RelayError::Config(format!(
                    "{name} must be at least 1 second"
                )))
            } else {
                Ok(Duration::from_secs(v))
            }
        };
        let peer_texts = if args.peers.is_empty() {
            file.peers
        } else {
            args.peers
        };
        let peers = peer_texts
            .iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                PeerAddr::parse(p.trim())
                    .map_err(|e| RelayError::Config(format!("--peer {p}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let advertise = match args.advertise.or(file.advertise) {
            Some(a) => Some(
                PeerAddr::parse(&a)
                    .map_err(|e| RelayError::Config(format!("--advertise {a}: {e}")))?,
            ),
            // A concrete listen address is reachable as is; 0.0.0.0 is not an address to share.
            None if !listen.ip().is_unspecified() => Some(PeerAddr::from_socket(listen)),
            None => None,
        };
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(default_data_dir);
        let ttl = secs(args.ttl, file.ttl, DEFAULT_TTL_SECS, "ttl")?;
        let defaults = TreeSettings::default();
        let tree = TreeSettings {
            enabled: match args.broadcast.or(file.broadcast).as_deref() {
                None | Some("tree") => true,
                Some("flood") => false,
                Some(other) => {
                    return Err(RelayError::Config(format!(
                        "--broadcast {other}: expected `tree` or `flood`"
                    )));
                }
            },
            min_peers: file.tree_min_peers.unwrap_or(defaults.min_peers),
            graft_after: file
                .graft_after_ms
                .map_or(defaults.graft_after, Duration::from_millis),
        };
        let config = RelayConfig {
            listen,
            peers,
            advertise,
            redis: args.redis.or(file.redis).filter(|r| !r.is_empty()),
            redis_cluster: args.redis_cluster || file.redis_cluster.unwrap_or(false),
            data_dir,
            ttl,
            sync_interval: secs(
                args.sync_interval,
                file.sync_interval,
                DEFAULT_SYNC_SECS,
                "sync-interval",
            )?,
            server_sync_interval: secs(
                args.server_sync_interval,
                file.server_sync_interval,
                DEFAULT_SERVER_SYNC_SECS,
                "server-sync-interval",
            )?,
            allow_private_peers: args
                .allow_private_peers
                .or(file.allow_private_peers)
                .unwrap_or(false),
            max_body_bytes: args
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(DEFAULT_MAX_BODY),
            max_sync_body_bytes: file.max_sync_body_bytes.unwrap_or(8 * 1024 * 1024),
            max_hashes_per_request: file.max_hashes_per_request.unwrap_or(100_000),
            max_fetch_messages: file.max_fetch_messages.unwrap_or(1000),
            max_known_servers: file.max_known_servers.unwrap_or(1000),
            peer_timeout: secs(args.peer_timeout, file.peer_timeout, 5, "peer-timeout")?,
            broadcast_concurrency: file.broadcast_concurrency.unwrap_or(64),
            tree,
            quarantine_base: secs(
                args.quarantine_secs,
                file.quarantine_secs,
                30,
                "quarantine-secs",
            )?,
            tombstone_retention: Duration::from_secs(
                // Long enough to outlive every copy anywhere: relays that honour the global
                // expiry drop theirs at the same moment, but one that re-stores with a fresh
                // TTL (the reference relay) may offer it back for up to a default TTL.
                file.tombstone_retention
                    .unwrap_or(ttl.as_secs().max(DEFAULT_TTL_SECS)),
            ),
            log_json: args.log_json.or(file.log_json).unwrap_or(false),
            admission: {
                let mut a = file
                    .admission
                    .unwrap_or_default()
                    .settings()
                    .map_err(RelayError::Config)?;
                match args.rate_limits.as_deref() {
                    None => {}
                    Some("on") => a.rate_limits = true,
                    Some("off") => a.rate_limits = false,
                    Some(other) => {
                        return Err(RelayError::Config(format!(
                            "--rate-limits {other}: expected `on` or `off`"
                        )));
                    }
                }
                a
            },
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), RelayError> {
        if self.max_body_bytes < 1024 {
            return Err(RelayError::Config(
                "max_body_bytes must be at least 1024".into(),
            ));
        }
        if self.max_hashes_per_request == 0 || self.max_fetch_messages == 0 {
            return Err(RelayError::Config("request limits must be positive".into()));
        }
        if self.broadcast_concurrency == 0 {
            return Err(RelayError::Config(
                "broadcast_concurrency must be positive".into(),
            ));
        }
        if let Some(urls) = &self.redis {
            let urls: Vec<&str> = if self.redis_cluster {
                urls.split(',').map(str::trim).collect()
            } else {
                vec![urls.as_str()]
            };
            for url in urls {
                if !(url.starts_with("redis://")
                    || url.starts_with("rediss://")
                    || url.starts_with("unix://") && !self.redis_cluster)
                {
                    return Err(RelayError::Config(format!(
                        "--redis {url}: expected redis://HOST:PORT"
                    )));
                }
            }
        } else if self.redis_cluster {
            return Err(RelayError::Config(
                "--redis-cluster needs --redis with at least one node of the cluster".into(),
            ));
        }
        Ok(())
    }
}

fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("jasper-relay");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".local/share/jasper-relay");
    }
    PathBuf::from("jasper-relay-data")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec() {
        let c = RelayConfig::from_args(Args::default()).unwrap();
        assert_eq!(c.ttl, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(c.sync_interval, Duration::from_secs(60));
        assert_eq!(c.server_sync_interval, Duration::from_secs(3600));
        assert_eq!(c.max_body_bytes, 102_400);
        assert_eq!(c.advertise.unwrap().to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn file_settings_apply_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(
            &path,
            "ttl = 10\nsync_interval = 5\npeers = [\"127.0.0.1:9000\"]\n",
        )
        .unwrap();
        let args = Args {
            config: Some(path),
            sync_interval: Some(2),
            ..Args::default()
        };
        let c = RelayConfig::from_args(args).unwrap();
        assert_eq!(c.ttl, Duration::from_secs(10));
        assert_eq!(c.sync_interval, Duration::from_secs(2));
        assert_eq!(c.peers.len(), 1);
    }

    #[test]
    fn bad_settings_are_refused_with_the_setting_named() {
        let err = RelayConfig::from_args(Args {
            ttl: Some(0),
            ..Args::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("ttl"), "{err}");
        let err = RelayConfig::from_args(Args {
            peers: vec!["nope".into()],
            ..Args::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("--peer nope"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, "tll = 10\n").unwrap();
        let err = RelayConfig::from_args(Args {
            config: Some(path),
            ..Args::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("tll"), "{err}");
    }

    #[test]
    fn a_cluster_takes_several_nodes_and_needs_at_least_one() {
        let c = RelayConfig::from_args(Args {
            redis: Some("redis://10.0.0.1:7000, redis://10.0.0.2:7000".into()),
            redis_cluster: true,
            ..Args::default()
        })
        .unwrap();
        assert!(c.redis_cluster);
        let err = RelayConfig::from_args(Args {
            redis: Some("redis://10.0.0.1:7000,10.0.0.2:7000".into()),
            redis_cluster: true,
            ..Args::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("--redis 10.0.0.2:7000"), "{err}");
        let err = RelayConfig::from_args(Args {
            redis_cluster: true,
            ..Args::default()
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("--redis-cluster needs --redis"),
            "{err}"
        );
    }
}
