"""Policies: protocol, chunked diffusion policy, receding-horizon executor, training, checkpoints.

``from realgap.policies import load_policy, RecedingHorizonExecutor`` (imported lazily, so the
protocol alone does not pull in torch).
"""

_LAZY = {
    "load_policy": "realgap.policies.checkpoint",
    "save_policy": "realgap.policies.checkpoint",
    "DiffusionPolicy": "realgap.policies.diffusion",
    "RecedingHorizonExecutor": "realgap.policies.executor",
    "Policy": "realgap.policies.protocol",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
