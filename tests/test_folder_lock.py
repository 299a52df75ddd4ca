"""One writer per folder, with real processes: a second run is refused naming the holder, a killed
holder's folder is taken over, and the CLI prints config errors as one line but bugs with a traceback."""
import os
import pathlib
import signal
import socket
import subprocess
import sys

import pytest

from w2s import folder_lock
from w2s.cli import main
from w2s.config import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[1]
HOLD = "import sys, time; from w2s import folder_lock\nwith folder_lock.hold(sys.argv[1]):\n" \
       "    print('held', flush=True); time.sleep(300)"


@pytest.fixture
def holder():
    """Starts a process holding a folder (until killed); kills it at the end."""
    procs = []

    def start(folder: pathlib.Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        procs.append(proc)
        assert proc.stdout.readline() == "held\n"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_second_writer_is_refused_naming_the_holder_until_it_dies(tmp_path, holder):
    folder = tmp_path / "seed_0"
    first = holder(folder)
    where = f"process {first.pid} on {socket.gethostname()}"
    with pytest.raises(ConfigError, match=f"{folder} is being written by {where}; wait for that run to end"):
        with folder_lock.hold(folder):
            pass
    first.send_signal(signal.SIGKILL)  # no clean-up runs: the kernel drops its lock
    first.wait()
    with folder_lock.hold(folder), folder_lock.hold(folder):  # nested holds in one process share the lock
        assert (folder / folder_lock.LOCK_FILE).read_text() == f"process {os.getpid()} on {socket.gethostname()}\n"
    holder(folder)  # released when the outer hold ended


def test_w2s_run_on_a_held_run_folder_is_one_clear_line(tmp_path, holder, capsys):
    first = holder(tmp_path / "out" / "seed_0")
    code = main(["run", str(ROOT / "experiments" / "quickstart.py"), "--config.seeds=0,",
                 f"--config.output_dir={tmp_path / 'out'}", f"--config.checkpoint_dir={tmp_path / 'ck'}"])
    err = capsys.readouterr().err
    assert code == 2 and f"seed_0 is being written by process {first.pid}" in err and "Traceback" not in err, err
    assert not (tmp_path / "out" / "seed_0" / "config.json").exists()  # it wrote nothing there


def test_cli_shows_a_bug_with_its_traceback_and_a_config_error_as_one_line(capsys):
    def bug(args, rest):
        return {}["a key a new loss forgot"]

    with pytest.raises(KeyError):
        main(["tasks"], entry=bug)

    def bad_config(args, rest):
        raise ConfigError("config.x: no such thing.")

    assert main(["tasks"], entry=bad_config) == 2
    assert capsys.readouterr().err == "w2s: error: config.x: no such thing.\n"
