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
read -r -a ports <<< "${JASPER_MESH_PORTS:-8080 8081 8082}"
dir="${JASPER_MESH_DIR:-$HOME/.local/share/jasper-mesh}"

cargo build --quiet -p jasper-relay -p jasper-daemon -p jasper-cli -p jasper-test --bins
mesh="$CARGO_TARGET_DIR/debug/jasper-mesh"

pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT INT TERM

# The relays (and, when coturn's `turnserver` is installed, a loopback STUN server for
# transparent mode) come from the test kit's jasper-mesh: it prints one JSON line once they
# all serve and stops them on SIGTERM or when its stdin closes, so a coprocess, whose stdin
# this script holds, cannot outlive it.
stun_flags=()
if command -v turnserver >/dev/null 2>&1; then
  stun_flags=(--stun-port $((ports[0] + 400)))
fi
mkdir -p "$dir"
coproc MESH { exec "$mesh" --dir "$dir" --ports "${ports[@]}" --sync-interval 10 \
  --server-sync-interval 60 "${stun_flags[@]}" 2>"$dir/jasper-mesh.log"; }
pids+=("$MESH_PID")
if ! read -r -t 120 announced <&"${MESH[0]}"; then
  echo "jasper-mesh did not start; see $dir/jasper-mesh.log and $dir/relay*/relay.log" >&2
  exit 1
fi
addresses=$(printf '%s' "$announced" | grep -o '"address":"[^"]*"' | cut -d'"' -f4 | tr '\n' ' ')
echo "Relays: ${addresses% }   (logs and data in $dir)"

# A demo packet: relays only check the key, base64 and the hash, so openssl stands in for a client.
key=$(openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:4096 2>/dev/null | openssl pkey -pubout -outform DER | base64 -w0)
message=$(printf 'demo %s' "$(date -u +%FT%TZ)" | base64 -w0)
hash=$(printf '%s' "$message" | sha256sum | cut -d' ' -f1)
curl -fs "http://127.0.0.1:${ports[0]}/send" \
  -d "{\"recipient\":\"$key\",\"message\":\"$message\",\"hash\":\"$hash\",\"signature\":\"c2lnbmF0dXJl\"}" >/dev/null
echo "Sent $hash to 127.0.0.1:${ports[0]}"
for _ in $(seq 50); do
  if curl -fs "http://127.0.0.1:${ports[2]}/fetch" -d "{\"hashes\":[\"$hash\"]}" | grep -q "$message"; then
    echo "Fetched it from 127.0.0.1:${ports[2]}: the mesh works."
    break
  fi
  sleep 0.1
done

# Two daemons: each its own data directory, socket and key-store entry.
jasperd="$CARGO_TARGET_DIR/debug/jasperd"
jasper="$CARGO_TARGET_DIR/debug/jasper"
relay_flags=()
for p in "${ports[@]}"; do relay_flags+=(--relay "127.0.0.1:$p"); done
# Transparent mode: host candidates on loopback, and jasper-mesh's STUN server if it has one.
webrtc_flags=(--webrtc-bind 127.0.0.1:0)
stun=$(printf '%s' "$announced" | sed -n 's/.*"stun":"\([^"]*\)".*/\1/p')
[ -z "$stun" ] || webrtc_flags+=(--stun "$stun")
for who in alice bob; do
  rm -rf "$dir/$who"
  mkdir -p "$dir/$who"
  "$jasperd" --data-dir "$dir/$who/data" --socket "$dir/$who/jasperd.sock" --key-store keyutils \
    --allow-private-relays --no-notifications "${relay_flags[@]}" "${webrtc_flags[@]}" \
    >"$dir/$who.log" 2>&1 &
  pids+=($!)
done
for who in alice bob; do
  for _ in $(seq 100); do [ -S "$dir/$who/jasperd.sock" ] && break; sleep 0.1; done
done
j() { local who=$1; shift; "$jasper" --socket "$dir/$who/jasperd.sock" "$@"; }
key_of() { j "$1" --json identity create | sed -n 's/.*"public_key": *"\([^"]*\)".*/\1/p'; }
alice_key=$(key_of alice)
bob_key=$(key_of bob)
j alice contact add "$bob_key" --name bob >/dev/null
j bob contact add "$alice_key" --name alice >/dev/null
j alice send --to bob "Hello Bob, this crossed the mesh end-to-end encrypted." >/dev/null
echo "alice sent bob a message; waiting for bob's daemon to receive it..."
for _ in $(seq 300); do
  if j bob messages --with alice | grep -q "Hello Bob"; then
    echo "bob received:"; j bob messages --with alice
    break
  fi
  sleep 0.1
done
echo "alice's RX relay: $(j alice relays rx)"
echo "alice's relays, one per key (no relay sees two of her keys):"
j alice relays anonymity | sed 's/^/  /'

echo
echo "Transparent mode (the contact and the STUN operator learn your IP address):"
j alice transparent enable bob >/dev/null 2>&1
j bob transparent enable alice >/dev/null 2>&1
for _ in $(seq 300); do
  j alice transparent status bob | grep -q connected && break
  sleep 0.1
done
j alice transparent status bob
id=$(j alice --json send --to bob "Hello again, straight over WebRTC." | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p')
for _ in $(seq 300); do
  j bob messages --with alice | grep -q "straight over WebRTC" && break
  sleep 0.1
done
j bob messages --with alice | tail -1
echo "route of that message: $(j alice routes "$id" | cut -f2)"
echo "Try: $jasper --socket $dir/bob/jasperd.sock send --to alice 'hi'"
echo "     $jasper --socket $dir/alice/jasperd.sock watch"
echo "Status: curl http://127.0.0.1:${ports[0]}/status     Stop: Ctrl-C"
wait
