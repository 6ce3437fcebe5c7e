//! Attachments from outside: the links in a message's Markdown (`parse_attachments`) and an
//! encrypted attachment's bytes as an IPFS node or gateway serves them (`decrypt_stream`:
//! header, chunking, tags, end of stream). Never a panic; a stream that is not one sealed with
//! the key is refused, and nothing is written past what was verified chunk by chunk.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    if pick % 2 == 0 {
        let text = String::from_utf8_lossy(rest);
        for a in jasper_core::attachment::parse_attachments(&text) {
            // What was parsed renders back to a link that parses the same.
            let again = jasper_core::attachment::parse_attachments(&a.to_markdown());
            assert_eq!(again.len(), 1, "{:?}", a.to_markdown());
        }
        return;
    }
    let key = jasper_core::attachment::AttachmentKey::from_bytes([9u8; 32]);
    let mut out = Vec::new();
    let size = rest.len() as u64;
    let result = jasper_core::attachment::decrypt_stream(rest, &mut out, &key, &[0u8; 32], size);
    assert!(result.is_err(), "random bytes decrypted under a fixed key");
});
