//! The inner message (the plaintext JSON inside an envelope, after a valid signature): read
//! leniently, never a panic; what parses serialises again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = jasper_core::protocol::InnerMessage::from_json(data) {
        let _ = m.parsed_timestamp();
        let _ = serde_json::to_vec(&m).expect("a parsed message serialises");
    }
});
