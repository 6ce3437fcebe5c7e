#!/usr/bin/env bash
# Starts a working Jasper relay mesh on this machine: three relays on loopback, each peered
# with the other two, with the embedded store. Sends one packet to the first relay and
# fetches it from the third to show the mesh moving it; then starts two daemons (alice and
# bob, keys in the kernel keyring) that exchange an end-to-end encrypted message through the
# mesh, each sending through a different relay than it receives on; then both enable
# transparent mode and a second message goes straight over a WebRTC data channel (with a
# loopback STUN server when coturn's `turnserver` is installed). Runs until Ctrl-C.
#
#   scripts/mesh.sh                 ports 8080 8081 8082, data in ~/.local/share/jasper-mesh
#   JASPER_MESH_PORTS="9000 9001 9002" JASPER_MESH_DIR=/tmp/mesh scripts/mesh.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/jasper/target}"
# The demo itself is `cargo xtask mesh` (xtask/src/mesh.rs).
exec cargo xtask mesh
