"""Reports: files exist, name every condition, and rebuild from the episode store alone."""

import csv
import json
import shutil

import pytest

from test_eval_fakes import fake_suite_args

from realgap.cli import main


def test_report_files_videos_and_rebuild_from_store(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(fake_suite_args(out, "executor=inline", frames="failures", n=8,
                                env_kwargs="{obs_mode:state,image_size:16}")) == 0
    report = out / "report"
    html = (report / "index.html").read_text()
    summary = json.loads((report / "summary.json").read_text())
    for cond in ("nominal", "noisy", "explode"):
        assert cond in html
    assert [r["condition"] for r in summary["conditions"]] == ["nominal", "noisy", "explode"]
    assert [c["condition"] for c in summary["comparisons"]] == ["noisy", "explode"]
    with (report / "episodes.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 24 and {r["condition"] for r in rows} == {"nominal", "noisy", "explode"}
    with (report / "conditions.csv").open() as fh:
        cond_rows = {r["condition"]: r for r in csv.DictReader(fh)}
    n_ok = sum(r["success"] == "True" for r in rows if r["condition"] == "nominal")
    assert int(cond_rows["nominal"]["successes"]) == n_ok
    # frames were kept for failures, so videos of the first failures exist and are embedded
    videos = sorted((report / "videos").glob("*.mp4"))
    assert videos and all(v.stat().st_size > 0 for v in videos)
    assert "<video" in html and "data:image/png;base64," in html
    failed = [r for r in rows if r["success"] == "False" and r["frames"] == "True"]
    assert failed, "fake suite should have failures with frames"

    # `realgap report` rebuilds the same numbers from the store alone
    shutil.rmtree(report)
    capsys.readouterr()
    assert main(["report", f"out={out}", "bootstrap_n=500"]) == 0
    assert "index.html" in capsys.readouterr().out
    rebuilt = json.loads((report / "summary.json").read_text())
    assert rebuilt["conditions"] == summary["conditions"]
    assert rebuilt["comparisons"] == summary["comparisons"]


def test_report_of_a_missing_store_is_a_one_line_error(tmp_path, capsys):
    code = main(["report", f"out={tmp_path / 'nothing'}"])
    err = capsys.readouterr().err
    assert code == 2 and "episodes.zarr" in err and len(err.strip().splitlines()) == 1


def _all_success_args(out, n):
    """A suite where nominal succeeds every time (noise-free seeker) and 'lost' never does."""
    conds = "{nominal:{randomization:null},same:{env_kwargs:{noise:0.0}},lost:{env_kwargs:{noise:3.0}}}"
    args = fake_suite_args(out, "executor=inline", n=n, policy_kwargs="{noise:0.0}")
    return [f"+suite.conditions={conds}" if a.startswith("+suite.conditions=") else a for a in args]


@pytest.mark.parametrize("n", [10, 30])
def test_report_of_a_condition_that_always_succeeds(tmp_path, n):
    """n/n successes: the Wilson bound 1.0 is not a hair below the estimate, the plot draws, JSON is strict."""
    out = tmp_path / "o"
    assert main(_all_success_args(out, n)) == 0
    text = (out / "report" / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"summary.json holds a bare {c}"))
    rows = {r["condition"]: r for r in summary["conditions"]}
    assert rows["nominal"]["successes"] == rows["same"]["successes"] == n
    for name in ("nominal", "same"):
        iv = rows[name]["success_rate"]
        assert iv["low"] <= iv["estimate"] == iv["high"] == 1.0
    assert rows["lost"]["successes"] == 0
    assert rows["lost"]["time_to_success"] == {"estimate": None, "low": None, "high": None}  # was a bare NaN
    same = next(c for c in summary["comparisons"] if c["condition"] == "same")
    assert same["difference"] == {"estimate": 0.0, "low": 0.0, "high": 0.0} and same["p_value"] == 1.0
    assert "data:image/png;base64," in (out / "report" / "index.html").read_text()
