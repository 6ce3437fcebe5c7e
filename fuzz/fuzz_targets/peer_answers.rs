//! What a peer relay (or any relay a client asks) answers, read by our parsers: `/fetch`,
//! `/sync/hashes`, `/sync/servers` answers, `/status`, reconciliation answers and coded
//! symbols, a beacon, and the request side of `/sync/reconcile`. The first byte picks. They
//! must return an error or a value, never panic, and never allocate in proportion to a length
//! they were told rather than to the bytes they got.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    match pick % 8 {
        0 => drop(jasper_core::protocol::parse_fetch_response(body)),
        1 => drop(jasper_core::protocol::parse_hashes_response(body)),
        2 => drop(jasper_core::protocol::parse_servers_response(body)),
        3 => drop(jasper_relay::mesh::client::PeerStatus::from_json(body)),
        4 => drop(jasper_relay::mesh::reconcile::decode_answer(body)),
        5 => drop(jasper_core::reconcile::decode_symbols(body)),
        6 => {
            if let Ok(b) = serde_json::from_slice::<jasper_relay::mesh::tree::Beacon>(body) {
                let _ = b.check();
            }
        }
        _ => drop(jasper_relay::mesh::reconcile::ReconcileRequest::parse(body)),
    }
});
