#!/usr/bin/env bash
# The one command that runs every test: installs what the tests need (redis-server, a C
# toolchain for aws-lc; gnome-keyring, dbus, libsecret-tools and keyutils through
# with-secret-service.sh), then formatting, clippy with warnings as errors, and the whole
# workspace's tests (unit, real relay processes, real Redis, a real Secret Service and keyutils).
set -euo pipefail
cd "$(dirname "$0")/.."

# One target directory outside the checkout, so fresh clones reuse built dependencies.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/jasper/target}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
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
echo "== cargo test"
# Next to a throwaway gnome-keyring on a private session bus. Not under `keyctl session -`: the
# keyutils tests (and the daemon) join their own session keyring with
# prepare_process_for_keyutils(), and a wrapper would hide a missing call.
scripts/with-secret-service.sh cargo test --workspace --locked
