"""The local executor's persistent worker pool: reused across suites without changing an episode, a
checkpoint retrained in place is reloaded, a broken or abandoned pool is replaced, fork only where safe."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from realgap.evaluation import executors
from realgap.evaluation.suite import run_suite
from safetensors.torch import load_file, save_file
from test_eval_fakes import assert_same_episodes, episodes_by_key, fake_suite_args

import realgap
from realgap.cli import compose, main
from realgap.errors import RealgapError

SHIPPED = Path(realgap.__file__).parent / "checkpoints" / "state_policy"


def checkpoint_suite(out: Path, ckpt: Path, *extra: str) -> list[str]:
    return ["suite", f"out={out}", f"suite.policy.spec={ckpt}", "conditions=[nominal]", "suite.seeds.n=2",
            "suite.batch_envs=1", "suite.record_frames=none", "suite.env.kwargs.max_episode_steps=12",
            "report.enabled=false", "workers=2", *extra]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_reused_pool_reloads_a_checkpoint_retrained_in_place(tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(SHIPPED, ckpt)
    executors.shutdown_pool()

    def run(name):
        assert main(checkpoint_suite(tmp_path / name, ckpt)) == 0
        return episodes_by_key(tmp_path / name), executors._POOL.pids()

    before, pids = run("before")
    again, pids_again = run("again")
    assert pids_again == pids and len(pids) == 2  # the same workers ran the second suite
    assert_same_episodes(before, again)

    weights = load_file(str(ckpt / "model.safetensors"))  # "retrain" into the same folder
    save_file({k: v * 0.9 if v.is_floating_point() else v for k, v in weights.items()}, str(ckpt / "model.safetensors"))
    after, pids_after = run("after")
    assert pids_after == pids  # reused pool ...
    executors.shutdown_pool()
    fresh, pids_fresh = run("fresh")
    assert not set(pids_fresh) & set(pids)
    assert_same_episodes(after, fresh)  # ... yet it ran the new weights, as a fresh pool does
    changed = [k for k in before if not np.array_equal(before[k][1]["action"], after[k][1]["action"])]
    assert changed, "the perturbed checkpoint acted exactly like the original: the test proves nothing"


def test_a_broken_pool_is_replaced(tmp_path):
    def args(out):
        return fake_suite_args(out, "workers=2", "report.enabled=false", n=8)

    assert main(args(tmp_path / "one")) == 0
    pool = executors._POOL
    os.kill(pool.pids()[0], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not pool.broken and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.broken
    assert main(args(tmp_path / "two")) == 0
    assert executors._POOL is not pool and not executors._POOL.broken
    assert_same_episodes(episodes_by_key(tmp_path / "one"), episodes_by_key(tmp_path / "two"))


def test_a_suite_that_stops_early_shuts_its_pool_down(tmp_path):
    with pytest.raises(RealgapError, match="success_key"):
        run_suite(compose("suite", fake_suite_args(tmp_path / "o", "workers=2", "suite.success_key=never_set")[1:]),
                  progress=False)
    assert executors._POOL is None


SCRIPT = """
import json, os, sys
from realgap.evaluation import executors as ex
from realgap.cli import compose, main
fresh = ex.start_method()
import realgap.envs as envs
env = envs.make("realgap/PlaceInReceptacle-v0", obs_mode="state+image")
env.reset(seed=0)  # this process renders: a forked worker could not any more
after_render = ex.start_method()
# every episode times out, so each worker renders its failures' frames
rc = main(["suite", f"out={sys.argv[1]}", "conditions=[nominal]", "suite.seeds.n=2", "suite.batch_envs=1",
           "suite.record_frames=failures", "suite.env.kwargs.max_episode_steps=3", "report.enabled=false", "workers=2"])
print(json.dumps({"fresh": fresh, "after_render": after_render, "used": ex._POOL.method, "rc": rc,
                  "pids": ex._POOL.pids()}))
"""


def test_fork_only_before_this_process_renders_and_the_pool_ends_with_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "REALGAP_START_METHOD"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), str(tmp_path / "o")], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (got["fresh"], got["after_render"], got["used"], got["rc"]) == ("fork", "forkserver", "forkserver", 0)
    store = episodes_by_key(tmp_path / "o")
    assert all(frames["image_front"].any() for _, frames in store.values())  # the workers rendered
    assert not [p for p in got["pids"] if alive(p)]  # shut down at exit
