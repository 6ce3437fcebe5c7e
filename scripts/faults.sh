#!/usr/bin/env bash
# Faults between hosts (issue 14): four relays, two daemons and the test, each a host in a
# network namespace on one bridge, under a seeded schedule of partitions, lossy and slow links,
# relay and daemon crashes, with traffic throughout; then the invariants (every acknowledged
# packet on every relay exactly once, every accepted message delivered exactly once, no expired
# packet back). The test is daemon/tests/faults.rs; scripts/test.sh runs it with one seed.
#
#   scripts/faults.sh                 # seeds 1, 2, 3 (about a minute each)
#   scripts/faults.sh 7 8 9 10        # other seeds
#
# Needs root (namespaces, nftables); installs nftables when it is missing. Figures go in
# docs/benchmarks.md ("Faults between hosts").
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/jasper/target}"

if [ "$(id -u)" != 0 ]; then
  echo "faults.sh needs root: network namespaces and nftables rules" >&2
  exit 1
fi
if ! command -v nft >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables iproute2 >/dev/null
fi

seeds="1,2,3"
if [ $# -gt 0 ]; then seeds="$(IFS=,; echo "$*")"; fi
# The relay and the CLI the test starts (the daemon's own binary is built for its tests).
cargo build --locked -p jasper-relay --bin jasper-relay -p jasper-cli --bin jasper
JASPER_FAULT_SEEDS="$seeds" exec cargo test --locked -p jasper-daemon --test faults -- \
  --ignored --nocapture
