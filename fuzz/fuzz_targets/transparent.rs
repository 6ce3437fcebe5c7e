//! Transparent mode from outside: signals (the content of `RTC` inner messages, from a
//! contact) and data-channel messages (chunks of frames, from the peer). Never a panic; the
//! reassembler stays bounded whatever the chunk flags and sizes.
#![no_main]

use jasper_engine::transparent::wire::{Reassembler, SignalEnvelope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    if pick % 2 == 0 {
        let _ = SignalEnvelope::parse(&String::from_utf8_lossy(rest));
        return;
    }
    // Data-channel messages separated by 0xff 0x00.
    let mut r = Reassembler::default();
    let mut start = 0;
    for i in 0..=rest.len() {
        let end = i == rest.len() || (rest[i] == 0xff && rest.get(i + 1) == Some(&0));
        if end {
            let _ = r.push(&rest[start..i]);
            start = i + 2;
        }
    }
});
