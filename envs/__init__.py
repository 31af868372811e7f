"""realgap.envs: the MuJoCo tabletop world, its Gymnasium ids and the scripted expert.

Importing registers the ids (``ENV_IDS``). ``make(id, randomization=None, **kwargs)`` is the one
place realgap builds an env -- for collection, the expert, training-time checks and suites alike --
for realgap's own ids and for any other Gymnasium id.
"""

import importlib
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
IMAGE_KEY_PREFIX = "image_"  # camera observations are image_<camera>: suites store them as frames, image policies read them


def image_key(camera: str) -> str:
    return f"{IMAGE_KEY_PREFIX}{camera}"


def is_image_key(key: str) -> bool:
    """A camera observation (also in a foreign env whose keys follow the convention)."""
    return key.startswith(IMAGE_KEY_PREFIX)

for _id, _kwargs in ENV_IDS.items():
    if _id not in gym.registry:
        gym.register(_id, entry_point=ENTRY_POINT, kwargs=_kwargs, max_episode_steps=DEFAULT_MAX_EPISODE_STEPS)


def is_realgap(env_id: str) -> bool:
    """realgap's own ids take realgap's env kwargs (obs_mode, image_size, cameras, objects, ...)."""
    return env_id.startswith("realgap/")


def make(env_id: str, randomization=None, **kwargs) -> gym.Env:
    """Build ``env_id`` with ``kwargs`` (the env's own) and, given a DR config, wrap it in DR.

    - ``env_id``: a realgap id, any registered Gymnasium id, or ``module:Id`` (imports ``module``,
      which registers ``Id``). An unknown id is a one-line ``RealgapError``.
    - ``max_episode_steps``: Gymnasium's time limit; for realgap ids the env also gets it, so it
      ends the episode itself with ``termination_reason = "timeout"`` (any value, above 100 too).
    - ``randomization``: a ``conf/randomization`` config (dict / DictConfig) or None. Every env,
      realgap's included, gets it through the same ``DomainRandomization`` wrapper.
    """
    if not isinstance(env_id, str) or not env_id:
        raise RealgapError(f"env.id: expected a Gymnasium id, got {env_id!r}")
    if is_realgap(env_id):
        if env_id not in ENV_IDS:
            raise RealgapError(f"env.id: unknown env id {env_id!r}; known: {', '.join(ENV_IDS)}")
    else:
        try:  # unknown ids raise here, before anything is built
            module, _, name = env_id.rpartition(":")
            if module:  # "module:Id": importing the module registers Id
                importlib.import_module(module)
            gym.spec(name)
        except Exception as e:
            raise RealgapError(f"env.id: unknown env id {env_id!r} ({type(e).__name__}: {str(e).splitlines()[0]})") from e
    max_steps = kwargs.pop("max_episode_steps", None)
    try:
        env = gym.make(env_id, max_episode_steps=max_steps, **kwargs)
    except TypeError as e:  # a kwarg the env's constructor does not take
        raise RealgapError(f"env.kwargs: {env_id} rejects them ({e})") from e
    if max_steps is not None and is_realgap(env_id):  # gym.make keeps it for TimeLimit only
        env.unwrapped.max_episode_steps = max_steps
    if randomization is not None:
        from realgap.randomization import DomainRandomization

        try:
            env = DomainRandomization(env, randomization)
        except BaseException:
            env.close()
            raise
    return env
