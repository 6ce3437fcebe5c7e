#!/usr/bin/env bash
# The one command that runs every test: installs what the tests need (redis-server, a C
# toolchain for aws-lc, coturn as the STUN server of the transparent-mode tests, Python with
# pytest, Maven and a JDK, npm for the IPFS node, tmux as the terminal of `jasper chat`'s test;
# gnome-keyring, dbus, libsecret-tools and keyutils through with-secret-service.sh), then hands
# over to `cargo xtask test` (xtask/src/test.rs): formatting, clippy with warnings as errors,
# the whole workspace's tests (unit, real relay processes, real Redis, a real Secret Service and
# keyutils, real WebRTC peers, a real IPFS node, the terminal frontend in tmux); faults between
# hosts in network namespaces (one seed); then the uniffi bindings: the committed ones must match
# a fresh generation, and the Python (pytest) and Kotlin-on-the-JVM (Maven, JUnit) tests run them
# against real relays. Installing stays here because it needs apt and root.
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
# The fault test's hosts are network namespaces cabled with veth, its faults nftables rules.
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
# The CLI's completions are run in bash, fish and zsh, its man pages rendered by groff and man.
command -v fish >/dev/null 2>&1 || missing+=(fish)
command -v zsh >/dev/null 2>&1 || missing+=(zsh)
command -v groff >/dev/null 2>&1 || missing+=(groff-base)
command -v man >/dev/null 2>&1 || missing+=(man-db)
# `jasper chat` is tested in a real terminal: a tmux pane (daemon/tests/chat.rs).
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
# systemd-analyze checks the units in packaging/systemd (daemon/tests/packaging.rs).
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
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

# pytest for the Python binding tests, with pip: the one Python package they need.
if ! python3 -m pytest --version >/dev/null 2>&1; then
  python3 -m pip install --quiet pytest
fi

exec cargo xtask test
