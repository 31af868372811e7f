"""Suite execution on a tiny fake env: determinism across workers, faults, bad input, output rules."""

import json

import pytest
from test_eval_fakes import assert_same_episodes, episodes_by_key, fake_suite_args

from realgap.cli import main


def run(args, capsys=None):
    code = main(args)
    err = capsys.readouterr().err if capsys else ""
    return code, err


def test_outcomes_identical_for_inline_one_and_two_workers(tmp_path):
    outs = {}
    for name, extra in {"inline": ["executor=inline"], "w1": ["workers=1"], "w2": ["workers=2"]}.items():
        out = tmp_path / name
        assert main(fake_suite_args(out, *extra, "report.enabled=false")) == 0
        outs[name] = episodes_by_key(out)
    assert len(outs["inline"]) == 36
    assert_same_episodes(outs["inline"], outs["w1"])
    assert_same_episodes(outs["inline"], outs["w2"])
    # the fake is hard enough that both outcomes occur, so equality is not trivial
    successes = {info["success"] for info, _ in outs["inline"].values()}
    assert successes == {True, False}


def test_every_condition_runs_the_same_seeds(tmp_path):
    assert main(fake_suite_args(tmp_path / "o", "executor=inline", "report.enabled=false", n=5)) == 0
    eps = episodes_by_key(tmp_path / "o")
    seeds = {c: sorted(s for cc, s in eps if cc == c) for c in ("nominal", "noisy", "explode")}
    assert seeds["nominal"] == seeds["noisy"] == seeds["explode"] == list(range(100000, 100005))
    # T+1 rows per episode, the last action is NaN
    info, steps = eps[("nominal", 100000)]
    assert len(steps["action"]) == info["length"] + 1 == len(steps["proprio"])


def test_faulty_policy_and_sim_are_recorded_and_the_suite_goes_on(tmp_path):
    out = tmp_path / "o"
    code = main(fake_suite_args(out, "executor=inline", policy_kwargs="{fail_seed:100005,nan_seed:100002}"))
    assert code == 0
    eps = episodes_by_key(out)
    assert len(eps) == 36  # nothing lost
    for cond in ("nominal", "noisy", "explode"):
        assert eps[(cond, 100002)][0]["termination_reason"] == "nan_action"
        assert eps[(cond, 100005)][0]["termination_reason"] == "policy_error"
        assert "blew up" in eps[(cond, 100005)][0]["error"]
        # act() raised for the whole batch (seeds 100004-100007 are one group): all recorded as policy errors,
        # the slots that work alone as collateral, the raising one not
        for seed in (100004, 100006, 100007):
            assert eps[(cond, seed)][0]["termination_reason"] == "policy_error"
            assert eps[(cond, seed)][0]["collateral"] is True
        assert eps[(cond, 100005)][0]["collateral"] is False
        assert eps[(cond, 100001)][0]["termination_reason"] in ("success", "timeout")
    assert eps[("explode", 100003)][0]["termination_reason"] == "unstable"
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["fault_counts"]["nan_action"] == 3
    assert summary["fault_counts"]["policy_error"] == 12
    assert summary["fault_counts"]["unstable"] == 1
    assert summary["collateral"] == 9
    listed = {(f["condition"], f["seed"]) for f in summary["faults"]}
    assert ("explode", 100003) in listed and ("noisy", 100002) in listed
    html = (out / "report" / "index.html").read_text()
    assert "policy_error" in html and "9 of the policy_error episodes are collateral" in html
    assert "batch_envs=1" in html and "counts as one episode that did not succeed" in html


def test_actions_outside_the_action_space_are_a_fault_or_clipped_and_counted(tmp_path):
    """A 1e6 action is flagged (action_out_of_range), never silently clipped into a timeout."""
    out = tmp_path / "fault"
    assert main(fake_suite_args(out, "executor=inline", policy_kwargs="{big_seed:100001}", n=4)) == 0
    eps = episodes_by_key(out)
    for cond in ("nominal", "noisy", "explode"):
        info, steps = eps[(cond, 100001)]
        assert info["termination_reason"] == "action_out_of_range" and not info["success"]
        assert "1000000.0" in info["error"] and info["length"] == 1  # ended before the bad action ran
        assert eps[(cond, 100000)][0]["termination_reason"] in ("success", "timeout")
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["fault_counts"]["action_out_of_range"] == 3

    out = tmp_path / "clip"
    assert main(fake_suite_args(out, "executor=inline", "report.enabled=false", "suite.action_bounds=clip",
                                policy_kwargs="{big_seed:100001}", n=4)) == 0
    eps = episodes_by_key(out)
    for cond in ("nominal", "noisy", "explode"):
        info, steps = eps[(cond, 100001)]
        assert info["termination_reason"] != "action_out_of_range" and info["clipped_steps"] == 1
        assert steps["action"][1, 0] == 1.0  # what the env executed is what is stored
        assert eps[(cond, 100000)][0]["clipped_steps"] == 0


def test_env_max_episode_steps_above_100_reaches_the_realgap_env(tmp_path):
    out = tmp_path / "o"
    args = ["suite", f"out={out}", "executor=inline", "conditions=[nominal]", "suite.seeds.n=2",
            "suite.policy.spec=test_eval_fakes:make_idle_policy", "suite.record_frames=none",
            "suite.env.kwargs.max_episode_steps=150", "report.enabled=false"]
    assert main(args) == 0
    eps = episodes_by_key(out)
    assert [info["length"] for info, _ in eps.values()] == [150, 150]
    assert all(info["termination_reason"] == "timeout" for info, _ in eps.values())


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["conditions=[nominal,foo]"], "unknown condition 'foo'"),
        (["suite.policy.spec=test_eval_fakes:make_wrong_shape_policy"], "shape (7,)"),
        (["suite.policy.spec=no_such_module:factory"], "suite.policy.spec"),
        (["suite.batch_envs=0"], "suite.batch_envs"),
        (["suite.record_frames=some"], "suite.record_frames"),
        (["executor=slurm"], "executor"),
        (["suite.action_bounds=wrap"], "suite.action_bounds"),
        (["suite.success_key=''"], "suite.success_key"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, needle):
    out = tmp_path / "o"
    code, err = run(fake_suite_args(out, "executor=inline", *extra), capsys)
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_unwritable_output_is_refused_before_running(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = run(fake_suite_args(blocker / "sub", "executor=inline"), capsys)
    assert code == 2 and "out:" in err and len(err.strip().splitlines()) == 1


def test_existing_output_needs_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(fake_suite_args(out, "executor=inline", "report.enabled=false", n=4)) == 0
    before = episodes_by_key(out)
    stamp = (out / "suite.json").stat().st_mtime_ns
    capsys.readouterr()
    code, err = run(fake_suite_args(out, "executor=inline", "report.enabled=false", n=4), capsys)
    assert code == 2 and "--resume" in err and "--overwrite" in err
    assert (out / "suite.json").stat().st_mtime_ns == stamp
    assert_same_episodes(before, episodes_by_key(out))
    # a finished suite resumes to itself; a changed suite is refused on resume
    assert main(fake_suite_args(out, "executor=inline", "report.enabled=false", "--resume", n=4)) == 0
    assert_same_episodes(before, episodes_by_key(out))
    code, err = run(fake_suite_args(out, "executor=inline", "--resume", n=5), capsys)
    assert code == 2 and "seeds" in err
    # --overwrite replaces it
    assert main(fake_suite_args(out, "executor=inline", "report.enabled=false", "--overwrite", n=2)) == 0
    assert len(episodes_by_key(out)) == 6


def test_corrupt_store_on_resume_is_an_error(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(fake_suite_args(out, "executor=inline", "report.enabled=false", n=4)) == 0
    (out / "episodes.zarr" / "meta" / "episode_ends" / "zarr.json").write_text("{not json")
    capsys.readouterr()
    code, err = run(fake_suite_args(out, "executor=inline", "--resume", n=4), capsys)
    assert code == 2 and "episodes.zarr" in err and len(err.strip().splitlines()) == 1
