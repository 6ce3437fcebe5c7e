//! Every relay endpoint, with whatever body: a real relay (the embedded store in a temporary
//! directory, rate limits off so that every input reaches a handler) on loopback, in this
//! process. The first byte picks the route. Invariants: the relay answers (a long-poll may
//! hold, so an answer is awaited for at most a moment), never with a 500, and every refusal is
//! the JSON error object with a code.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;

struct Harness {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let config = jasper_relay::RelayConfig::from_args(jasper_relay::config::Args {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(dir.path().to_owned()),
            rate_limits: Some("off".into()),
            ..Default::default()
        })
        .unwrap();
        let relay = rt.block_on(jasper_relay::start(config)).unwrap();
        let base = format!("http://{}", relay.local_addr);
        // Serves for the process's life.
        std::mem::forget(relay);
        Harness {
            rt,
            http: reqwest::Client::new(),
            base,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let h = harness();
    // Every route of the relay, and one it does not have.
    let routes = jasper_relay::metrics::ROUTES;
    let route = routes
        .get(pick as usize % (routes.len() + 1))
        .copied()
        .unwrap_or("/nowhere");
    let url = format!("{}{route}", h.base);
    let request = if route == "/status" || route == "/metrics" {
        h.http.get(url)
    } else {
        h.http
            .post(url)
            .header("content-type", "application/json")
            .header("x-jasper-relay", "127.0.0.1:1")
            .body(body.to_vec())
    };
    h.rt.block_on(async {
        let Ok(answer) = tokio::time::timeout(Duration::from_millis(200), async {
            let resp = request.send().await.expect("the relay answers");
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.expect("the answer is read whole");
            (status, bytes)
        })
        .await
        else {
            // A long-poll holding: an answer, later.
            return;
        };
        let (status, bytes) = answer;
        assert_ne!(status, 500, "{route}: internal error for {body:?}");
        if status >= 400 {
            let v: serde_json::Value = serde_json::from_slice(&bytes).expect("an error is JSON");
            assert!(v["error"]["code"].is_string(), "{route}: {v}");
        }
    });
});
