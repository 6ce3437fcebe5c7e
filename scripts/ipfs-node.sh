#!/usr/bin/env bash
# A real IPFS node on loopback for the attachment tests: js-ipfs 0.66.1 (npm `ipfs`), which serves
# the Kubo-compatible RPC API (/api/v0/add, /api/v0/cat) and a gateway, fully offline. No Kubo
# binary can be downloaded here (see /work/shared/docs/platform-notes.md).
#   scripts/ipfs-node.sh start   installs js-ipfs once into ~/.cache/jasper/jsipfs, starts a node
#                                with a fresh repo, waits for "Daemon is ready" and prints
#                                `export JASPER_TEST_IPFS_API=... JASPER_TEST_IPFS_GATEWAY=...`
#   scripts/ipfs-node.sh stop    stops the node started by `start` and removes its repo
#   scripts/ipfs-node.sh install only installs
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cache="${JASPER_JSIPFS_DIR:-$HOME/.cache/jasper/jsipfs}"
run="${JASPER_IPFS_RUN_DIR:-${TMPDIR:-/tmp}/jasper-ipfs-$(id -u)}"

install() {
  # scripts/jsipfs/ holds the verified tree: package.json (with an overrides pin that keeps one
  # multiaddr library version; two get mixed otherwise), its lock file, and a polyfill of
  # Promise.withResolvers (a newer dependency calls it; Node 20 lacks it).
  local src="$repo/scripts/jsipfs"
  mkdir -p "$cache"
  cp "$src/polyfill.cjs" "$cache/polyfill.cjs"
  if [ -x "$cache/node_modules/.bin/jsipfs" ] && cmp -s "$src/package.json" "$cache/package.json" \
    && cmp -s "$src/package-lock.json" "$cache/.installed-lock.json"; then
    return
  fi
  cp "$src/package.json" "$src/package-lock.json" "$cache/"
  command -v npm >/dev/null 2>&1 || { echo "npm not found: install Node.js 20+" >&2; exit 1; }
  echo "== installing js-ipfs 0.66.1 into $cache (first time only, 2-4 minutes)" >&2
  # `npm ci` rejects js-ipfs's lock file (a git-tarball optional dependency); install works
  # and follows the lock.
  (cd "$cache" && npm install --no-audit --no-fund --loglevel=error >&2)
  cp "$src/package-lock.json" "$cache/.installed-lock.json"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
  install
  if [ -f "$run/pid" ] && kill -0 "$(cat "$run/pid")" 2>/dev/null; then
    cat "$run/env"
    return
  fi
  rm -rf "$run"
  mkdir -p "$run/repo"
  api=$(free_port)
  gw=$(free_port)
  rpc=$(free_port)
  cat >"$run/config.json" <<EOF
{
  "Addresses": {
    "API": "/ip4/127.0.0.1/tcp/$api",
    "Gateway": "/ip4/127.0.0.1/tcp/$gw",
    "RPC": "/ip4/127.0.0.1/tcp/$rpc",
    "Swarm": ["/ip4/127.0.0.1/tcp/0"],
    "Announce": [],
    "NoAnnounce": [],
    "Delegates": []
  },
  "Bootstrap": [],
  "Discovery": { "MDNS": { "Enabled": false }, "webRTCStar": { "Enabled": false } }
}
EOF
  IPFS_PATH="$run/repo" NODE_OPTIONS="--require $cache/polyfill.cjs" \
    setsid "$cache/node_modules/.bin/jsipfs" daemon --offline --enable-preload=false \
    --init-profile test --init-config "$run/config.json" >"$run/log" 2>&1 &
  echo $! >"$run/pid"
  for _ in $(seq 1 600); do
    if grep -q "Daemon is ready" "$run/log"; then
      printf 'export JASPER_TEST_IPFS_API=http://127.0.0.1:%s\nexport JASPER_TEST_IPFS_GATEWAY=http://127.0.0.1:%s\n' \
        "$api" "$gw" >"$run/env"
      cat "$run/env"
      return
    fi
    if ! kill -0 "$(cat "$run/pid")" 2>/dev/null; then
      echo "js-ipfs exited before it was ready:" >&2
      cat "$run/log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "js-ipfs not ready after 60 s; log in $run/log" >&2
  stop
  exit 1
}

stop() {
  if [ -f "$run/pid" ]; then
    pid=$(cat "$run/pid")
    # setsid made it a process-group leader: stop the group (node and any children).
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 -- "-$pid" 2>/dev/null || true
  fi
  rm -rf "$run"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  install) install ;;
  *) echo "usage: $0 start|stop|install" >&2; exit 2 ;;
esac
