//! What the relay's simulation benches (`mesh_sim`, `sync_sim`) share: running a bench's
//! async body from `main` with its errors printed, and the fixtures' first recipient key.

use std::future::Future;

pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const RECIPIENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/recipients.txt");

/// The first recipient key of the test fixtures.
pub fn first_recipient() -> Res<String> {
    Ok(std::fs::read_to_string(RECIPIENTS)?
        .lines()
        .find(|l| !l.trim().is_empty())
        .ok_or("no recipient key in the fixtures")?
        .trim()
        .to_owned())
}

/// Parses the arguments (exit 2 on a bad one) and runs the bench on `runtime` (exit 1 on an
/// error), each error prefixed with the bench's name.
pub fn run_bench<O, Fut>(
    name: &str,
    parse: impl FnOnce(&[String]) -> Res<O>,
    runtime: tokio::runtime::Runtime,
    run: impl FnOnce(O) -> Fut,
) where
    Fut: Future<Output = Res<()>>,
{
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = runtime.block_on(run(opts)) {
        eprintln!("{name}: {e}");
        std::process::exit(1);
    }
}
