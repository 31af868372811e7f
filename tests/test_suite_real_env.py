"""The default suite on realgap's own env: its shipped checkpoint, and the scripted expert as a known-good policy."""

import json
from pathlib import Path

from realgap.cli import main


def test_default_suite_runs_the_shipped_checkpoint_on_the_real_env(tmp_path, capsys):
    """The default suite's policy is the shipped checkpoint (realgap/checkpoints/state_policy); this runs it."""
    import realgap
    from realgap.policies.checkpoint import checkpoint_digests

    out = tmp_path / "o"
    args = ["suite", f"out={out}", "executor=inline", "conditions=[nominal,physics]", "suite.seeds.n=2",
            "suite.record_frames=all", "report.bootstrap_n=200"]
    assert main(args) == 0
    assert "report:" in capsys.readouterr().out
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["policy"]["spec"] == "checkpoints/state_policy"
    ran = json.loads((out / "suite.json").read_text())["fingerprint"]["policy"]["files"]
    assert ran == checkpoint_digests(Path(realgap.__file__).parent / "checkpoints" / "state_policy")
    assert [r["condition"] for r in summary["conditions"]] == ["nominal", "physics"]
    eps = summary["episodes"]
    assert len(eps) == 4
    physics = [e for e in eps if e["condition"] == "physics"]
    assert all(e["dr_params"] for e in physics)  # the env reported what the physics axis applied
    assert all(e["termination_reason"] for e in eps)
    assert list((out / "report" / "videos").glob("*.mp4"))


def test_suite_counts_the_scripted_experts_successes(tmp_path):
    """The expert solves nominal episodes (200/200 in README's measurement): the suite must report each one."""
    out = tmp_path / "o"
    args = ["suite", f"out={out}", "executor=inline", "suite.policy.spec=expert", "conditions=[nominal]",
            "suite.seeds.n=4", "suite.batch_envs=4", "suite.record_frames=none", "report.bootstrap_n=200"]
    assert main(args) == 0
    summary = json.loads((out / "report" / "summary.json").read_text())
    (row,) = summary["conditions"]
    assert summary["policy"]["spec"] == "expert"
    assert (row["n"], row["successes"]) == (4, 4)
    assert all(e["termination_reason"] == "success" for e in summary["episodes"])
