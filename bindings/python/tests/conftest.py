"""Fixtures of the Python binding tests: the generated package loaded with the built library, and
a mesh of real `jasper-relay` processes on loopback.

Paths come from the environment (scripts/test.sh sets them), else from cargo's debug output:
  JASPER_FFI_LIB    the built cdylib (default: $CARGO_TARGET_DIR/debug/libjasper_ffi.so)
  JASPER_RELAY_BIN  the relay binary (default: $CARGO_TARGET_DIR/debug/jasper-relay)
"""

import importlib
import os
import pathlib
import selectors
import socket
import subprocess
import sys
import threading
import time

import pytest

PACKAGE_SRC = pathlib.Path(__file__).resolve().parent.parent / "src" / "jasper"
TARGET_DIR = pathlib.Path(
    os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache" / "jasper" / "target")
)
LIB_NAME = {"darwin": "libjasper_ffi.dylib", "win32": "jasper_ffi.dll"}.get(
    sys.platform, "libjasper_ffi.so"
)
START_TIMEOUT = 60


def _required_file(env: str, default: pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(os.environ.get(env, default))
    if not path.is_file():
        pytest.fail(f"{path} is missing: build it first (scripts/test.sh does), or set {env}")
    return path


@pytest.fixture(scope="session")
def jasper(tmp_path_factory):
    """The generated package as it ships: jasper.py with the native library beside it."""
    lib = _required_file("JASPER_FFI_LIB", TARGET_DIR / "debug" / LIB_NAME)
    site = tmp_path_factory.mktemp("site")
    package = site / "jasper"
    package.mkdir()
    for name in ("__init__.py", "jasper.py"):
        (package / name).symlink_to(PACKAGE_SRC / name)
    (package / LIB_NAME).symlink_to(lib.resolve())
    sys.path.insert(0, str(site))
    try:
        return importlib.import_module("jasper")
    finally:
        sys.path.remove(str(site))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Relay:
    """One `jasper-relay` on loopback with the embedded store; its log is relay.log in `dir`."""

    def __init__(self, binary: pathlib.Path, dir: pathlib.Path, port: int, peers: list):
        self.address = f"127.0.0.1:{port}"
        dir.mkdir(parents=True)
        args = [
            str(binary),
            "--listen", self.address,
            "--data-dir", str(dir / "data"),
            "--allow-private-peers", "true",
            "--sync-interval", "1",
            "--server-sync-interval", "2",
        ]
        for peer in peers:
            args += ["--peer", peer]
        env = dict(os.environ, JASPER_LOG=os.environ.get("JASPER_TEST_LOG", "info"))
        self.log = open(dir / "relay.log", "wb")
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log, env=env
        )
        self._wait_listening()

    def _wait_listening(self):
        # The relay prints "listening on ..." on stdout once serving; logs go to stderr.
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout=START_TIMEOUT)
        sel.close()
        line = self.proc.stdout.readline().decode(errors="replace") if ready else ""
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(
                f"relay {self.address} did not start (first line {line!r}); see {self.log.name}"
            )
        # Keep draining stdout so the relay never blocks on a full pipe.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def relays(tmp_path_factory):
    """Three relays, each peered with the other two, syncing every second."""
    binary = _required_file("JASPER_RELAY_BIN", TARGET_DIR / "debug" / "jasper-relay")
    base = tmp_path_factory.mktemp("relays")
    ports = [free_port() for _ in range(3)]
    started = []
    try:
        for i, port in enumerate(ports):
            peers = [f"127.0.0.1:{p}" for p in ports if p != port]
            started.append(Relay(binary, base / f"relay{i}", port, peers))
        yield [r.address for r in started]
    finally:
        for relay in started:
            relay.stop()


def eventually(check, timeout: float, what: str):
    """Polls `check()` until it returns something truthy, which it returns; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
