//! `uniffi-bindgen` at the exact uniffi version `jasper-ffi` is built with, so generating the
//! bindings needs nothing installed: `cargo run -p uniffi-bindgen -- generate --library ...`
//! (what `scripts/generate-bindings.sh` runs).

fn main() {
    uniffi::uniffi_bindgen_main()
}
