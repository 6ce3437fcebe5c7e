#!/usr/bin/env bash
# Kept for the docs and ios/build-xcframework.sh that name it: the port is xtask/src/bindings.rs.
#   scripts/generate-bindings.sh [--check]   same as: cargo xtask bindings [--check]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/jasper/target}"
exec cargo xtask bindings "$@"
