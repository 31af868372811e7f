"""realgap ablate: bad input, DR variants, target effects, the demo digest, and the analysis on a fake study."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from realgap.cli import main
from realgap.data.replay_buffer import ReplayBuffer
from realgap.errors import RealgapError
from realgap.evaluation import ablation, ablation_run

TINY = [  # a study small enough to run for real in a test
    "executor=inline", "ablation.axes=[lighting,sensing]", "ablation.data.overrides.n_episodes=4",
    "ablation.data.overrides.max_attempts=12", "ablation.train.overrides.steps=6", "ablation.train.overrides.val_every=3",
    "ablation.train.overrides.checkpoint_every=3", "ablation.train.overrides.warmup_steps=2",
    "ablation.eval.seeds.n=2", "ablation.eval.batch_envs=2",
    "ablation.sweep.axis=null", "ablation.sensitivity.enabled=false", "ablation.breakdown.enabled=false",
    "ablation.train_none=false", "ablation.sequential.look_every=1", "ablation.stats.n_boot=200",
    "ablation.sequential.sim_reps=50",
]


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("overrides,needle", [
    (["ablation.axes=[lighting,wind]"], "ablation.axes: unknown axis 'wind'"),
    (["ablation.base_randomization=target_lab", "ablation.axes=[placement]"], "'placement' is disabled in base randomization"),
    (["ablation.train.seeds=[0]"], "ablation.train.seeds: need >= 2"),
    (["ablation.train.seeds=[3,3]"], "ablation.train.seeds: need >= 2"),
    (["ablation.target=nominal"], "ablation.target: 'nominal' enables no axis, so it equals nominal"),
    (["ablation.stats.margin=0"], "ablation.stats.margin"),
    (["ablation.sweep.axis=gravity"], "ablation.sweep.axis: unknown axis 'gravity'"),
    (["ablation.sweep.scales=[0,-1]"], "ablation.sweep.scales"),
    (["executor=slurm"], "executor:"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, overrides, needle):
    out = tmp_path / "study"
    assert main(["ablate", f"out={out}", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_existing_output_needs_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "study"
    out.mkdir()
    (out / "something.txt").write_text("keep me")
    assert main(["ablate", f"out={out}"]) == 2
    assert "exists; pass --resume" in capsys.readouterr().err
    assert (out / "something.txt").read_text() == "keep me"
    # --resume of a folder that is not a study is refused too
    assert main(["ablate", "--resume", f"out={out}"]) == 2
    assert "not a study to resume" in capsys.readouterr().err


# ------------------------------------------------------------------------------ variants / effects
def _base():
    return ablation_run.validated(ablation_run.load_randomization("default", "t"), "t")


def _target():
    return ablation_run.validated(ablation_run.load_randomization("target_lab", "t"), "t")


def test_scale_axis_scales_one_axis_only():
    base = _base()
    x0, x2 = ablation_run.scale_axis(base, "physics", 0.0), ablation_run.scale_axis(base, "physics", 2.0)
    assert x0["axes"]["physics"]["friction"] == [1.0, 1.0]
    assert x2["axes"]["physics"]["friction"] == pytest.approx([0.4, 1.2])  # 1 + (0.7 - 1) * 2, 1 + (1.1 - 1) * 2
    assert x2["axes"]["physics"]["mass"] == pytest.approx([0.8, 1.2])
    assert x2["axes"]["lighting"] == base["axes"]["lighting"] and x2["scale"] == base["scale"]
    assert ablation_run.scale_axis(base, "sensing", 0.5)["axes"]["sensing"]["obs_noise_std"] == pytest.approx(
        0.5 * base["axes"]["sensing"]["obs_noise_std"])


def test_target_effects_split_and_coverage():
    split = {"sensing": {"latency": ["latency_steps"], "sensor_noise": ["obs_noise_std", "action_noise_std"]},
             "camera": {"camera_calibration": ["pos_bias", "rot_bias_deg"], "camera_range": ["pos_offset", "rot_angle", "fovy_offset"]}}
    target, base = _target(), _base()
    effects = ablation_run.target_effects(target, split)
    assert set(effects) == {"lighting", "appearance", "camera_calibration", "camera_range", "preplacement", "physics",
                            "latency", "sensor_noise"}  # placement is off in target_lab
    lat = effects["latency"]
    assert ablation_run.enabled_axes(lat["alone"]) == ["sensing"]
    assert lat["alone"]["axes"]["sensing"]["latency_steps"] == [1, 1]
    assert lat["alone"]["axes"]["sensing"]["obs_noise_std"] == 0.0  # the other sensing effect is at nominal
    assert lat["without"]["axes"]["sensing"]["latency_steps"] == [0, 0]
    assert lat["without"]["axes"]["sensing"]["obs_noise_std"] == target["axes"]["sensing"]["obs_noise_std"]
    assert not effects["physics"]["without"]["axes"]["physics"]["enabled"]
    cov = {name: ablation.coverage(base, e)["overall"] for name, e in effects.items()}
    assert cov["latency"] == "absent"               # training never delays actions
    assert cov["camera_calibration"] == "absent"    # nor biases the camera
    assert cov["physics"] == "beyond"               # friction 0.65 < training 0.7, mass 1.15 > 1.1
    assert cov["sensor_noise"] == "beyond"          # 2x the training std
    with pytest.raises(RealgapError, match="unknown parameter 'latency'"):
        ablation_run.target_effects(target, {"sensing": {"x": ["latency"]}})


# ------------------------------------------------------------------------------ demo digest
def _store(path: Path, proprio: np.ndarray, dr_light: float, noise: float = 0.002) -> Path:
    buf = ReplayBuffer.create(path)
    for i in range(2):
        steps = {"proprio": proprio[i], "action": np.zeros((len(proprio[i]), 4), np.float32)}
        info = {"seed": i, "instruction": "place the red block in the yellow rack",
                "dr_params": {"lighting": {"diffuse": dr_light}, "sensing": {"obs_noise_std": noise}}}
        buf.append_episode(steps, info)
    return path


def test_digest_ignores_unobserved_dr_params_but_not_data(tmp_path):
    proprio = np.random.default_rng(0).random((2, 5, 8)).astype(np.float32)
    a = ablation.training_data_digest(_store(tmp_path / "a.zarr", proprio, 0.1))
    b = ablation.training_data_digest(_store(tmp_path / "b.zarr", proprio, -0.3))  # only lighting params differ
    assert a == b
    changed = proprio.copy()
    changed[1, 3, 0] += 1e-6
    assert ablation.training_data_digest(_store(tmp_path / "c.zarr", changed, 0.1)) != a
    # the recorded observation-noise std feeds the normalizer, so it is part of the digest
    assert ablation.training_data_digest(_store(tmp_path / "d.zarr", proprio, 0.1, noise=0.004)) != a


# ------------------------------------------------------------------------------ analysis on a fake study
def _suite_store(folder: Path, outcomes: dict[str, list[int]]) -> None:
    buf = ReplayBuffer.create(folder / "episodes.zarr")
    batch = []
    for cond, succ in outcomes.items():
        for j, s in enumerate(succ):
            batch.append(({"action": np.zeros((1, 4), np.float32)},
                          {"condition": cond, "seed": 100 + j, "success": bool(s), "termination_reason": "x", "length": 1}))
    buf.append_episodes(batch)


def _fake_study(tmp_path: Path) -> Path:
    """pi_all and pi_-lighting share checkpoints; pi_-sensing is 40 points worse on the target."""
    out = tmp_path / "study"
    cfg = {"ablation": {"name": "fake", "target": "target_lab", "base_randomization": "default",
                        "axes": ["lighting", "sensing"], "train": {"seeds": [0, 1]}, "eval": {"seeds": {"n": 50}},
                        "stats": {"margin": 0.05, "n_boot": 1000, "bootstrap_seed": 0},
                        "sequential": {"look_every": 10, "alpha": 0.05, "sim_reps": 100, "sim_rates": [0.5]},
                        "sweep": {}, "breakdown": {}}}
    rng = np.random.default_rng(5)
    jobs, variants = {}, {}
    for variant, p_target, key in (("all", 0.8, "A"), ("-lighting", 0.8, "A"), ("-sensing", 0.4, "S")):
        variants[variant] = {"collect": f"collect:{variant}", "role": "x"}
        jobs[f"collect:{variant}"] = {"kind": "collect", "status": "done", "result": {"data_digest": key}, "meta": {}}
        for seed in (0, 1):
            folder = out / "jobs" / f"eval-{key}{seed}"
            if not folder.exists():
                r = np.random.default_rng(seed)
                target = (r.random(50) < p_target).astype(int) if key == "A" else np.r_[np.ones(20), np.zeros(30)].astype(int)
                _suite_store(folder, {"nominal": list(rng.integers(0, 2, 50)), "train_dr": list(rng.integers(0, 2, 50)),
                                      "target": list(target)})
            alias = None if variant != "-lighting" else f"train:all:{seed}"
            jobs[f"train:{variant}:{seed}"] = {"kind": "train", "status": "done", "key": f"{key}{seed}", "alias_of": alias,
                                               "folder": str(out / "jobs" / f"train-{key}{seed}"), "meta": {}, "result": {"wall_s": 1.0}}
            jobs[f"eval:{variant}:{seed}"] = {"kind": "eval", "status": "done", "folder": str(folder), "alias_of": alias,
                                              "meta": {"variant": variant, "seed": seed}, "result": {"report": None, "wall_s": 2.0}}
    (out / "study.json").write_text(json.dumps({"config": cfg}))
    (out / "manifest.json").write_text(json.dumps({"variants": variants, "jobs": jobs}))
    return out


def test_analysis_of_a_fake_study(tmp_path):
    out = _fake_study(tmp_path)
    r = ablation.analyze(out)
    by_axis = {e["axis"]: e for e in r["axes"]}
    light = by_axis["lighting"]
    assert light["demos_identical"] and light["same_checkpoints"]
    assert light["effect"]["estimate"] == 0.0 and light["effect"]["ci95"] == {"estimate": 0.0, "low": 0.0, "high": 0.0}
    assert light["verdict"] == "placebo"
    sens = by_axis["sensing"]
    target_all = np.mean([ablation.suite_outcomes(out / "jobs" / f"eval-A{s}")["target"][100 + j] for s in (0, 1) for j in range(50)])
    assert sens["effect"]["estimate"] == pytest.approx(target_all - 0.4)
    assert sens["verdict"] == "helpful" and not sens["demos_identical"]
    assert [e["axis"] for e in r["axes"]] == ["sensing", "lighting"]  # ranked by effect
    # one point per checkpoint: the shared -lighting runs are not counted twice
    assert len(r["sim_vs_target"]["policies"]) == 4
    seq = r["sequential"]
    assert seq["rollouts_fixed"] == 2 * 2 * 2 * 50
    assert {c["comparison"]: c["sequential"]["decision"] for c in seq["comparisons"]} == {
        "all vs -lighting": "equivalent", "all vs -sensing": "better"}
    assert r["job_costs"]["train"]["n"] == 4  # aliases ran nothing
    index = ablation.build_report(out)
    html = index.read_text()
    assert "placebo" in html and "helpful" in html and "Sequential" in html
    saved = json.loads((out / "report" / "ablation.json").read_text())
    assert saved["axes"][0]["axis"] == "sensing"


# ------------------------------------------------------------------------------ a real tiny study
@pytest.mark.slow  # ~15 s on an idle 2-core box, ~55 s when it is shared
def test_tiny_study_shares_the_checkpoint_of_an_unobserved_axis(tmp_path):
    out = tmp_path / "study"
    assert main(["ablate", f"out={out}", *TINY]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    jobs = manifest["jobs"]
    # lighting never reaches state observations: bit-identical demos (by digest), one checkpoint, effect exactly 0
    digests = {jid: j["result"]["data_digest"] for jid, j in jobs.items() if j["kind"] == "collect"}
    assert len(digests) == 3 and len(set(digests.values())) == 2
    for seed in (0, 1):
        assert jobs[f"train:-lighting:{seed}"]["alias_of"] == f"train:all:{seed}"
        assert jobs[f"train:-sensing:{seed}"]["alias_of"] is None
    assert len(list((out / "jobs").glob("train-*"))) == 4
    r = json.loads((out / "report" / "ablation.json").read_text())
    light = next(e for e in r["axes"] if e["axis"] == "lighting")
    assert light["verdict"] == "placebo" and light["effect"]["ci95"]["low"] == light["effect"]["ci95"]["high"] == 0.0
    # a finished study resumes to a no-op
    stamp = {p: p.stat().st_mtime_ns for p in (out / "jobs").rglob("DONE.json")}
    assert main(["ablate", "--resume", f"out={out}", *TINY]) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "jobs").rglob("DONE.json")} == stamp
    # a different study in the same folder is refused on --resume
    assert main(["ablate", "--resume", f"out={out}", *TINY, "ablation.stats.margin=0.1"]) == 2


@pytest.mark.slow
def test_kill_9_then_resume_does_not_repeat_a_finished_training(tmp_path):
    out = tmp_path / "study"
    args = [sys.executable, "-m", "realgap.cli", "ablate", f"out={out}",
            *[a for a in TINY if not a.startswith("executor")], "executor=local", "workers=1",
            "ablation.train.overrides.steps=40", "ablation.train.overrides.checkpoint_every=10",
            "ablation.eval.seeds.n=6"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    finished = []
    while time.time() < deadline and proc.poll() is None:
        finished = sorted((out / "jobs").glob("train-*/DONE.json")) if (out / "jobs").exists() else []
        if finished:
            break
        time.sleep(0.5)
    assert finished, "no training finished before the deadline"
    os.killpg(proc.pid, signal.SIGKILL)  # the parent and its pool worker, mid-study
    proc.wait()
    manifest = json.loads((out / "manifest.json").read_text())
    assert any(j["status"] != "done" for j in manifest["jobs"].values())  # really interrupted
    done_train = finished[0].parent
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in done_train.iterdir() if p.is_file()}
    log = out / "logs" / f"{done_train.name}.log"
    starts_before = log.read_text().count("=== train")
    resumed = subprocess.run(args[:4] + ["--resume"] + args[4:], capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in done_train.iterdir() if p.is_file()}
    assert after == before  # the finished training was not rerun: same files, untouched
    assert log.read_text().count("=== train") == starts_before
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(j["status"] == "done" for j in manifest["jobs"].values())
    assert (out / "report" / "index.html").exists()


def test_a_second_study_process_on_the_same_output_is_refused(tmp_path, capsys):
    out = tmp_path / "study"
    held = ablation_run._lock(out)  # as a running `realgap ablate` holds it
    try:
        assert main(["ablate", f"out={out}"]) == 2
        assert "another `realgap ablate` is running" in capsys.readouterr().err
        assert not out.exists()
    finally:
        held.close()
