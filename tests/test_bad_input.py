"""The bad-input corpus: every entry ends with ONE line naming the right field or file, exit code 2,
and nothing written (no output folder, no change to an existing one).

Each row: an id, the CLI arguments (a function of the test's paths), and the text the message must
contain. The CLI runs in-process (``realgap.cli.main``) with the working directory in a temporary
folder, so a default output path (``outputs/...``) that got created would be seen too.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from test_eval_fakes import fake_suite_args

from realgap.cli import main


def raising_factory(**kwargs):
    """A user's `module:factory` that fails while building its policy."""
    raise RuntimeError("cannot find my weights")


def fake(p, *extra, **kw):
    """`realgap suite` on the fake env into the fresh folder p['new']."""
    return fake_suite_args(p["new"], "executor=inline", *extra, **kw)


def real(p, *extra):
    """`realgap suite` on realgap's env (one seed) into the fresh folder p['new']."""
    return ["suite", f"out={p['new']}", "conditions=[nominal]", "suite.seeds.n=1", "executor=inline", *extra]


CASES = [
    # ----------------------------------------------------------------- types and unknown keys (cli)
    ("train-steps-abc", lambda p: ["train", "train.steps=abc", f"out_dir={p['new']}"], "train.steps"),
    ("train-lr-text", lambda p: ["train", "train.lr=fast", f"out_dir={p['new']}"], "train.lr"),
    ("train-unknown-policy-key", lambda p: ["train", "+policy.bogus=1", f"out_dir={p['new']}"], "policy.bogus"),
    ("collect-n-abc", lambda p: ["collect", "data.n_episodes=abc", f"data.path={p['new']}"], "data.n_episodes"),
    ("expert-n-abc", lambda p: ["expert", "n_episodes=abc"], "n_episodes"),
    ("expert-n-zero", lambda p: ["expert", "n_episodes=0"], "n_episodes"),
    ("ablate-unknown-train-override", lambda p: ["ablate", "ablation=quick", "+ablation.train.overrides.bogus=3",
                                                 f"out={p['new']}"], "ablation.train.overrides.bogus"),
    ("report-bootstrap-abc", lambda p: ["report", f"out={p['done']}", "bootstrap_n=abc"], "bootstrap_n"),
    ("report-bootstrap-zero", lambda p: ["report", f"out={p['done']}", "bootstrap_n=0"], "bootstrap_n"),
    ("report-unknown-key", lambda p: ["report", f"out={p['done']}", "+bogus=1"], "bogus"),
    ("report-missing-store", lambda p: ["report", f"out={p['new']}"], "episodes.zarr"),
    # policy_kwargs is the loader's mapping: its keys reach the loader, which names a wrong one
    ("grounding-unknown-policy-kwarg", lambda p: ["grounding", "policy=checkpoints/image_policy_small", "grounding=image",
                                                  "+policy_kwargs.bogus=1", f"out={p['new']}"], "bogus"),
    ("compare-missing-suite", lambda p: ["compare", f"a={p['new']}", f"b={p['done']}"], "suite.json"),
    ("suite-unknown-key", lambda p: fake(p, "+suite.bogus=1"), "suite.bogus"),
    ("suite-unknown-top-key", lambda p: fake(p, "+colour=red"), "colour"),
    ("suite-seeds-abc", lambda p: fake(p, "suite.seeds.n=abc"), "suite.seeds.n"),
    ("suite-seeds-null", lambda p: fake(p, "suite.seeds.n=null"), "suite.seeds.n"),
    ("suite-seeds-mapping", lambda p: fake(p, "suite.seeds={start:0,n:two}"), "suite.seeds.n"),
    ("suite-record-chunks-text", lambda p: fake(p, "suite.record_chunks=maybe"), "suite.record_chunks"),
    # report options are checked before the first rollout, even where the report would not use them
    ("suite-videos-abc", lambda p: fake(p, "report.videos_per_condition=abc"), "report.videos_per_condition"),
    ("suite-videos-negative", lambda p: fake(p, "report.videos_per_condition=-1"), "report.videos_per_condition"),
    ("suite-fps-zero", lambda p: fake(p, "report.fps=0"), "report.fps"),
    ("suite-bootstrap-abc-one-condition", lambda p: fake(p, "conditions=[nominal]", "report.bootstrap_n=abc"),
     "report.bootstrap_n"),
    ("suite-bootstrap-zero-one-condition", lambda p: fake(p, "conditions=[nominal]", "report.bootstrap_n=0"),
     "report.bootstrap_n"),
    ("suite-unknown-report-key", lambda p: fake(p, "+report.colour=red"), "report.colour"),
    # ----------------------------------------------------------------- suite plan
    ("suite-unknown-condition", lambda p: fake(p, "conditions=[nominal,foo]"), "conditions"),
    ("suite-duplicate-condition", lambda p: fake(p, "conditions=[nominal,nominal]"), "conditions"),
    ("suite-batch-zero", lambda p: fake(p, "suite.batch_envs=0"), "suite.batch_envs"),
    ("suite-frames-some", lambda p: fake(p, "suite.record_frames=some"), "suite.record_frames"),
    ("suite-executor", lambda p: fake(p, "executor=slurm"), "executor"),
    ("suite-workers-zero", lambda p: fake(p, "workers=0"), "workers"),
    ("suite-workers-abc", lambda p: fake(p, "workers=abc"), "workers"),
    ("suite-env-id-unknown", lambda p: real(p, "suite.env.id=realgap/Nope-v0"), "suite.env.id"),
    ("suite-env-id-no-module", lambda p: real(p, "suite.env.id=no_such_module:Env-v0"), "suite.env.id"),
    ("suite-condition-key", lambda p: real(p, "+suite.conditions.nominal.colour=red"), "suite.conditions.nominal"),
    ("suite-condition-rand-name", lambda p: real(p, "suite.conditions.nominal.randomization=nope"),
     "suite.conditions.nominal.randomization"),
    ("suite-only-unknown-axis", lambda p: real(p, "+suite.conditions.nominal.only=wind"), "suite.conditions.nominal.only"),
    ("suite-scale-negative", lambda p: real(p, "conditions=[physics]", "suite.conditions.physics.scale=-1"),
     "suite.conditions.physics.scale"),
    ("suite-scale-breaks-enabled-axis", lambda p: real(p, "conditions=[physics]", "suite.conditions.physics.scale=50"),
     "physics.friction"),
    ("suite-dr-min-above-max", lambda p: real(
        p, "+suite.conditions.nominal={randomization:{axes:{physics:{enabled:true,friction:[1.2,0.8]}}}}"),
     "randomization.axes.physics.friction"),
    ("suite-dr-unknown-axis", lambda p: real(p, "+suite.conditions.nominal={randomization:{axes:{wind:{}}}}"),
     "randomization.axes.wind"),
    # ----------------------------------------------------------------- policies
    ("suite-policy-no-module", lambda p: fake(p, "suite.policy.spec=no_such_module:factory"), "suite.policy.spec"),
    ("suite-policy-not-a-spec", lambda p: fake(p, "suite.policy.spec=nowhere"), "suite.policy.spec"),
    ("suite-factory-raises", lambda p: fake(p, "suite.policy.spec=test_bad_input:raising_factory"), "suite.policy.spec"),
    ("suite-policy-kwargs-unknown", lambda p: fake(p, policy_kwargs="{colour:red}"), "suite.policy.kwargs"),
    ("suite-policy-wrong-shape", lambda p: fake(p, "suite.policy.spec=test_eval_fakes:make_wrong_shape_policy"),
     "suite.policy.spec"),
    ("suite-checkpoint-json-action-7", lambda p: real(p, f"suite.policy.spec={p['ckpt7']}"), "policy.json"),
    # ----------------------------------------------------------------- outputs
    ("suite-resume-missing-folder", lambda p: fake(p, "--resume"), "out"),
    ("suite-resume-and-overwrite", lambda p: fake(p, "--resume", "--overwrite"), "--resume and --overwrite"),
    ("suite-existing-output", lambda p: fake_suite_args(p["done"], "executor=inline", n=4), "out"),
    ("suite-resume-other-seeds", lambda p: fake_suite_args(p["done"], "executor=inline", "--resume", n=5), "seeds"),
    ("collect-resume-missing", lambda p: ["collect", f"data.path={p['new']}", "--resume"], "nothing to resume"),
    ("train-no-demos", lambda p: ["train", f"data.path={p['new']}/d.zarr", f"out_dir={p['new']}"], "data.path"),
    ("verify-missing", lambda p: ["verify", f"out={p['new']}"], "out"),
    ("verify-resume-flag", lambda p: ["verify", f"out={p['done']}", "--resume"], "verify"),
]


def tree(folder: Path) -> dict[str, str]:
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()[:16]
            for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """A finished 4-seed fake suite (for report/resume rows) and a checkpoint whose json says action [7]."""
    import realgap

    root = tmp_path_factory.mktemp("bad_input")
    done = root / "done"
    assert main(fake_suite_args(done, "executor=inline", "report.enabled=false", n=4)) == 0
    ckpt7 = root / "ckpt7"
    shutil.copytree(Path(realgap.__file__).parent / "checkpoints" / "state_policy", ckpt7)
    meta = json.loads((ckpt7 / "policy.json").read_text())
    meta["shapes"]["action"] = [7]
    (ckpt7 / "policy.json").write_text(json.dumps(meta))
    return {"root": root, "done": done, "ckpt7": ckpt7}


@pytest.mark.parametrize("args,needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(fixtures, tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(tmp_path)
    paths = {**fixtures, "new": tmp_path / "new"}
    before = tree(fixtures["root"])
    capsys.readouterr()
    code = main(args(paths))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert needle in err, err
    assert list(tmp_path.iterdir()) == [], "something was written"
    assert tree(fixtures["root"]) == before, "an existing output changed"


def test_scale_ignores_disabled_axes():
    """scale=50 on a lighting-only condition: the disabled appearance range (which 50x would make
    negative) is not what decides; the enabled axis is scaled exactly as the Randomizer would."""
    from realgap.evaluation.plan import _condition

    cond = _condition("c", {"randomization": "default", "only": "lighting", "scale": 50})
    axes = cond.randomization["axes"]
    assert [a for a, v in axes.items() if v["enabled"]] == ["lighting"]
    assert axes["lighting"]["pos_offset"] == pytest.approx([-5.0, 5.0])  # [-0.1, 0.1] x 50
    assert axes["appearance"]["texture_gain"] == pytest.approx([0.75, 1.25])  # left as given
    assert cond.randomization["scale"] == 1.0
