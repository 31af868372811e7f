"""realgap.envs: the MuJoCo tabletop world, its Gymnasium ids and the scripted expert.

Importing registers the ids (``ENV_IDS``). ``make(id, **kwargs)`` is ``gymnasium.make`` that first
checks the id, so a typo is a one-line ``RealgapError`` instead of a long Gymnasium traceback.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede the first mujoco import

import gymnasium as gym  # noqa: E402

from realgap.errors import RealgapError  # noqa: E402

ENTRY_POINT = "realgap.envs.place_env:PlaceInReceptacleEnv"
ENV_IDS = {
    "realgap/PlaceInReceptacle-v0": {},  # state observation (proprio + object_state + instruction)
    "realgap/PlaceInReceptacleImage-v0": {"obs_mode": "state+image"},  # plus image_front
}
DEFAULT_MAX_EPISODE_STEPS = 100

for _id, _kwargs in ENV_IDS.items():
    if _id not in gym.registry:
        gym.register(_id, entry_point=ENTRY_POINT, kwargs=_kwargs, max_episode_steps=DEFAULT_MAX_EPISODE_STEPS)


def make(env_id: str, **kwargs) -> gym.Env:
    """``gymnasium.make`` for realgap ids; an unknown id raises a one-line RealgapError."""
    if env_id not in ENV_IDS:
        raise RealgapError(f"env.id: unknown env id {env_id!r}; known: {', '.join(ENV_IDS)}")
    max_steps = kwargs.pop("max_episode_steps", None)
    env = gym.make(env_id, max_episode_steps=max_steps, **kwargs)
    if max_steps is not None:  # gym.make keeps it for TimeLimit only; the env needs it for its info
        env.unwrapped.max_episode_steps = max_steps
    return env
