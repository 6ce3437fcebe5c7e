//! `jasperd`'s one typed configuration, built from (highest first) command-line flags,
//! `JASPERD_*` environment variables, a TOML file (`--config`), and defaults; validated once at
//! start-up so the rest of the daemon never re-checks it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use jasper_client::default_socket_path;
use jasper_engine::{AnonymityMode, EngineConfig};
use jasper_keystore::KeyStoreKind;
use serde::Deserialize;

use crate::error::DaemonError;

/// Validated settings of one `jasperd` process.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// What the engine gets (data directory, relays, timings, notifications).
    pub engine: EngineConfig,
    /// The Unix socket the API is served on.
    pub socket: PathBuf,
    /// `None`: Secret Service when a session bus offers it, else keyutils.
    pub key_store: Option<KeyStoreKind>,
    /// Optional loopback TCP listener, with the bearer token every call must carry.
    pub tcp: Option<TcpConfig>,
    /// Optional loopback `GET /metrics` (Prometheus), behind the same bearer token.
    pub metrics: Option<TcpConfig>,
    pub log_json: bool,
}

#[derive(Clone)]
pub struct TcpConfig {
    pub listen: SocketAddr,
    pub token: String,
}

impl std::fmt::Debug for TcpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpConfig")
            .field("listen", &self.listen)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Command line of `jasperd`. Every flag also reads `JASPERD_<NAME>`.
#[derive(Debug, Parser, Default)]
#[command(
    name = "jasperd",
    version = jasper_core::version_text!(),
    about = "The Jasper client daemon: serves the local gRPC API on a Unix socket"
)]
pub struct Args {
    /// TOML file with the same settings in snake_case (flags and environment win over it).
    #[arg(long, env = "JASPERD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory of the local database (never holds the private key).
    #[arg(long, env = "JASPERD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Unix socket to serve on [default: $XDG_RUNTIME_DIR/jasper/jasperd.sock, or
    /// DATA_DIR/jasperd.sock without XDG_RUNTIME_DIR].
    #[arg(long, env = "JASPERD_SOCKET")]
    pub socket: Option<PathBuf>,
    /// A relay HOST:PORT to start from (repeatable; comma-separated in the environment).
    #[arg(long = "relay", env = "JASPERD_RELAYS", value_delimiter = ',')]
    pub relays: Vec<String>,
    /// Where the private key is kept: secret-service or keyutils [default: Secret Service
    /// when available, else keyutils].
    #[arg(long, env = "JASPERD_KEY_STORE")]
    pub key_store: Option<String>,
    /// Use loopback and private relay addresses learned from relays (tests, LANs).
    #[arg(long, env = "JASPERD_ALLOW_PRIVATE_RELAYS")]
    pub allow_private_relays: bool,
    /// Seconds between polls of relays without long-poll (default 5).
    #[arg(long, env = "JASPERD_POLL_INTERVAL")]
    pub poll_interval: Option<u64>,
    /// Seconds one long-poll asks the RX relay to wait (default 25, at most 30; 0 turns
    /// long-polling off in favour of plain polling).
    #[arg(long, env = "JASPERD_LONG_POLL")]
    pub long_poll: Option<u64>,
    /// Seconds before a sent packet not seen on another relay is re-sent elsewhere (default 20).
    #[arg(long, env = "JASPERD_DELIVERY_TIMEOUT")]
    pub delivery_timeout: Option<u64>,
    /// Seconds between relay-list and load refreshes (default 600).
    #[arg(long, env = "JASPERD_DISCOVERY_INTERVAL")]
    pub discovery_interval: Option<u64>,
    /// Most seconds a copy for this key's other logins waits, at random, so that it does not
    /// enter the mesh in the same second as the message (default 30; 0 sends it at once).
    #[arg(long, env = "JASPERD_SENT_COPY_DELAY")]
    pub sent_copy_delay: Option<u64>,
    /// No desktop notifications for incoming messages.
    #[arg(long, env = "JASPERD_NO_NOTIFICATIONS")]
    pub no_notifications: bool,
    /// Also serve on this loopback TCP address (needs --token-file).
    #[arg(long, env = "JASPERD_TCP")]
    pub tcp: Option<SocketAddr>,
    /// File holding the bearer token TCP clients must send (`authorization: Bearer <token>`).
    #[arg(long, env = "JASPERD_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Serve `GET /metrics` (Prometheus text) on this loopback address (needs --token-file;
    /// scrapers send the token as `authorization: Bearer <token>`). Off by default.
    #[arg(long, env = "JASPERD_METRICS")]
    pub metrics: Option<SocketAddr>,
    /// Log as JSON lines instead of text (logs go to stderr).
    #[arg(long, env = "JASPERD_LOG_JSON")]
    pub log_json: bool,
    /// An IPFS node's HTTP RPC API (`http://127.0.0.1:5001`) for attachments.
    #[arg(long, env = "JASPERD_IPFS_API")]
    pub ipfs_api: Option<String>,
    /// An IPFS gateway (`http://127.0.0.1:8080`) to download attachments from instead.
    #[arg(long, env = "JASPERD_IPFS_GATEWAY")]
    pub ipfs_gateway: Option<String>,
    /// A STUN server for transparent mode, `stun:HOST[:PORT]` (repeatable; comma-separated in
    /// the environment). Plain STUN only: the WebRTC library cannot do `stuns:`.
    #[arg(long = "stun", env = "JASPERD_STUN", value_delimiter = ',')]
    pub stun: Vec<String>,
    /// Local UDP address to gather WebRTC host candidates on (repeatable) [default: 0.0.0.0:0,
    /// every non-loopback interface].
    #[arg(
        long = "webrtc-bind",
        env = "JASPERD_WEBRTC_BIND",
        value_delimiter = ','
    )]
    pub webrtc_bind: Vec<String>,
    /// With fewer relays than relay roles: `strict` holds messages until every key has a relay
    /// of its own (no relay sees two keys of this identity), `relaxed` shares relays and reports
    /// what they can link [default: strict].
    #[arg(long, env = "JASPERD_ANONYMITY")]
    pub anonymity: Option<String>,
}

/// The TOML file: the same names as the flags, in snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub relays: Vec<String>,
    pub key_store: Option<String>,
    pub allow_private_relays: Option<bool>,
    pub poll_interval: Option<u64>,
    pub long_poll: Option<u64>,
    pub delivery_timeout: Option<u64>,
    pub discovery_interval: Option<u64>,
    pub notifications: Option<bool>,
    pub tcp: Option<SocketAddr>,
    pub token_file: Option<PathBuf>,
    pub metrics: Option<SocketAddr>,
    pub log_json: Option<bool>,
    /// Largest message content accepted from the API, in bytes.
    pub max_message_bytes: Option<usize>,
    /// Seconds before one relay request is abandoned.
    pub relay_timeout: Option<u64>,
    pub ipfs_api: Option<String>,
    pub ipfs_gateway: Option<String>,
    /// STUN servers for transparent mode.
    #[serde(default)]
    pub stun: Vec<String>,
    #[serde(default)]
    pub webrtc_bind: Vec<String>,
    /// Seconds a transparent session may take to come up (default 20).
    pub webrtc_connect_timeout: Option<u64>,
    /// Seconds an unanswered call rings (default 60).
    pub ring_timeout: Option<u64>,
    /// `strict` or `relaxed` (see `--anonymity`).
    pub anonymity: Option<String>,
    /// Seconds between reads of the witness relay's recent-hash feed (default 2).
    pub witness_interval: Option<u64>,
    /// Most seconds a copy for other logins waits (see `--sent-copy-delay`).
    pub sent_copy_delay: Option<u64>,
}

impl DaemonConfig {
    /// Parses the process's flags and environment, reads the TOML file if named, validates.
    pub fn from_env_and_args() -> Result<Self, DaemonError> {
        Self::from_args(Args::parse())
    }

    pub fn from_args(args: Args) -> Result<Self, DaemonError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    DaemonError::Config(format!("cannot read {}: {e}", path.display()))
                })?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| DaemonError::Config(format!("{}: {e}", path.display())))?
            }
            None => FileConfig::default(),
        };
        let data_dir = args.data_dir.or(file.data_dir).ok_or_else(|| {
            DaemonError::Config("--data-dir (or JASPERD_DATA_DIR) is required".into())
        })?;
        let secs = |flag: Option<u64>, file: Option<u64>, name: &str| -> Result<_, DaemonError> {
            match flag.or(file) {
                Some(0) => Err(DaemonError::Config(format!(
                    "--{name} must be at least 1 second"
                ))),
                Some(v) => Ok(Some(Duration::from_secs(v))),
                None => Ok(None),
            }
        };
        let relays = if args.relays.is_empty() {
            file.relays
        } else {
            args.relays
        };
        let mut engine = EngineConfig::new(&data_dir);
        engine.relays = relays
            .into_iter()
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .collect();
        engine.allow_private_relays =
            args.allow_private_relays || file.allow_private_relays.unwrap_or(false);
        if let Some(d) = secs(args.poll_interval, file.poll_interval, "poll-interval")? {
            engine.poll_interval = d;
        }
        if let Some(s) = args.long_poll.or(file.long_poll) {
            engine.long_poll = Duration::from_secs(s);
        }
        if let Some(d) = secs(
            args.delivery_timeout,
            file.delivery_timeout,
            "delivery-timeout",
        )? {
            engine.delivery_timeout = d;
        }
        if let Some(d) = secs(
            args.discovery_interval,
            file.discovery_interval,
            "discovery-interval",
        )? {
            engine.discovery_interval = d;
        }
        if let Some(d) = secs(None, file.relay_timeout, "relay-timeout")? {
            engine.relay_timeout = d;
        }
        if let Some(max) = file.max_message_bytes {
            engine.max_message_bytes = max;
        }
        for (name, url) in [
            ("ipfs-api", args.ipfs_api.or(file.ipfs_api)),
            ("ipfs-gateway", args.ipfs_gateway.or(file.ipfs_gateway)),
        ] {
            if let Some(u) = &url
                && !(u.starts_with("http://") || u.starts_with("https://"))
            {
                return Err(DaemonError::Config(format!(
                    "--{name} must be an http:// or https:// URL, not {u:?}"
                )));
            }
            match name {
                "ipfs-api" => engine.ipfs_api = url,
                _ => engine.ipfs_gateway = url,
            }
        }
        engine.notifications = !args.no_notifications && file.notifications.unwrap_or(true);
        let pick = |flag: Vec<String>, file: Vec<String>| {
            let list = if flag.is_empty() { file } else { flag };
            list.into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        };
        engine.transparent.stun_servers = pick(args.stun, file.stun);
        let bind = pick(args.webrtc_bind, file.webrtc_bind);
        if !bind.is_empty() {
            engine.transparent.bind_addrs = bind;
        }
        if let Some(d) = secs(None, file.webrtc_connect_timeout, "webrtc_connect_timeout")? {
            engine.transparent.connect_timeout = d;
        }
        if let Some(d) = secs(None, file.ring_timeout, "ring_timeout")? {
            engine.transparent.ring_timeout = d;
        }
        engine.transparent.validate().map_err(DaemonError::Config)?;
        if let Some(mode) = args.anonymity.or(file.anonymity) {
            engine.anonymity = parse_anonymity(&mode)?;
        }
        if let Some(d) = secs(None, file.witness_interval, "witness_interval")? {
            engine.witness_interval = d;
        }
        if let Some(s) = args.sent_copy_delay.or(file.sent_copy_delay) {
            engine.sent_copy_delay = Duration::from_secs(s);
        }

        let key_store = match args.key_store.or(file.key_store) {
            Some(name) => Some(
                name.parse::<KeyStoreKind>()
                    .map_err(|e| DaemonError::Config(format!("--key-store: {e}")))?,
            ),
            None => None,
        };
        let socket = match args.socket.or(file.socket) {
            Some(path) => path,
            None => default_socket_path(Some(&data_dir))
                .ok_or_else(|| DaemonError::Config("no socket path: pass --socket".into()))?,
        };
        let tcp_listen = args.tcp.or(file.tcp);
        let metrics_listen = args.metrics.or(file.metrics);
        let token = match args.token_file.or(file.token_file) {
            None => None,
            Some(_) if tcp_listen.is_none() && metrics_listen.is_none() => {
                return Err(DaemonError::Config(
                    "--token-file is only used with --tcp or --metrics".into(),
                ));
            }
            Some(path) => Some(read_token(&path)?),
        };
        let on_loopback = |flag: &str, listen: Option<SocketAddr>| match (listen, &token) {
            (None, _) => Ok(None),
            (Some(_), None) => Err(DaemonError::Config(format!(
                "--{flag} needs --token-file: its clients must present a bearer token"
            ))),
            (Some(listen), Some(token)) if listen.ip().is_loopback() => Ok(Some(TcpConfig {
                listen,
                token: token.clone(),
            })),
            (Some(listen), Some(_)) => Err(DaemonError::Config(format!(
                "--{flag} {listen}: only loopback addresses (127.0.0.0/8, ::1) are allowed"
            ))),
        };
        let tcp = on_loopback("tcp", tcp_listen)?;
        let metrics = on_loopback("metrics", metrics_listen)?;
        let config = DaemonConfig {
            engine,
            socket,
            key_store,
            tcp,
            metrics,
            log_json: args.log_json || file.log_json.unwrap_or(false),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), DaemonError> {
        if self.engine.max_message_bytes == 0 {
            return Err(DaemonError::Config(
                "max_message_bytes must be positive".into(),
            ));
        }
        if self.engine.long_poll > Duration::from_secs(30) {
            return Err(DaemonError::Config(
                "--long-poll is at most 30 seconds (relays cap it there)".into(),
            ));
        }
        Ok(())
    }
}

/// `--anonymity`'s value; an unknown one is refused naming the allowed ones.
fn parse_anonymity(value: &str) -> Result<AnonymityMode, DaemonError> {
    AnonymityMode::parse(value).ok_or_else(|| {
        DaemonError::Config(format!(
            "--anonymity {value:?}: unknown mode; allowed values are {} and {}",
            AnonymityMode::Strict.as_str(),
            AnonymityMode::Relaxed.as_str()
        ))
    })
}

fn read_token(path: &Path) -> Result<String, DaemonError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| DaemonError::Config(format!("--token-file {}: {e}", path.display())))?;
    let token = text.trim();
    // Short tokens can be guessed over a loopback connection at leisure.
    if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(DaemonError::Config(format!(
            "--token-file {}: the token must be one line of at least 16 printable characters",
            path.display()
        )));
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<DaemonConfig, DaemonError> {
        let mut full = vec!["jasperd"];
        full.extend_from_slice(argv);
        DaemonConfig::from_args(Args::try_parse_from(full).expect("flags parse"))
    }

    #[test]
    fn flags_fill_the_engine_config() {
        let c = parse(&[
            "--data-dir",
            "/tmp/j",
            "--socket",
            "/tmp/j.sock",
            "--relay",
            "127.0.0.1:1",
            "--relay",
            "127.0.0.1:2",
            "--key-store",
            "keyutils",
            "--allow-private-relays",
            "--long-poll",
            "5",
            "--delivery-timeout",
            "7",
            "--no-notifications",
        ])
        .unwrap();
        assert_eq!(c.engine.relays, ["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(c.key_store, Some(KeyStoreKind::Keyutils));
        assert!(c.engine.allow_private_relays);
        assert!(!c.engine.notifications);
        assert_eq!(c.engine.long_poll, Duration::from_secs(5));
        assert_eq!(c.engine.delivery_timeout, Duration::from_secs(7));
        assert_eq!(c.socket, PathBuf::from("/tmp/j.sock"));
        assert_eq!(c.engine.anonymity, AnonymityMode::Strict, "the default");
    }

    #[test]
    fn anonymity_is_strict_or_relaxed_and_anything_else_is_refused() {
        let c = parse(&["--data-dir", "/tmp/j", "--anonymity", "relaxed"]).unwrap();
        assert_eq!(c.engine.anonymity, AnonymityMode::Relaxed);
        let c = parse(&["--data-dir", "/tmp/j", "--anonymity", "Strict"]).unwrap();
        assert_eq!(c.engine.anonymity, AnonymityMode::Strict);
        let err = parse(&["--data-dir", "/tmp/j", "--anonymity", "nonsense"]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("nonsense") && text.contains("strict") && text.contains("relaxed"),
            "{text}"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jasperd.toml");
        std::fs::write(
            &file,
            "data_dir = \"/tmp/j\"\nanonymity = \"relaxed\"\nwitness_interval = 7\n",
        )
        .unwrap();
        let c = parse(&["--config", file.to_str().unwrap()]).unwrap();
        assert_eq!(c.engine.anonymity, AnonymityMode::Relaxed);
        assert_eq!(c.engine.witness_interval, Duration::from_secs(7));
        let c = parse(&["--config", file.to_str().unwrap(), "--anonymity", "strict"]).unwrap();
        assert_eq!(c.engine.anonymity, AnonymityMode::Strict, "the flag wins");
        std::fs::write(&file, "data_dir = \"/tmp/j\"\nanonymity = \"loose\"\n").unwrap();
        let err = parse(&["--config", file.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("strict and relaxed"), "{err}");
        std::fs::write(&file, "data_dir = \"/tmp/j\"\nwitness_interval = 0\n").unwrap();
        let err = parse(&["--config", file.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("witness_interval"), "{err}");
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(parse(&[]).is_err(), "data dir is required");
        assert!(parse(&["--data-dir", "/tmp/j", "--key-store", "kwallet"]).is_err());
        assert!(parse(&["--data-dir", "/tmp/j", "--poll-interval", "0"]).is_err());
        assert!(parse(&["--data-dir", "/tmp/j", "--long-poll", "31"]).is_err());
        let polling = parse(&["--data-dir", "/tmp/j", "--long-poll", "0"]).unwrap();
        assert_eq!(polling.engine.long_poll, Duration::ZERO);
        assert!(parse(&["--data-dir", "/tmp/j", "--tcp", "127.0.0.1:9"]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "0123456789abcdef0123\n").unwrap();
        let token = token.to_str().unwrap();
        let err = parse(&[
            "--data-dir",
            "/tmp/j",
            "--tcp",
            "0.0.0.0:9",
            "--token-file",
            token,
        ])
        .unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        let ok = parse(&[
            "--data-dir",
            "/tmp/j",
            "--tcp",
            "127.0.0.1:9",
            "--token-file",
            token,
        ])
        .unwrap();
        assert_eq!(ok.tcp.unwrap().token, "0123456789abcdef0123");
        std::fs::write(dir.path().join("short"), "abc").unwrap();
        let short = dir.path().join("short");
        assert!(
            parse(&[
                "--data-dir",
                "/tmp/j",
                "--tcp",
                "[::1]:9",
                "--token-file",
                short.to_str().unwrap(),
            ])
            .is_err()
        );
    }

    #[test]
    fn toml_file_is_read_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jasperd.toml");
        std::fs::write(
            &file,
            "data_dir = \"/tmp/from-file\"\nrelays = [\"127.0.0.1:5\"]\nnotifications = false\n\
             poll_interval = 3\n",
        )
        .unwrap();
        let c = parse(&[
            "--config",
            file.to_str().unwrap(),
            "--poll-interval",
            "9",
            "--socket",
            "/tmp/s.sock",
        ])
        .unwrap();
        assert_eq!(c.engine.data_dir, PathBuf::from("/tmp/from-file"));
        assert_eq!(c.engine.relays, ["127.0.0.1:5"]);
        assert!(!c.engine.notifications);
        assert_eq!(c.engine.poll_interval, Duration::from_secs(9));
        std::fs::write(&file, "bogus = 1\n").unwrap();
        assert!(parse(&["--config", file.to_str().unwrap()]).is_err());
    }
}
