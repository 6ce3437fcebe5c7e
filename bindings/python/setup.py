"""Builds the wheel with the native library inside: `pip install ./bindings/python` (or `pip
wheel`) runs `cargo build -p jasper-ffi` in the workspace two levels up and puts
`libjasper_ffi.so` (`.dylib`, `jasper_ffi.dll`) next to the generated `jasper.py`, which loads it
from there. The wheel is tagged for this platform only (`py3-none-<platform>`): the bindings are
plain Python over ctypes, so one wheel serves every Python 3 of that platform.

Environment:
  JASPER_FFI_LIB          a library already built: packed as it is, nothing compiled
  JASPER_CARGO_PROFILE    the cargo profile to build (default `release`; `mobile` is the
                          size-optimised one, `dev` reuses a debug build, as the tests do)
  CARGO_TARGET_DIR        as for cargo
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools before 70.1
    from wheel.bdist_wheel import bdist_wheel

HERE = pathlib.Path(__file__).resolve().parent
WORKSPACE = HERE.parent.parent
LIB_NAME = {"darwin": "libjasper_ffi.dylib", "win32": "jasper_ffi.dll"}.get(
    sys.platform, "libjasper_ffi.so"
)


def native_library() -> pathlib.Path:
    prebuilt = os.environ.get("JASPER_FFI_LIB")
    if prebuilt:
        path = pathlib.Path(prebuilt)
        if not path.is_file():
            sys.exit(f"JASPER_FFI_LIB={path} is not a file")
        return path
    if not (WORKSPACE / "ffi" / "Cargo.toml").is_file():
        sys.exit(
            f"{WORKSPACE} is not the Jasper workspace: build from a checkout "
            "(pip install ./bindings/python), or set JASPER_FFI_LIB"
        )
    profile = os.environ.get("JASPER_CARGO_PROFILE", "release")
    cargo = os.environ.get("CARGO", "cargo")
    manifest = str(WORKSPACE / "Cargo.toml")
    subprocess.run(
        [cargo, "build", "--locked", "--manifest-path", manifest, "-p", "jasper-ffi",
         "--profile", profile],
        check=True,
    )
    metadata = subprocess.run(
        [cargo, "metadata", "--format-version", "1", "--no-deps", "--manifest-path", manifest],
        check=True,
        capture_output=True,
        text=True,
    )
    target = pathlib.Path(json.loads(metadata.stdout)["target_directory"])
    return target / ("debug" if profile == "dev" else profile) / LIB_NAME


class BuildWithNativeLibrary(build_py):
    """The Python files as usual, then the native library beside them."""

    def run(self):
        super().run()
        package = pathlib.Path(self.build_lib) / "jasper"
        package.mkdir(parents=True, exist_ok=True)
        shutil.copy2(native_library(), package / LIB_NAME)


class PlatformWheel(bdist_wheel):
    """Not pure (it carries a native library), but not tied to one Python version either."""

    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):
        _, _, platform = super().get_tag()
        return "py3", "none", platform


setup(cmdclass={"build_py": BuildWithNativeLibrary, "bdist_wheel": PlatformWheel})
