"""Fixtures of the Python binding tests: the generated package loaded with the built library, and
a mesh of real `jasper-relay` processes on loopback, started by the test kit's `jasper-mesh` (the
same relay fixture as the Rust tests').

Paths come from the environment (scripts/test.sh sets them), else from cargo's debug output:
  JASPER_FFI_LIB    the built cdylib (default: $CARGO_TARGET_DIR/debug/libjasper_ffi.so)
  JASPER_MESH_BIN   jasper-mesh (default: $CARGO_TARGET_DIR/debug/jasper-mesh)
  JASPER_RELAY_BIN  the relay binary jasper-mesh runs (default: the one beside jasper-mesh)
"""

import importlib
import json
import os
import pathlib
import selectors
import subprocess
import sys
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


# Set by the wheel step of `cargo xtask test`: the tests run in a fresh virtual environment
# where `pip install ./bindings/python` put the package, native library inside.
INSTALLED = os.environ.get("JASPER_TEST_INSTALLED") == "1"


@pytest.fixture(scope="session")
def jasper(tmp_path_factory):
    """The generated package as it ships: jasper.py with the native library beside it (the
    installed one under JASPER_TEST_INSTALLED=1, else the source with the built library)."""
    if INSTALLED:
        module = importlib.import_module("jasper")
        path = pathlib.Path(module.__file__).resolve()
        if PACKAGE_SRC in path.parents or pathlib.Path(sys.prefix).resolve() not in path.parents:
            pytest.fail(f"jasper was imported from {path}, not from this environment's packages")
        return module
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


class Mesh:
    """A running `jasper-mesh`: relays each peered with all the others, syncing every second; its
    JSON line says where they are. It stops them when its stdin closes, which happens on `stop()`
    or, should this process die first, with it."""

    def __init__(self, binary: pathlib.Path, dir: pathlib.Path, relays: int):
        args = [str(binary), "--relays", str(relays), "--dir", str(dir)]
        if "JASPER_RELAY_BIN" in os.environ:
            args += ["--relay-bin", os.environ["JASPER_RELAY_BIN"]]
        self.stderr_path = dir / "jasper-mesh.log"
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr
        )
        self.relays = self._announcement()["relays"]
        self.addresses = [r["address"] for r in self.relays]

    def _announcement(self) -> dict:
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout=START_TIMEOUT)
        sel.close()
        line = self.proc.stdout.readline().decode(errors="replace") if ready else ""
        try:
            return json.loads(line)
        except ValueError:
            self.stop()
            raise RuntimeError(
                f"jasper-mesh did not start (first line {line!r}):\n"
                + self.stderr_path.read_text(errors="replace")
            ) from None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                self.proc.wait()
        self.stderr.close()


@pytest.fixture(scope="module")
def relays(tmp_path_factory):
    """Three relays, each peered with the other two, syncing every second."""
    binary = _required_file("JASPER_MESH_BIN", TARGET_DIR / "debug" / "jasper-mesh")
    mesh = Mesh(binary, tmp_path_factory.mktemp("relays"), 3)
    try:
        yield mesh.addresses
    finally:
        mesh.stop()


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
