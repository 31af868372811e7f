"""Kill -9 a running suite for real, resume it, and get exactly the uninterrupted run's episodes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_eval_fakes import assert_same_episodes, episodes_by_key, fake_suite_args

from realgap.cli import main

SLOW_ENV = "{obs_mode:state,step_sleep:0.01}"
TOTAL = 36  # 3 conditions x 12 seeds


def committed(out: Path) -> int:
    try:
        return json.loads((out / "episodes.zarr" / "zarr.json").read_text())["attributes"]["n_episodes"]
    except (OSError, ValueError, KeyError):
        return 0


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    args = fake_suite_args(killed, "workers=2", "report.enabled=false", env_kwargs=SLOW_ENV)
    proc = subprocess.Popen([sys.executable, "-m", "realgap", *args], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while committed(killed) < 6 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, f"the suite ended (code {proc.returncode}) before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)  # the suite's main process, mid-run
        proc.wait(timeout=10)
    finally:
        try:  # its orphaned workers, if any are left
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == -signal.SIGKILL
    n_before = committed(killed)
    assert 6 <= n_before < TOTAL, f"kill landed at {n_before} episodes"

    assert main(fake_suite_args(killed, "executor=inline", "report.enabled=false", "--resume", env_kwargs=SLOW_ENV)) == 0
    reference = tmp_path / "reference"
    assert main(fake_suite_args(reference, "executor=inline", "report.enabled=false", env_kwargs=SLOW_ENV)) == 0

    resumed = episodes_by_key(killed)  # raises on a duplicated episode
    assert len(resumed) == TOTAL
    assert_same_episodes(resumed, episodes_by_key(reference))
