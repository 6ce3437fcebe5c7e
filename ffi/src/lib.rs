//! # jasper-ffi
//!
//! The Jasper engine in-process for Kotlin (Android, JVM), Swift (iOS, macOS) and Python,
//! through uniffi's proc-macros. A thin shell: it translates the engine's API into uniffi
//! objects, records, enums and one error enum, and decides nothing. See README.md.

mod engine;
mod error;
mod events;
mod model;
mod secrets;

pub use engine::JasperEngine;
pub use error::JasperError;
pub use events::{DownloadListener, EventListener, Subscription};
pub use model::*;
pub use secrets::{SecretStore, memory_secret_store};

uniffi::setup_scaffolding!("jasper");

/// The tokio runtime the engines of this process run on: their background tasks (receiving,
/// sending, discovery) and every async method. Owned here, not borrowed from the caller, so
/// the engine works the same under Kotlin coroutines, Swift concurrency and Python's asyncio.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("jasper-engine")
            .enable_all()
            .build()
            // Only fails when the OS refuses threads or an epoll/kqueue handle: nothing works then.
            .expect("cannot start the jasper-engine tokio runtime")
    })
}

/// Runs `fut` on [`runtime()`] and waits for it from whatever executor polls the result (the
/// foreign language's). A panic inside is re-raised here, where uniffi turns it into the
/// foreign language's internal-error exception.
async fn on_runtime<T: Send + 'static>(
    fut: impl Future<Output = Result<T, JasperError>> + Send + 'static,
) -> Result<T, JasperError> {
    match runtime().spawn(fut).await {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(JasperError::shutting_down()),
    }
}
