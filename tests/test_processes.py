"""Processes: a kill -9 of a suite's main process leaves no worker (nor resource tracker) behind."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_eval_fakes import fake_suite_args

SLOW_ENV = "{obs_mode:state,step_sleep:0.02}"


def children(pid: int) -> list[int]:
    """Live (non-zombie) processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited; only its parent has not reaped it


def test_workers_exit_when_the_suite_is_killed(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    args = fake_suite_args(tmp_path / "o", "workers=2", "report.enabled=false", env_kwargs=SLOW_ENV, n=40)
    proc = subprocess.Popen([sys.executable, "-m", "realgap", *args], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while time.monotonic() < deadline and proc.poll() is None:
            workers = children(proc.pid)
            # two spawn workers plus the resource tracker, and the workers are busy (their own children: none)
            if len(workers) >= 3 and (tmp_path / "o" / "episodes.zarr").exists():
                break
            time.sleep(0.05)
        assert proc.poll() is None and len(workers) >= 3, f"suite ended or never started its workers: {workers}"
        time.sleep(1.0)  # well inside the run: the workers are rolling out groups
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(alive(p) for p in workers):
            time.sleep(0.05)
        left = [p for p in workers if alive(p)]
        assert not left, f"processes still alive 5 s after kill -9 of the suite: {left}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the session
        except ProcessLookupError:
            pass
