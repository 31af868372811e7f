"""The tabletop env: spaces, determinism, instability handling, bad input, task sampling."""

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import realgap.envs as envs
from realgap.envs.catalogue import ITEM_NAMES, OBJECTS, RECEPTACLES
from realgap.envs.tasks import object_pool, parse_instruction, receptacle_pool, sample_task
from realgap.errors import RealgapError

HELD_OUT = {s.name for s in (*OBJECTS, *RECEPTACLES) if s.held_out}


@pytest.mark.parametrize("env_id", sorted(envs.ENV_IDS))
def test_check_env_passes_for_every_id(env_id):
    env = envs.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_image_mode_has_requested_cameras_and_size():
    env = envs.make("realgap/PlaceInReceptacle-v0", obs_mode="image", image_size=64, cameras=("front", "wrist"))
    obs, _ = env.reset(seed=3)
    for cam in ("front", "wrist"):
        img = obs[f"image_{cam}"]
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert img.std() > 5  # a real picture, not a blank buffer
    assert obs in env.observation_space
    env.close()


def rollout(env, seed, n_steps=12):
    obs, info = env.reset(seed=seed)
    frames = [obs]
    rng = np.random.default_rng(0)  # the same action sequence for both envs
    for _ in range(n_steps):
        obs, *_ = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
        frames.append(obs)
    return frames, info


def test_same_seed_same_actions_is_bit_identical_including_images():
    kw = dict(obs_mode="state+image", cameras=("front", "wrist"), randomization=None)
    a, info_a = rollout(envs.make("realgap/PlaceInReceptacle-v0", **kw), seed=11)
    b, info_b = rollout(envs.make("realgap/PlaceInReceptacle-v0", **kw), seed=11)
    assert info_a["task"] == info_b["task"]
    for oa, ob in zip(a, b):
        for key in oa:
            if isinstance(oa[key], np.ndarray):
                np.testing.assert_array_equal(oa[key], ob[key], err_msg=key)
            else:
                assert oa[key] == ob[key]
    c, _ = rollout(envs.make("realgap/PlaceInReceptacle-v0", **kw), seed=12)
    assert any(not np.array_equal(x["object_state"], y["object_state"]) for x, y in zip(a, c))


def test_reset_reuses_one_model_and_restores_layout():
    env = envs.make("realgap/PlaceInReceptacle-v0")
    first, _ = env.reset(seed=5)
    for seed in (6, 7, 8):
        env.reset(seed=seed)
    again, _ = env.reset(seed=5)
    np.testing.assert_array_equal(first["object_state"], again["object_state"])


def test_object_state_rows_follow_the_catalogue():
    env = envs.make("realgap/PlaceInReceptacle-v0")
    obs, info = env.reset(seed=2)
    rows = obs["object_state"].reshape(len(ITEM_NAMES), 6)
    present = set(info["task"]["objects"]) | set(info["task"]["receptacles"])
    for name, row in zip(ITEM_NAMES, rows):
        if name in present:
            assert row[0] == 1.0 and abs(row[4] ** 2 + row[5] ** 2 - 1) < 1e-5
            assert abs(row[1]) < 0.3 and abs(row[2]) < 0.3  # on the table, not parked
        else:
            assert not row.any()


@pytest.mark.parametrize("corrupt", ["nan_qvel", "huge_gain"])
def test_instability_ends_episode_without_crashing(corrupt):
    env = envs.make("realgap/PlaceInReceptacle-v0")
    env.reset(seed=0)
    u = env.unwrapped
    if corrupt == "nan_qvel":
        u.data.qvel[0] = np.nan
    else:
        u.model.actuator_gainprm[:3, 0] = 1e14  # absurd gains, no force limit, no damping
        u.model.actuator_biasprm[:3, 1] = -1e14
        u.model.actuator_forcelimited[:] = 0
        u.model.dof_damping[:] = 0
    obs, reward, terminated, truncated, info = env.step(np.array([1, 0, 0, 0], np.float32))
    assert truncated and not terminated and not info["is_success"]
    assert info["termination_reason"].startswith("unstable: ")
    assert all(np.isfinite(v).all() for v in obs.values() if isinstance(v, np.ndarray))


def test_timeout_truncates_with_reason():
    env = envs.make("realgap/PlaceInReceptacle-v0", max_episode_steps=3)
    env.reset(seed=0)
    for _ in range(3):
        _, _, terminated, truncated, info = env.step(np.zeros(4, np.float32))
    assert truncated and not terminated and info["termination_reason"] == "timeout"


@pytest.mark.parametrize(
    "env_id, kwargs, field",
    [
        ("realgap/Nope-v0", {}, "env.id"),
        ("realgap/PlaceInReceptacle-v0", {"objects": ["golden block"]}, "objects"),
        ("realgap/PlaceInReceptacle-v0", {"receptacles": ["red bucket"]}, "receptacles"),
        ("realgap/PlaceInReceptacle-v0", {"objects": ["green vial"]}, "objects"),  # held out
        ("realgap/PlaceInReceptacle-v0", {"receptacles": ["blue cup"]}, "receptacles"),  # held out
        ("realgap/PlaceInReceptacle-v0", {"obs_mode": "depth"}, "obs_mode"),
        ("realgap/PlaceInReceptacle-v0", {"cameras": ["top"]}, "cameras"),
        ("realgap/PlaceInReceptacle-v0", {"image_size": 0}, "image_size"),
    ],
)
def test_bad_input_is_one_line_error_naming_the_field(env_id, kwargs, field):
    with pytest.raises(RealgapError) as e:
        envs.make(env_id, **kwargs)
    msg = str(e.value)
    assert msg.startswith(field) and "\n" not in msg


def test_held_out_items_allowed_on_request():
    env = envs.make("realgap/PlaceInReceptacle-v0", allow_held_out=True, objects=["green vial", "red block"],
                    receptacles=["blue cup", "yellow rack"])
    _, info = env.reset(seed=0)
    assert set(info["task"]["objects"]) == {"green vial", "red block"}
    assert set(info["task"]["receptacles"]) == {"blue cup", "yellow rack"}


def test_training_task_sampling_never_uses_held_out_items():
    objects, receptacles = object_pool(None, False), receptacle_pool(None, False)
    assert HELD_OUT and not HELD_OUT & set(objects + receptacles)
    seen = set()
    for seed in range(300):
        task = sample_task(seed, objects, receptacles)
        items = set(task.objects) | set(task.receptacles)
        assert not items & HELD_OUT
        assert len(task.objects) >= 2 and len(task.receptacles) >= 2
        assert task.target_object in task.objects and task.target_receptacle in task.receptacles
        seen |= items
    assert seen == set(objects + receptacles)  # every training item does get used


def test_instruction_matches_task_and_uses_its_charset():
    env = envs.make("realgap/PlaceInReceptacle-v0")
    for seed in range(5):
        obs, info = env.reset(seed=seed)
        task = info["task"]
        assert obs["instruction"] == f"place the {task['target_object']} in the {task['target_receptacle']}"
        assert parse_instruction(obs["instruction"]) == (task["target_object"], task["target_receptacle"])
        assert obs["instruction"] in env.observation_space["instruction"]


def test_task_sampling_uses_its_own_stream():
    pools = object_pool(None, False), receptacle_pool(None, False)
    assert sample_task(7, *pools) == sample_task(7, *pools)
    assert len({sample_task(s, *pools) for s in range(20)}) > 10


def test_make_max_episode_steps_reaches_the_env():
    env = envs.make("realgap/PlaceInReceptacle-v0", max_episode_steps=2)
    env.reset(seed=0)
    env.step(np.zeros(4, np.float32))
    _, _, _, truncated, info = env.step(np.zeros(4, np.float32))
    assert truncated and info["termination_reason"] == "timeout"


def test_render_rgb_array():
    env = envs.make("realgap/PlaceInReceptacle-v0", render_mode="rgb_array", render_size=128)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (128, 128, 3) and frame.dtype == np.uint8 and frame.std() > 5


def test_randomization_reports_params_and_stays_deterministic():
    from omegaconf import OmegaConf

    from realgap.conf import __file__ as conf_init
    import pathlib

    cfg = OmegaConf.to_container(OmegaConf.load(pathlib.Path(conf_init).parent / "randomization" / "default.yaml"))
    a = envs.make("realgap/PlaceInReceptacle-v0", randomization=cfg, obs_mode="state+image")
    b = envs.make("realgap/PlaceInReceptacle-v0", randomization=cfg, obs_mode="state+image")
    oa, ia = a.reset(seed=4)
    ob, ib = b.reset(seed=4)
    assert {"placement", "physics", "sensing"} <= set(ia["dr_params"])
    np.testing.assert_array_equal(oa["image_front"], ob["image_front"])
    np.testing.assert_array_equal(oa["object_state"], ob["object_state"])
    nominal = envs.make("realgap/PlaceInReceptacle-v0", obs_mode="state+image").reset(seed=4)[0]
    assert not np.array_equal(oa["object_state"], nominal["object_state"])


def test_envs_sharing_a_renderer_each_draw_their_own_randomized_scene():
    """Envs of a process share one GL renderer per scene and size; interleaved in lockstep under
    appearance/lighting/camera DR, each env's images equal those of a private renderer of its own."""
    import mujoco
    from omegaconf import OmegaConf

    from realgap.conf import __file__ as conf_init
    import pathlib

    cfg = OmegaConf.to_container(OmegaConf.load(pathlib.Path(conf_init).parent / "randomization" / "default.yaml"))
    kw = dict(randomization=cfg, obs_mode="image", image_size=32, cameras=("front", "wrist"))
    pair = [envs.make("realgap/PlaceInReceptacle-v0", **kw) for _ in range(2)]
    obs = [env.reset(seed=seed)[0] for env, seed in zip(pair, (1, 2))]
    private = []
    for env in pair:  # created after the reset: it holds this env's model and randomized textures
        r = mujoco.Renderer(env.unwrapped.model, 32, 32)
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION):
            r.scene.flags[flag] = 0
        private.append(r)

    def reference(i, cam):
        private[i].update_scene(pair[i].unwrapped.data, camera=cam)
        return private[i].render()

    for step in range(4):
        for i in range(2):
            for cam in ("front", "wrist"):
                np.testing.assert_array_equal(obs[i][f"image_{cam}"], reference(i, cam), err_msg=f"env {i} {cam} {step}")
        obs = [env.step(np.array([0.5, 0.0, -0.5, 0.0], np.float32))[0] for env in pair]  # lockstep
    assert not np.array_equal(reference(0, "front"), reference(1, "front"))  # the two scenes do look different
    for r in private:
        r.close()
