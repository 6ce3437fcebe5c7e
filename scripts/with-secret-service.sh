#!/usr/bin/env bash
# Runs a command next to a real, unlocked Secret Service: gnome-keyring on a private D-Bus
# session bus, with throwaway runtime and data directories, so tests never touch the
# developer's own keyring. Installs gnome-keyring, dbus, libsecret-tools and keyutils with apt
# when missing. Usage: scripts/with-secret-service.sh CMD [ARGS...]
set -euo pipefail

if [ $# -eq 0 ]; then
  echo "usage: $0 CMD [ARGS...]" >&2
  exit 2
fi

if [ -z "${JASPER_SECRET_SERVICE_INSIDE:-}" ]; then
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  missing=()
  command -v gnome-keyring-daemon >/dev/null 2>&1 || missing+=(gnome-keyring)
  { command -v dbus-run-session && command -v dbus-send; } >/dev/null 2>&1 || missing+=(dbus)
  command -v secret-tool >/dev/null 2>&1 || missing+=(libsecret-tools)
  command -v keyctl >/dev/null 2>&1 || missing+=(keyutils)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi

  scratch=$(mktemp -d "${TMPDIR:-/tmp}/jasper-secret-service.XXXXXX")
  trap 'rm -rf "$scratch"' EXIT
  mkdir -m 0700 "$scratch/runtime" "$scratch/data"
  # Not exec: the trap removes the throwaway keyring once the bus (and gnome-keyring) are gone.
  status=0
  JASPER_SECRET_SERVICE_INSIDE=1 XDG_RUNTIME_DIR="$scratch/runtime" XDG_DATA_HOME="$scratch/data" \
    dbus-run-session -- "$0" "$@" || status=$?
  exit "$status"
fi

# Inside the private bus. The password only guards this throwaway keyring; without one the
# daemon creates no login collection and refuses writes.
unset JASPER_SECRET_SERVICE_INSIDE
password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
printf '%s' "$password" | gnome-keyring-daemon --unlock --components=secrets >/dev/null

for _ in $(seq 100); do
  if dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
      org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null |
      grep -q 'boolean true'; then
    export JASPER_TEST_SECRET_SERVICE=1
    exec "$@"
  fi
  sleep 0.1
done
echo "$0: gnome-keyring did not claim org.freedesktop.secrets within 10 s" >&2
exit 1
