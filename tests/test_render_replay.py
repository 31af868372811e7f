"""Render only what is kept: with record_frames=failures episodes run without rendering and the kept
ones are replayed (seed + stored actions) with rendering on. The replayed frames must be the frames a
rendered run shows, pixel for pixel, under DR that changes looks (target_lab: lighting, textures,
camera) and sensing noise and latency."""

import numpy as np
from test_eval_fakes import episodes_by_key

from realgap.cli import main


def suite(out, frames):
    # The expert cannot finish in 12 steps: every episode is a failure that moved the gripper.
    args = ["suite", f"out={out}", "executor=inline", "conditions=[nominal,target_lab]", "suite.seeds.n=3",
            "suite.policy.spec=expert", f"suite.record_frames={frames}", "suite.frames_first_seeds=0",
            "suite.env.kwargs.max_episode_steps=12", "suite.env.kwargs.image_size=48", "report.enabled=false"]
    assert main(args) == 0
    return episodes_by_key(out)


def test_replayed_frames_equal_a_rendered_run_pixel_for_pixel(tmp_path):
    rendered, replayed = suite(tmp_path / "all", "all"), suite(tmp_path / "failures", "failures")
    assert sorted(rendered) == sorted(replayed) and len(rendered) == 6
    for key, (info, steps) in replayed.items():
        ref_info, ref_steps = rendered[key]
        assert not info["success"] and info["frames"]  # a failure, so its frames are kept (by replay)
        assert {k: v for k, v in info.items() if k != "frames"} == {k: v for k, v in ref_info.items() if k != "frames"}
        frames = steps["image_front"]
        assert frames.shape == (info["length"] + 1, 48, 48, 3) and frames[0].std() > 5
        np.testing.assert_array_equal(frames, ref_steps["image_front"], err_msg=str(key))
        assert not np.array_equal(frames[0], frames[-1])  # the gripper moved: not a trivially equal still
        for k in ("action", "proprio", "object_state"):
            np.testing.assert_array_equal(steps[k], ref_steps[k], err_msg=f"{key} {k}")
