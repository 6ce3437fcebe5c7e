//! `jasperd`: parses the configuration, prepares the process (keyutils session keyring, the
//! API socket) before any thread exists, then serves until SIGINT or SIGTERM.

use std::process::ExitCode;

use jasper_daemon::{DaemonConfig, DaemonError, server};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let config = match DaemonConfig::from_env_and_args() {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let filter = EnvFilter::try_from_env("JASPER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr: stdout carries only the "listening" line.
    if config.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init();
    }
    let prepared = match server::prepare(config) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            return fail(&DaemonError::Serve(format!(
                "cannot start the runtime: {e}"
            )));
        }
    };
    let result = runtime.block_on(async move {
        // Handlers go in before the "listening" line: SIGTERM right after it must be graceful.
        let shutdown = shutdown_signal()?;
        server::run(prepared, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &DaemonError) -> ExitCode {
    tracing::error!(error = %e, "jasperd failed");
    eprintln!("jasperd: {e}");
    ExitCode::from(e.exit_code())
}

/// Resolves on SIGINT or SIGTERM. Registers the handlers immediately.
/// jasper-relay has the same few lines: the two binaries share no crate but jasper-core, which
/// does no I/O, and a crate for this alone would cost more than the copy.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, DaemonError> {
    use tokio::signal::unix::{SignalKind, signal};
    let register =
        |kind| signal(kind).map_err(|e| DaemonError::Serve(format!("cannot handle signals: {e}")));
    let mut term = register(SignalKind::terminate())?;
    let mut int = register(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
