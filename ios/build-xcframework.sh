#!/usr/bin/env bash
# Builds ios/JasperFFI.xcframework, the binary target of the Swift package in ios/: jasper-ffi as
# a static library for iOS devices (arm64), the iOS simulator (arm64 + x86_64) and macOS (arm64
# + x86_64), with the generated C header and module map. Runs on a Mac with Xcode's command line
# tools and rustup; then `swift build` in ios/ or add the package to an Xcode project.
#
#   ios/build-xcframework.sh                        [profile.mobile] (LTO, stripped)
#   JASPER_RUST_PROFILE=release ios/build-xcframework.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(uname -s)" != Darwin ] || ! command -v xcodebuild >/dev/null 2>&1; then
  echo "build-xcframework.sh needs macOS with Xcode (xcodebuild, lipo)" >&2
  exit 1
fi

profile="${JASPER_RUST_PROFILE:-mobile}"
target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/jasper/target}"
export CARGO_TARGET_DIR="$target_dir"
export IPHONEOS_DEPLOYMENT_TARGET=15.0
export MACOSX_DEPLOYMENT_TARGET=12.0

device=aarch64-apple-ios
simulators=(aarch64-apple-ios-sim x86_64-apple-ios)
macs=(aarch64-apple-darwin x86_64-apple-darwin)
rustup target add "$device" "${simulators[@]}" "${macs[@]}"
for target in "$device" "${simulators[@]}" "${macs[@]}"; do
  echo "== cargo build -p jasper-ffi --target $target --profile $profile"
  cargo build --locked -p jasper-ffi --target "$target" --profile "$profile"
done

# The Swift file in the package must be the one generated with this library's interface.
scripts/generate-bindings.sh --check || {
  echo "the committed bindings are stale: run scripts/generate-bindings.sh" >&2
  exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
lib() { echo "$target_dir/$1/$profile/libjasper_ffi.a"; }

mkdir -p "$work/headers" "$work/ios-simulator" "$work/macos"
cp bindings/swift/JasperFFI.h "$work/headers/"
# Clang looks for `module.modulemap` in a header directory.
cp bindings/swift/JasperFFI.modulemap "$work/headers/module.modulemap"

lipo -create "$(lib "${simulators[0]}")" "$(lib "${simulators[1]}")" -output "$work/ios-simulator/libjasper_ffi.a"
lipo -create "$(lib "${macs[0]}")" "$(lib "${macs[1]}")" -output "$work/macos/libjasper_ffi.a"

rm -rf ios/JasperFFI.xcframework
xcodebuild -create-xcframework \
  -library "$(lib "$device")" -headers "$work/headers" \
  -library "$work/ios-simulator/libjasper_ffi.a" -headers "$work/headers" \
  -library "$work/macos/libjasper_ffi.a" -headers "$work/headers" \
  -output ios/JasperFFI.xcframework

ls -l "$(lib "$device")"
echo "built ios/JasperFFI.xcframework; now: (cd ios && swift build)"
