"""A foreign env in the suite: Gymnasium's MuJoCo Reacher-v5, DR through the DomainRandomization
wrapper, a ``module:factory`` policy from this file, success from a configurable info key.

``test_foreign_env:ReacherReach-v0`` is Reacher-v5 plus the one thing a suite needs that Reacher
lacks: a success signal, ``info["reached"]`` (fingertip within 2 cm of the target), on every step.
This is what a user does for their own env (README, "Evaluate your own env").
"""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from test_eval_fakes import episodes_by_key

from realgap.cli import main

REACH_RADIUS = 0.02


class ReachSuccess(gym.Wrapper):
    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, "reached": bool(np.linalg.norm(obs[8:10]) < REACH_RADIUS)}


def make_reacher_reach(**kwargs):
    return ReachSuccess(gym.make("Reacher-v5", **kwargs))


if "ReacherReach-v0" not in gym.registry:
    gym.register("ReacherReach-v0", entry_point=make_reacher_reach, max_episode_steps=50)


class JacobianReacher:
    """Operational-space P-D control of the fingertip onto the target (Reacher-v5's 10-d observation)."""

    def reset(self, episode_seeds):
        pass

    def act(self, obs, slots):
        out = np.zeros((len(slots), 2), np.float32)
        for j, o in enumerate(obs):
            q1, q2 = np.arctan2(o[2], o[0]), np.arctan2(o[3], o[1])
            s1, c1, s12, c12 = np.sin(q1), np.cos(q1), np.sin(q1 + q2), np.cos(q1 + q2)
            jac = np.array([[-0.1 * s1 - 0.11 * s12, -0.11 * s12], [0.1 * c1 + 0.11 * c12, 0.11 * c12]])
            out[j] = np.clip(jac.T @ (-300.0 * o[8:10]) - 0.2 * o[6:8], -1, 1)
        return out


def make_policy():
    return JacobianReacher()


CONDITIONS = ("{nominal:{randomization:null},"
              "physics:{randomization:default,only:physics},sensing:{randomization:default,only:sensing}}")


def reacher_args(out, *extra, env_id="test_foreign_env:ReacherReach-v0", n=8):
    return ["suite", f"out={out}", "executor=inline", f"suite.env.id={env_id}",
            "~suite.env.kwargs", "+suite.env.kwargs={}",  # Reacher's own kwargs only: none of realgap's
            "suite.policy.spec=test_foreign_env:make_policy", "~suite.conditions", f"+suite.conditions={CONDITIONS}",
            f"suite.seeds.n={n}", "suite.batch_envs=4", "suite.record_frames=none", "report.bootstrap_n=200",
            "report.videos_per_condition=1", *extra]


def test_a_gymnasium_mujoco_env_runs_in_the_suite_with_dr(tmp_path):
    out = tmp_path / "o"
    assert main(reacher_args(out, "suite.success_key=reached")) == 0
    eps = episodes_by_key(out)
    assert len(eps) == 24
    summary = json.loads((out / "report" / "summary.json").read_text())
    rows = {r["condition"]: r for r in summary["conditions"]}
    assert rows["nominal"]["successes"] >= 6  # the controller reaches most targets (19/20 when measured)
    for (cond, seed), (info, steps) in eps.items():
        assert steps["obs"].shape == (info["length"] + 1, 10)  # a Box observation is stored as "obs"
        if info["success"]:
            assert info["termination_reason"] == "success" and info["length"] < 50
            if cond == "nominal":  # (the sensing condition stores noisy observations)
                assert np.linalg.norm(steps["obs"][-1][8:10]) < REACH_RADIUS
    # DR reached the foreign env through the wrapper: per-episode physics draws, sensing noise
    physics = [eps[("physics", s)][0]["dr_params"]["physics"] for s in range(100000, 100008)]
    assert len({json.dumps(p, sort_keys=True) for p in physics}) == 8
    assert eps[("sensing", 100000)][0]["dr_params"]["sensing"]["obs_noise_std"] > 0
    nominal_obs, sensing_obs = eps[("nominal", 100000)][1]["obs"][0], eps[("sensing", 100000)][1]["obs"][0]
    assert not np.array_equal(nominal_obs, sensing_obs) and np.allclose(nominal_obs, sensing_obs, atol=0.02)


def test_an_env_that_never_reports_the_success_key_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "o"
    code = main(reacher_args(out, "conditions=[nominal]", env_id="Reacher-v5", n=4))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    err = err.splitlines()[-1]  # after the progress bar of the first group, the one-line error
    assert err.startswith("realgap suite: error: suite.success_key")
    assert "suite.success_key" in err and "is_success" in err and "reward_dist" in err  # names the keys it has
    assert not out.exists()  # nothing half-written


def test_realgap_only_env_kwargs_are_not_passed_to_a_foreign_env(tmp_path, capsys):
    """The default suite's obs_mode/image_size/cameras belong to realgap's env: Reacher rejects them, in one line."""
    out = tmp_path / "o"
    args = [a for a in reacher_args(out, "suite.success_key=reached") if "suite.env.kwargs" not in a]
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "suite.env.kwargs" in err and "obs_mode" in err
    assert not out.exists()


def test_frames_of_a_foreign_env_come_from_render_and_a_replay_of_failures_matches(tmp_path):
    runs = {}
    for frames in ("all", "failures"):  # failures: run without rendering, replay the failures with it
        out = tmp_path / frames
        args = reacher_args(out, "suite.success_key=reached", "conditions=[nominal]", f"suite.record_frames={frames}",
                            "suite.frames_first_seeds=0", "report.enabled=false", n=3)
        # 8 steps are too few to reach most targets: most episodes fail and keep their frames
        args[args.index("+suite.env.kwargs={}")] = "+suite.env.kwargs={width:48,height:48,max_episode_steps:8}"
        assert main(args) == 0
        runs[frames] = episodes_by_key(out)
    for key, (info, steps) in runs["all"].items():
        frames = steps["image_render"]
        assert frames.shape == (info["length"] + 1, 48, 48, 3) and frames.dtype == np.uint8
        assert frames[0].std() > 5 and not np.array_equal(frames[0], frames[-1])  # the arm moved
        replayed = runs["failures"][key]
        assert replayed[0]["frames"] == (not info["success"])
        if replayed[0]["frames"]:
            np.testing.assert_array_equal(replayed[1]["image_render"], frames)
    assert any(info["frames"] for info, _ in runs["failures"].values())


@pytest.mark.parametrize("bad", ["suite.env.id=NoSuchEnv-v9", "suite.env.id=no_such_module:Env-v0"])
def test_unknown_foreign_id_is_a_one_line_error_naming_suite_env_id(tmp_path, capsys, bad):
    out = tmp_path / "o"
    code = main(reacher_args(out, bad))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.split("error: ")[-1].startswith("suite.env.id")
    assert not out.exists()
