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


def tree_digest(folder: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


def test_resume_refuses_other_policy_kwargs_and_leaves_the_store_alone(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(fake_suite_args(out, "executor=inline", "report.enabled=false", n=4, policy_kwargs="{noise:0.8}")) == 0
    before = tree_digest(out)
    capsys.readouterr()
    code = main(fake_suite_args(out, "executor=inline", "--resume", n=4, policy_kwargs="{noise:0.3}"))
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "field 'policy.kwargs.noise'" in err
    code = main(fake_suite_args(out, "suite.policy.spec=test_eval_fakes:GoalSeeker", "executor=inline", "--resume", n=4, policy_kwargs="{noise:0.8}"))
    assert code == 2 and "field 'policy.spec'" in capsys.readouterr().err
    assert tree_digest(out) == before
    # the same policy resumes (a finished suite resumes to itself)
    assert main(fake_suite_args(out, "executor=inline", "report.enabled=false", "--resume", n=4,
                                policy_kwargs="{noise:0.8}")) == 0


def test_resume_refuses_a_checkpoint_whose_files_changed(tmp_path, capsys):
    """Retraining into the same folder makes another policy: its weights' sha256 is in the fingerprint."""
    import shutil

    import realgap
    from safetensors.torch import load_file, save_file

    ckpt = tmp_path / "ckpt"
    shutil.copytree(Path(realgap.__file__).parent / "checkpoints" / "state_policy", ckpt)
    out = tmp_path / "o"
    args = ["suite", f"out={out}", f"suite.policy.spec={ckpt}", "conditions=[nominal]", "suite.seeds.n=1",
            "suite.batch_envs=1", "suite.record_frames=none", "executor=inline", "report.enabled=false"]
    assert main(args) == 0
    saved = json.loads((out / "suite.json").read_text())["fingerprint"]["policy"]
    assert saved["spec"] == str(ckpt) and len(saved["files"]["model.safetensors"]) == 64
    before = tree_digest(out)
    tensors = load_file(str(ckpt / "model.safetensors"))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] * 1.01
    save_file(tensors, str(ckpt / "model.safetensors"))
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "field 'policy.files.model.safetensors'" in err, err
    assert tree_digest(out) == before


def test_resume_of_a_missing_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "never_ran"
    assert main(fake_suite_args(out, "executor=inline", "--resume", n=2)) == 2
    err = capsys.readouterr().err
    assert "nothing to resume" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
