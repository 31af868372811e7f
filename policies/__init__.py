"""Policies: protocol, chunked diffusion policy, receding-horizon executor, training, checkpoints.

``load_policy(path, num_samples=K)`` gives a checkpoint as a protocol policy (the executor);
``load_diffusion(path)`` the bare model. Imported lazily, so the protocol alone does not pull in torch.
"""

_LAZY = {
    "load_policy": "realgap.policies.checkpoint",
    "load_diffusion": "realgap.policies.checkpoint",
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
