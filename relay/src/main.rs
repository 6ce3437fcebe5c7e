//! `jasper-relay`: parses the configuration, sets up logging, runs the relay until SIGINT or
//! SIGTERM, then shuts down gracefully (in-flight requests finish, the store is flushed).

use std::process::ExitCode;

use jasper_relay::RelayConfig;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let config = match RelayConfig::from_env_and_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("jasper-relay: {e}");
            return ExitCode::from(2);
        }
    };
    // Logs go to stderr: stdout carries only the "listening on" line that scripts read.
    let filter = EnvFilter::try_from_env("JASPER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if config.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    raise_fd_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("jasper-relay: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "relay failed");
            eprintln!("jasper-relay: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: RelayConfig) -> Result<(), jasper_relay::RelayError> {
    // Signal handlers go in before the "listening" line: a supervisor may send SIGTERM as soon
    // as it has seen it, and that must be a graceful stop, not the default kill.
    let shutdown = shutdown_signal()?;
    let relay = jasper_relay::start(config).await?;
    // Scripts and tests read this line to learn the port when listening on port 0.
    println!("jasper-relay listening on {}", relay.local_addr);
    let stop = relay.stop_token();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutdown requested");
        stop.cancel();
    });
    relay.wait().await
}

/// Resolves on SIGINT or SIGTERM. Registers the handlers immediately.
/// jasperd has the same few lines: the two binaries share no crate but jasper-core, which does
/// no I/O, and a crate for this alone would cost more than the copy.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, jasper_relay::RelayError> {
    use tokio::signal::unix::{SignalKind, signal};
    let register = |kind| {
        signal(kind)
            .map_err(|e| jasper_relay::RelayError::Config(format!("cannot handle signals: {e}")))
    };
    let mut term = register(SignalKind::terminate())?;
    let mut int = register(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Long-polls hold a socket each: allow as many as the hard limit permits (the soft limit is
/// raised to it; on macOS also capped at kern.maxfilesperproc, which setrlimit requires).
/// Failing leaves the limit as it was, which only lowers how many requests can wait at once.
fn raise_fd_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}
