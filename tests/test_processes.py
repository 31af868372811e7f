"""Processes: a kill -9 of a suite's main process leaves no worker (nor forkserver, nor resource tracker)
behind, whichever way the workers were started (fork, forkserver, spawn)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_eval_fakes import fake_suite_args

SLOW_ENV = "{obs_mode:state,step_sleep:0.02}"


def session_processes(sid: int) -> list[int]:
    """Live processes of session ``sid`` other than its leader: the suite's workers, forkserver, tracker."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == sid:
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited; only its parent has not reaped it


# processes besides the suite once its 2 workers run: fork: the workers; forkserver: + the forkserver and
# the resource tracker; spawn: + the resource tracker
STARTED = {"fork": 2, "forkserver": 4, "spawn": 3}


@pytest.mark.parametrize("method", list(STARTED))
def test_workers_exit_when_the_suite_is_killed(tmp_path, method):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
           "REALGAP_START_METHOD": method}
    args = fake_suite_args(tmp_path / "o", "workers=2", "report.enabled=false", env_kwargs=SLOW_ENV, n=40)
    proc = subprocess.Popen([sys.executable, "-m", "realgap", *args], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        started: list[int] = []
        while time.monotonic() < deadline and proc.poll() is None:
            started = session_processes(proc.pid)
            if len(started) >= STARTED[method] and (tmp_path / "o" / "episodes.zarr").exists():
                break
            time.sleep(0.05)
        assert proc.poll() is None and len(started) >= STARTED[method], f"suite ended or never started: {started}"
        time.sleep(1.0)  # well inside the run: the workers are rolling out groups
        started = session_processes(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(alive(p) for p in started):
            time.sleep(0.05)
        left = [p for p in started if alive(p)]
        assert not left, f"processes still alive 5 s after kill -9 of the suite: {left}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the session
        except ProcessLookupError:
            pass
