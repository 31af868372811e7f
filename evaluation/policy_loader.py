"""Turn a suite's ``policy`` spec into an object speaking the policy protocol.

``spec`` is one of:
- ``expert``: the scripted expert (``realgap.envs.expert.ScriptedExpert``);
- a path to a realgap checkpoint (loaded with ``realgap.policies.load_policy``), relative to the
  working directory or, failing that, to the installed ``realgap`` package (the shipped
  ``checkpoints/state_policy``);
- ``module:factory``: any importable callable returning a protocol policy.
``kwargs`` go to the expert's / factory's constructor.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from realgap.errors import RealgapError


def checkpoint_path(spec: str) -> Path | None:
    """An existing checkpoint folder for ``spec``: as given, else inside the installed realgap package."""
    import realgap

    for path in (Path(spec).expanduser(), Path(realgap.__file__).parent / spec):
        if path.is_dir():
            return path
    return None


def load_policy(spec: str, kwargs: dict | None = None) -> Any:
    if not isinstance(spec, str) or not spec:
        raise RealgapError(f"suite.policy.spec: expected 'expert', a checkpoint path or 'module:factory', got {spec!r}")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise RealgapError(f"suite.policy.kwargs: expected a mapping, got {kwargs!r}")
    try:
        policy = _construct(spec, dict(kwargs or {}))
    except RealgapError:
        raise
    except TypeError as e:  # almost always a keyword the constructor does not take
        raise RealgapError(f"suite.policy.kwargs: '{spec}' does not accept {dict(kwargs or {})} ({e})") from e
    except Exception as e:  # a user's factory failing is bad input, not a crash of realgap
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise RealgapError(f"suite.policy.spec: '{spec}' raised {type(e).__name__}: {first}") from e
    for method in ("reset", "act"):
        if not callable(getattr(policy, method, None)):
            raise RealgapError(f"suite.policy.spec: '{spec}' has no {method}() (see realgap.policies.protocol)")
    return policy


def _construct(spec: str, kwargs: dict) -> Any:
    if spec == "expert":
        from realgap.envs.expert import ScriptedExpert

        policy = ScriptedExpert(**kwargs)
    elif checkpoint_path(spec) is not None:
        from realgap.policies import load_policy as load_checkpoint

        policy = load_checkpoint(checkpoint_path(spec), **kwargs)
    elif ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise RealgapError(f"suite.policy.spec: cannot import '{spec}' ({type(e).__name__}: {e})") from e
        policy = factory(**kwargs)
    else:
        raise RealgapError(f"suite.policy.spec: '{spec}' is not 'expert', an existing checkpoint, or 'module:factory'")
    return policy
