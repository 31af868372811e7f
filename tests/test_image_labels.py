"""The image policy's training labels: where the named items are in each frame (camera projection),
and the pointer's pixel loss that uses them."""

import numpy as np
import pytest
import torch
from test_data_fakes import fake_store, one_torch_thread, tiny_policy_cfg  # noqa: F401

from realgap.data.dataset import DemoDataset
from realgap.policies.diffusion import DiffusionPolicy

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_projection_lands_on_the_rendered_object_under_camera_dr():
    """Projected body centre vs the centroid of the body's pixels in a segmentation render (64x64)."""
    import mujoco

    import realgap.envs as E
    from realgap.envs.catalogue import body_name
    from realgap.envs.scene import camera_pose, project_to_image
    from realgap.evaluation.plan import load_randomization

    cfg = load_randomization("default", "randomization")
    cfg = {**cfg, "axes": {k: v for k, v in cfg["axes"].items() if k == "camera"}}
    env = E.make("realgap/PlaceInReceptacle-v0", randomization=cfg, obs_mode="state", image_size=64)
    seen = []
    for seed in range(3):
        _, info = env.reset(seed=seed)
        m, d = env.unwrapped.model, env.unwrapped.data
        cam = camera_pose("front", info["dr_params"])
        assert cam != camera_pose("front")  # the camera axis moved it: labels must follow
        r = mujoco.Renderer(m, 64, 64)
        r.enable_segmentation_rendering()
        r.update_scene(d, "front")
        seg = r.render()[..., 0]
        r.close()
        for item in (info["task"]["target_object"], info["task"]["target_receptacle"]):
            body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, body_name(item))
            rows, cols = np.nonzero(np.isin(seg, np.flatnonzero(m.geom_bodyid == body)))
            assert len(rows) > 3
            centroid = np.array([cols.mean() + 0.5, rows.mean() + 0.5])
            seen.append(np.abs(project_to_image(d.xpos[body], cam["pos"], cam["quat"], cam["fovy"], 64) - centroid).max())
    env.close()
    assert max(seen) < 2.5, seen  # pixels (receptacles are wide and seen from above: centroid != centre)


def test_pixel_labels_use_each_episodes_camera(tmp_path):
    fake_store(tmp_path / "d.zarr", n_episodes=2, image=True)
    ds = DemoDataset(tmp_path / "d.zarr", ["proprio", "object_state", "image_front"], 8, 2, 4)
    ds.episode_infos[1] = {**ds.episode_infos[1], "dr_params": {"camera": {"front": {"pos": [0.0, -0.5, 0.5],
                                                                                    "quat": [1.0, 0.0, 0.0, 0.0], "fovy": 60.0}}}}
    key = ds.add_pixel_labels("image_front", "object_state", 6, [1, 2, 3])
    px = ds.arrays[key]
    assert key in ds.obs_keys and px.shape == (len(ds.arrays["proprio"]), 2, 2)
    a, b = int(ds.episode_ends[0]), int(ds.episode_ends[1])
    # episode 1: a camera at (0, -0.5, 0.5) looking down -z: the pixel follows from pinhole geometry
    pos = ds.arrays["object_state"][a:b, 1:4].astype(np.float64)
    f = 16 / np.tan(np.deg2rad(30))
    depth = 0.5 - pos[:, 2]
    front = depth > 0.1  # (the fake store's rows are random: keep those in front of the camera)
    assert front.sum() >= 3
    np.testing.assert_allclose(px[a:b, 0, 0][front], (16 + f * pos[:, 0] / depth)[front], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(px[a:b, 0, 1][front], (16 - f * (pos[:, 1] + 0.5) / depth)[front], rtol=1e-4, atol=1e-3)
    # episode 0 recorded no camera parameters: the scene's nominal camera
    from realgap.envs.scene import camera_pose, project_to_image

    nominal = camera_pose("front")
    expect = project_to_image(ds.arrays["object_state"][:a, 1:4], nominal["pos"], nominal["quat"], nominal["fovy"], 32)
    np.testing.assert_allclose(px[:a, 0], expect, rtol=1e-5)


def test_pointer_pixel_loss_is_lowest_when_the_map_peaks_on_the_named_item(tmp_path):
    fake_store(tmp_path / "d.zarr", n_episodes=2, image=True)
    ds = DemoDataset(tmp_path / "d.zarr", ["proprio", "object_state", "image_front"], 8, 2, 4)
    cfg = tiny_policy_cfg(state_keys=["proprio"], image_keys=["image_front"], image_encoder="film",
                          instruction_encoder="positional", crop_size=32,
                          image_aux={"enabled": True, "row_names": ["red block", "yellow rack"], "pointer": True})
    p = DiffusionPolicy(cfg, ds.shapes(), ds.normalizer, ds.tokenizer)
    h = w = 9
    obs = {"instructions": ["place the red block in the yellow rack"],  # rows: red block, yellow rack, gripper
           "pixels:image_front": torch.tensor([[[[8.0, 24.0], [30.0, 2.0], [16.0, 16.0]]]])}  # (B=1, T=1, R+1, col/row)

    def loss_with_peaks(cells, tops=0.0):
        logits = torch.full((1, 3, h, w), -8.0)
        for q, (i, j) in enumerate(cells):
            logits[0, q, i, j] = 8.0
        maps = {"log_att": torch.log_softmax(logits.flatten(2), -1).reshape(1, 3, h, w),
                "tops": torch.full((1,), tops), "lefts": torch.zeros(1), "crop": 32}
        return float(p.pointer_pixel_loss(maps, obs, "image_front"))

    # pixel (col 8, row 24) of a 32-pixel crop -> normalized (-0.5, 0.5) -> cell (row 6, col 2) of 9x9
    right = loss_with_peaks([(6, 2), (0, 8), (4, 4)])
    for wrong in ([(2, 6), (0, 8), (4, 4)], [(6, 2), (8, 0), (4, 4)], [(6, 2), (0, 8), (0, 0)]):
        assert right < loss_with_peaks(wrong)
    # items outside the crop add nothing: a crop 10 pixels lower loses the receptacle (row 2) only, so
    # putting its map anywhere costs nothing
    assert loss_with_peaks([(3, 2), (0, 8), (1, 4)], tops=10.0) == loss_with_peaks([(3, 2), (8, 8), (1, 4)], tops=10.0) > 0
    obs["pixels:image_front"] = torch.tensor([[[[-8.0, 24.0], [70.0, 2.0], [90.0, 16.0]]]])
    assert loss_with_peaks([(6, 2), (0, 8), (4, 4)]) == 0.0  # all three outside the frame


def test_pixel_labels_end_with_the_gripper_row(tmp_path):
    fake_store(tmp_path / "d.zarr", n_episodes=2, image=True)
    ds = DemoDataset(tmp_path / "d.zarr", ["proprio", "object_state", "image_front"], 8, 2, 4)
    key = ds.add_pixel_labels("image_front", "object_state", 6, [1, 2, 3], ee=("proprio", [1, 2, 3]))
    from realgap.envs.scene import camera_pose, project_to_image

    cam = camera_pose("front")
    expect = project_to_image(ds.arrays["proprio"][:, 1:4], cam["pos"], cam["quat"], cam["fovy"], 32)
    assert ds.arrays[key].shape[1] == 3
    np.testing.assert_allclose(ds.arrays[key][:, 2], expect, rtol=1e-5)
