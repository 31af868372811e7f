"""Policy checkpoints: safetensors weights + JSON metadata; loading never unpickles.

    <dir>/policy.json             config, obs/action shapes, normalizer, tokenizer
    <dir>/model.safetensors       EMA weights (what rollouts use)
    <dir>/train_state.safetensors raw weights, EMA weights and AdamW moments (for --resume)
    <dir>/train_state.json        step, EMA step, optimizer param groups, learning-curve rows

Files are written to a temporary name and renamed, so a kill never leaves a half-written checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from realgap.data.normalizer import Normalizer
from realgap.data.tokenizer import WordTokenizer
from realgap.errors import RealgapError
from realgap.policies.diffusion import DiffusionPolicy

FORMAT = "realgap.diffusion_policy"
VERSION = 1
INFERENCE_FILES = ("policy.json", "model.safetensors")  # what load_policy reads


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    _atomic(path, lambda p: p.write_text(json.dumps(obj, indent=1)))


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}


def save_policy(path: str | Path, policy: DiffusionPolicy, weights: torch.nn.Module | None = None) -> None:
    """Inference checkpoint: metadata + the given weights (default: the policy's own)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "version": VERSION, "config": policy.config,
            "shapes": {k: list(v) for k, v in policy.shapes.items()},
            "normalizer": policy.normalizer.to_dict(), "tokenizer": policy.tokenizer.to_dict()}
    _atomic(path / "model.safetensors", lambda p: save_file(_state(weights or policy), str(p)))
    _write_json(path / "policy.json", meta)


def checkpoint_digests(path: str | Path) -> dict[str, str | None]:
    """sha256 of each file a rollout loads (None for a missing one): the checkpoint's identity."""
    out: dict[str, str | None] = {}
    for name in INFERENCE_FILES:
        file = Path(path) / name
        if not file.is_file():
            out[name] = None
            continue
        h = hashlib.sha256()
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        out[name] = h.hexdigest()
    return out


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise RealgapError(f"{path}: missing (not a realgap policy checkpoint)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RealgapError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from e


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise RealgapError(f"{path}: missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise RealgapError(f"{path}: unreadable safetensors ({e})") from e


def build_policy(meta: Mapping[str, Any], where: str) -> DiffusionPolicy:
    for field in ("config", "shapes", "normalizer", "tokenizer"):
        if field not in meta:
            raise RealgapError(f"{where}: missing field '{field}'")
    if meta.get("format") != FORMAT:
        raise RealgapError(f"{where}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    return DiffusionPolicy(meta["config"], meta["shapes"], Normalizer.from_dict(meta["normalizer"], f"{where}: normalizer"),
                           WordTokenizer.from_dict(meta["tokenizer"], f"{where}: tokenizer"))


def _load_into(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor], where: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise RealgapError(f"{where}: weights do not match the config (missing {missing[:2]}, unexpected {unexpected[:2]})")
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise RealgapError(f"{where}: weight '{k}' has shape {tuple(v.shape)}, config needs {tuple(own[k].shape)}")
    module.load_state_dict(dict(tensors))


def load_policy(path: str | Path, num_samples: int = 1, n_action_steps: int | None = None, on_chunk=None,
                observation_space=None, action_space=None, chunk_choice: str = "first"):
    """A checkpoint as a protocol policy (reset/act): the receding-horizon executor over its EMA weights.

    ``num_samples`` K chunks are drawn per replan (sample 0 is executed, or with ``chunk_choice="medoid"``
    the samples' medoid); the raw model is ``.policy``.
    """
    from realgap.policies.executor import RecedingHorizonExecutor

    model = load_diffusion(path, observation_space, action_space)
    return RecedingHorizonExecutor(model, num_samples=num_samples, n_action_steps=n_action_steps, on_chunk=on_chunk,
                                   chunk_choice=chunk_choice)


def load_diffusion(path: str | Path, observation_space=None, action_space=None) -> DiffusionPolicy:
    """The EMA model of a checkpoint, in eval mode. Pass the env's spaces to check shapes up front."""
    path = Path(path)
    if not path.is_dir():
        raise RealgapError(f"{path}: policy checkpoint directory does not exist")
    policy = build_policy(_read_json(path / "policy.json"), str(path / "policy.json"))
    tensors = _read_tensors(path / "model.safetensors")
    try:
        _load_into(policy, tensors, "model.safetensors")
    except RealgapError as e:  # policy.json describes the network; weights that don't fit it mean a wrong json
        raise RealgapError(f"{path / 'policy.json'}: config/shapes do not match the weights ({e})") from None
    if observation_space is not None or action_space is not None:
        check_spaces(policy, observation_space, action_space, where=str(path / "policy.json"))
    return policy.eval()


def check_spaces(policy: DiffusionPolicy, observation_space=None, action_space=None, where: str = "policy") -> None:
    """One-line RealgapError when the env's observation/action shapes differ from the policy's."""
    if action_space is not None and tuple(action_space.shape) != policy.shapes["action"]:
        raise RealgapError(f"{where}: shapes.action is {list(policy.shapes['action'])}, env action space is {list(action_space.shape)}")
    if observation_space is not None:
        for k in [*policy.state_keys, *policy.image_keys]:
            if k not in observation_space.spaces:
                raise RealgapError(f"{where}: shapes.{k}: env observation has no '{k}' (has {sorted(observation_space.spaces)})")
            env_shape = tuple(observation_space.spaces[k].shape)
            if env_shape != policy.shapes[k]:
                raise RealgapError(f"{where}: shapes.{k} is {list(policy.shapes[k])}, env gives {list(env_shape)}")


# ------------------------------------------------------------------ training state
def save_train_state(path: str | Path, model: torch.nn.Module, ema_model: torch.nn.Module, ema_step: int,
                     optimizer: torch.optim.Optimizer, step: int, extra: Mapping[str, Any]) -> None:
    path = Path(path)
    tensors = {f"model.{k}": v for k, v in _state(model).items()}
    tensors.update({f"ema.{k}": v for k, v in _state(ema_model).items()})
    opt = optimizer.state_dict()
    for idx, st in opt["state"].items():
        for name, v in st.items():
            tensors[f"optim.{idx}.{name}"] = torch.as_tensor(v).detach().contiguous().clone()
    meta = {"step": int(step), "ema_step": int(ema_step), "param_groups": opt["param_groups"], **extra}
    _atomic(path / "train_state.safetensors", lambda p: save_file(tensors, str(p)))
    _write_json(path / "train_state.json", meta)


def load_train_state(path: str | Path, model: torch.nn.Module, ema_model: torch.nn.Module,
                     optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    path = Path(path)
    meta = _read_json(path / "train_state.json")
    tensors = _read_tensors(path / "train_state.safetensors")
    where = str(path / "train_state.safetensors")
    _load_into(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, where)
    _load_into(ema_model, {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}, where)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta
