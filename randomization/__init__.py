"""realgap.randomization: per-axis domain randomization for MuJoCo scenes.

- ``Randomizer`` (``randomizer.py``): the API the realgap env calls (bind / reset_model / reset_state / sensing).
- ``SceneInfo`` (``scene.py``): what the env tells the randomizer about an episode's scene.
- ``DomainRandomization`` (``wrapper.py``): the same axes around any Gymnasium MuJoCo env.
- One module per axis: lighting, appearance, camera, placement, preplacement, physics, sensing.
"""

from .randomizer import AXES, Randomizer
from .scene import SceneInfo
from .sensing import SensingChannel

__all__ = ["AXES", "Randomizer", "SceneInfo", "SensingChannel", "DomainRandomization"]


def __getattr__(name):
    if name == "DomainRandomization":  # lazy: keeps gymnasium out of the env's import path
        from .wrapper import DomainRandomization

        return DomainRandomization
    raise AttributeError(name)
