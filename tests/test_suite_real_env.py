"""The default suite's wiring on the real env and scripted expert (few seeds, two conditions)."""

import json

from realgap.cli import main


def test_default_suite_runs_on_the_real_env(tmp_path, capsys):
    out = tmp_path / "o"
    args = ["suite", f"out={out}", "executor=inline", "conditions=[nominal,physics]", "suite.seeds.n=2",
            "suite.record_frames=all", "report.bootstrap_n=200"]
    assert main(args) == 0
    assert "report:" in capsys.readouterr().out
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert [r["condition"] for r in summary["conditions"]] == ["nominal", "physics"]
    eps = summary["episodes"]
    assert len(eps) == 4
    physics = [e for e in eps if e["condition"] == "physics"]
    assert all(e["dr_params"] for e in physics)  # the env reported what the physics axis applied
    assert all(e["termination_reason"] for e in eps)
    assert list((out / "report" / "videos").glob("*.mp4"))
