#!/usr/bin/env bash
# Regenerates the Kotlin, Swift and Python bindings of jasper-ffi from the built library
# (uniffi library mode, with the workspace's own uniffi-bindgen: nothing to install).
#
#   scripts/generate-bindings.sh           write them into bindings/ (and the iOS package)
#   scripts/generate-bindings.sh --check   generate into a temporary directory and fail if the
#                                          committed files differ (run by scripts/test.sh)
#
# A debug build is enough: the bindings depend only on the interface metadata in the library.
# JASPER_FFI_LIB=path uses a library already built instead of building jasper-ffi (not a stripped
# one: the metadata is read from the symbol table, which `--profile mobile` strips). The two
# packages are built one after the other, not together: together, cargo would unify uniffi's
# `cli` feature into jasper-ffi's dependencies and make a third configuration of it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/jasper/target}"

check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

case "$(uname -s)" in
  Darwin) lib_file=libjasper_ffi.dylib ;;
  *) lib_file=libjasper_ffi.so ;;
esac

cargo build --locked --quiet -p uniffi-bindgen
bindgen="$CARGO_TARGET_DIR/debug/uniffi-bindgen"
if [ -n "${JASPER_FFI_LIB:-}" ]; then
  lib="$JASPER_FFI_LIB"
else
  cargo build --locked --quiet -p jasper-ffi
  lib="$CARGO_TARGET_DIR/debug/$lib_file"
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for lang in kotlin swift python; do
  # --no-format: the output must not depend on which formatters a machine has.
  "$bindgen" generate --no-format --language "$lang" --out-dir "$out/$lang" "$lib" >/dev/null
done

# generated file -> where it is committed. The Swift source lives once, in the Swift package
# (SwiftPM takes no sources from outside the package directory); its C header and module map
# stay in bindings/swift, where ios/build-xcframework.sh packs them into the xcframework.
pairs=(
  "kotlin/org/jasper/jasper.kt" "bindings/kotlin/generated/org/jasper/jasper.kt"
  "swift/JasperFFI.h" "bindings/swift/JasperFFI.h"
  "swift/JasperFFI.modulemap" "bindings/swift/JasperFFI.modulemap"
  "swift/Jasper.swift" "ios/Sources/Jasper/Jasper.swift"
  "python/jasper.py" "bindings/python/src/jasper/jasper.py"
)

# Every file the generator wrote must have a place above (a new one means this list is stale).
expected=$(for ((i = 0; i < ${#pairs[@]}; i += 2)); do echo "${pairs[i]}"; done | sort -u)
actual=$(cd "$out" && find . -type f | sed 's|^\./||' | sort)
if [ "$expected" != "$actual" ]; then
  echo "uniffi-bindgen wrote other files than scripts/generate-bindings.sh expects:" >&2
  diff <(echo "$expected") <(echo "$actual") >&2 || true
  exit 1
fi

stale=0
for ((i = 0; i < ${#pairs[@]}; i += 2)); do
  src="$out/${pairs[i]}"
  dst="${pairs[i + 1]}"
  if $check; then
    if ! cmp -s "$src" "$dst"; then
      echo "stale: $dst" >&2
      diff -u "$dst" "$src" 2>&1 | head -20 >&2 || true
      stale=1
    fi
  else
    mkdir -p "$(dirname "$dst")"
    cp "$src" "$dst"
    echo "wrote $dst"
  fi
done

if [ "$stale" != 0 ]; then
  echo "the committed bindings are stale: run scripts/generate-bindings.sh and commit" >&2
  exit 1
fi
if $check; then
  echo "bindings are up to date"
fi
