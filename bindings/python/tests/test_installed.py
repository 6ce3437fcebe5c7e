"""The package as `pip install ./bindings/python` installs it, from the virtual environment the
wheel step of `cargo xtask test` makes: the native library is inside the package (no
environment variable names it), and the API's annotations reach a type checker (mypy) through
`py.typed`. The exchange tests run from the same environment against real relays."""

import os
import pathlib
import subprocess
import sys

import pytest

from conftest import INSTALLED, LIB_NAME

pytestmark = pytest.mark.skipif(
    not INSTALLED, reason="runs in the wheel's virtual environment (JASPER_TEST_INSTALLED=1)"
)


def test_the_native_library_ships_inside_the_package(jasper):
    package = pathlib.Path(jasper.__file__).parent
    assert (package / LIB_NAME).is_file()
    assert (package / "py.typed").is_file()
    assert "JASPER_FFI_LIB" not in os.environ
    # Loaded from there: the library the process mapped is the package's.
    maps = pathlib.Path("/proc/self/maps").read_text()
    assert str((package / LIB_NAME).resolve()) in maps


def mypy(tmp_path, source: str) -> subprocess.CompletedProcess:
    program = tmp_path / "program.py"
    program.write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--follow-imports=silent", "--no-incremental",
         str(program)],
        capture_output=True,
        text=True,
    )


def test_a_type_checker_sees_the_api(tmp_path):
    good = mypy(
        tmp_path,
        "import jasper\n"
        "config: jasper.EngineConfig = jasper.default_config('/tmp/data')\n"
        "timeout: int = config.relay_timeout_ms\n",
    )
    assert good.returncode == 0, good.stdout + good.stderr
    bad = mypy(
        tmp_path,
        "import jasper\n"
        "config = jasper.default_config(42)\n"
        "name: str = jasper.default_config('/tmp/data')\n",
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert 'Argument 1 to "default_config" has incompatible type "int"' in bad.stdout
    assert 'expression has type "EngineConfig", variable has type "str"' in bad.stdout
