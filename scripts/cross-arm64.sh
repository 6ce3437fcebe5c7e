#!/usr/bin/env bash
# ARM64 (aarch64 Linux) from this x86-64 machine: installs the cross toolchain and qemu-user when
# missing (Debian's gcc-aarch64-linux-gnu and qemu-user, as root), then
#   1. jasper-ffi's Rust tests built for aarch64 and run under qemu-aarch64;
#   2. jasperd and the jasper CLI built for aarch64, and their --version run under qemu;
#   3. the mobile library (`--profile mobile`: fat LTO, stripped) for aarch64, with its size;
#   4. whether jasper-ffi checks for aarch64-linux-android without the NDK (`cargo check`), and
#      what stops it if not.
# Not part of scripts/test.sh (it builds everything again for another target: about 25 minutes
# from nothing on two cores). Figures in docs/benchmarks.md ("ARM64").
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/jasper/target}"
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || missing+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null 2>&1 || missing+=(qemu-user)
command -v file >/dev/null 2>&1 || missing+=(file)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
target=aarch64-unknown-linux-gnu
rustup target add "$target" aarch64-linux-android >/dev/null

# The linker, the C compiler aws-lc-sys and rusqlite's SQLite need, and qemu as the runner of
# test binaries (-L: where the aarch64 C library is).
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar

echo "== 1. jasper-ffi's tests for $target, under qemu-aarch64"
cargo test --locked --target "$target" -p jasper-ffi

echo "== 2. jasperd and jasper for $target"
cargo build --locked --target "$target" -p jasper-daemon --bin jasperd -p jasper-cli --bin jasper
for bin in jasperd jasper; do
  path="$CARGO_TARGET_DIR/$target/debug/$bin"
  file -b "$path" | cut -d, -f1-2
  qemu-aarch64 -L /usr/aarch64-linux-gnu "$path" --version
done

echo "== 3. the mobile library for $target"
cargo build --locked --target "$target" -p jasper-ffi --profile mobile
lib="$CARGO_TARGET_DIR/$target/mobile/libjasper_ffi.so"
file -b "$lib" | cut -d, -f1-2
size=$(stat -c %s "$lib")
gz=$(gzip -9 -c "$lib" | wc -c)
echo "libjasper_ffi.so ($target, mobile): $size bytes, $gz gzipped"

echo "== 4. aarch64-linux-android without the NDK"
if out=$(cargo check --locked --target aarch64-linux-android -p jasper-ffi 2>&1); then
  echo "cargo check --target aarch64-linux-android -p jasper-ffi: passes"
else
  echo "cargo check --target aarch64-linux-android -p jasper-ffi: fails; what stops it:"
  # The distinct lines that say why (grep -m, not head: with pipefail a closed pipe fails).
  echo "$out" | grep -E "^error|failed to find tool|NDK" | sort -u | grep -m 8 . || true
fi
