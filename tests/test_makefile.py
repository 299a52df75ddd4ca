"""`make quickstart` and `make test` install only when setup.py changed since the last install."""
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("target", ["install", "install-test"])
def test_a_second_install_does_nothing_until_setup_py_changes(tmp_path, target):
    if shutil.which("make") is None:
        pytest.skip("no make")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()

    def planned() -> str:  # what make would run (-n: nothing is run)
        return subprocess.run(["make", "-n", "-C", str(ROOT), target, f"VENV={venv}"], capture_output=True,
                              text=True, check=True).stdout

    assert "pip install" in planned()  # never installed
    stamp = venv / (".installed" if target == "install" else ".installed-test")
    stamp.touch()
    assert "pip install" not in planned()
    setup_time = (ROOT / "setup.py").stat().st_mtime
    os.utime(stamp, (setup_time - 10, setup_time - 10))  # setup.py changed after the last install
    assert "pip install" in planned()
