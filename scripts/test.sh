#!/usr/bin/env bash
# The one command that runs every test: installs what the tests need (redis-server, a C
# toolchain for aws-lc, coturn as the STUN server of the transparent-mode tests; gnome-keyring,
# dbus, libsecret-tools and keyutils through with-secret-service.sh), then formatting, clippy
# with warnings as errors, and the whole workspace's tests (unit, real relay processes, real
# Redis, a real Secret Service and keyutils, real WebRTC peers); then the uniffi bindings: the
# committed ones must match a fresh generation, and the Python (pytest) and Kotlin-on-the-JVM
# (Maven, JUnit) tests run them against real relays.
set -euo pipefail
cd "$(dirname "$0")/.."

# One target directory outside the checkout, so fresh clones reuse built dependencies.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/jasper/target}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v javac >/dev/null 2>&1 || missing+=(default-jdk-headless)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
command -v turnserver >/dev/null 2>&1 || missing+=(coturn)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi
rustup component add clippy rustfmt >/dev/null 2>&1 || true

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== IPFS node (js-ipfs on loopback, for the attachment tests)"
# Installed once into ~/.cache/jasper/jsipfs (2-4 minutes the first time), then ~5 s to start.
ipfs_env=$(scripts/ipfs-node.sh start)
eval "$ipfs_env"
trap 'scripts/ipfs-node.sh stop' EXIT
echo "== cargo test"
# Next to a throwaway gnome-keyring on a private session bus. Not under `keyctl session -`: the
# keyutils tests (and the daemon) join their own session keyring with
# prepare_process_for_keyutils(), and a wrapper would hide a missing call.
scripts/with-secret-service.sh cargo test --workspace --locked

echo "== bindings: committed bindings match the library"
# Builds jasper-ffi and uniffi-bindgen (debug) on their own: the cdylib the binding tests load is
# that build's target/debug/libjasper_ffi.so (cargo test builds only the crate's test harness).
scripts/generate-bindings.sh --check
ffi_lib="$CARGO_TARGET_DIR/debug/libjasper_ffi.so"
# jasper-relay and jasper-mesh: built for the relay's and the kit's integration tests above;
# here only if those were skipped.
relay_bin="$CARGO_TARGET_DIR/debug/jasper-relay"
[ -x "$relay_bin" ] || cargo build --locked -p jasper-relay --bin jasper-relay
mesh_bin="$CARGO_TARGET_DIR/debug/jasper-mesh"
[ -x "$mesh_bin" ] || cargo build --locked -p jasper-test --bin jasper-mesh

echo "== bindings: Python (pytest)"
if ! python3 -m pytest --version >/dev/null 2>&1; then
  python3 -m pip install --quiet pytest
fi
JASPER_FFI_LIB="$ffi_lib" JASPER_RELAY_BIN="$relay_bin" JASPER_MESH_BIN="$mesh_bin" \
  python3 -m pytest -q -p no:cacheprovider bindings/python

echo "== bindings: Kotlin on the JVM (Maven, JUnit)"
# -q hides Surefire's summary, so it is printed from the reports afterwards. The first run
# downloads Kotlin, JNA, coroutines and JUnit from Maven Central into ~/.m2.
jvm=bindings/kotlin/jasper-jvm
rm -rf "$jvm/target/surefire-reports"
mvn -B -q -f "$jvm/pom.xml" test \
  -Djasper.ffi.dir="$(dirname "$ffi_lib")" -Djasper.relay.bin="$relay_bin" \
  -Djasper.mesh.bin="$mesh_bin"
cat "$jvm"/target/surefire-reports/*.txt | grep -h "^Tests run:"
