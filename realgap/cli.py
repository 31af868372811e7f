"""The ``realgap`` command line.

    realgap <command> [--resume] [--overwrite] [hydra.overrides ...]

Each command composes the Hydra config ``realgap/conf/<command>.yaml`` with the overrides and
calls the function that owns the job. Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from realgap.errors import RealgapError

# command -> (config name, "module:function", help). The function takes (cfg, resume, overwrite).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "expert": ("expert", "realgap.envs.expert_eval:main", "roll out the scripted expert and report its success"),
    "collect": ("collect", "realgap.data.collect:main", "collect scripted-expert demonstrations into zarr"),
    "train": ("train", "realgap.policies.train:main", "train a chunked diffusion policy"),
    "suite": ("suite", "realgap.evaluation.suite:main", "run a rollout suite and write its report"),
    "report": ("report", "realgap.evaluation.report:main", "rebuild a suite's report from its episode store"),
    "compare": ("compare", "realgap.evaluation.compare:main", "two suites paired on their shared seeds, per condition (b - a, McNemar)"),
    "ablate": ("ablate", "realgap.evaluation.ablation_run:main", "leave-one-axis-out DR study: which axis buys transfer, which is a placebo"),
    "grounding": ("grounding", "realgap.evaluation.grounding_run:main", "does the policy follow the named object or a memorized place?"),
    "review": ("review", "realgap.evaluation.review:main", "review flagged episodes in the browser; verdicts to <out>/review/"),
    "verify": ("verify", "realgap.evaluation.store:verify_main", "check every chunk of an episode store (checksums, missing chunks)"),
    "uncertainty": ("uncertainty", "realgap.evaluation.uncertainty_run:main", "calibrate + score chunk-disagreement uncertainty of a suite -> <out>/uncertainty/"),
    "score": ("score", "realgap.evaluation.uncertainty_run:score_main", "score logged episodes offline (--episodes <store> --policy <checkpoint>)"),
}
FLAGS = {"--resume", "--overwrite", "--cfg", "--help"}
FLAG_KEYS = {"policy": "checkpoint"}  # `policy` is the Hydra group of policy configs, so --policy sets `checkpoint`
# per command: override keys that collide with a Hydra group name (`realgap grounding policy=<spec>`)
OVERRIDE_KEYS = {"grounding": {"policy": "policy_spec"}}


def flag_overrides(argv: list[str]) -> list[str]:
    """``--key value`` / ``--key=value`` (e.g. ``realgap score --episodes <store>``) -> the override ``key=value``."""
    out, it = [], iter(argv)
    for a in it:
        if a.startswith("--") and a.split("=")[0] not in FLAGS:
            key, eq, value = a[2:].partition("=")
            out.append(f"{FLAG_KEYS.get(key, key)}={value if eq else next(it, '')}")
        else:
            out.append(a)
    return out


def compose(config_name: str, overrides: list[str]):
    """Compose a config from the packaged tree; Hydra errors become one-line RealgapErrors."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="realgap.conf", version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RealgapError(f"config '{config_name}': {first}") from e


# Mappings whose keys are the user's to choose (each owner validates them): policy/env kwargs, a suite's
# named conditions, a randomization config (realgap.randomization validates every key).
OPEN_KEYS = {"kwargs", "policy_kwargs", "env_kwargs", "conditions", "randomization", "overrides"}
# Keys a config group accepts beyond those its yaml lists: "module:NAME" of a dict of defaults.
EXTRA_KEYS = {"policy": "realgap.policies.diffusion:DEFAULTS"}
_TYPES = ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
          (list, "a list"), (dict, "a mapping"))


def _fits(default, value) -> bool:
    """Whether ``value`` may replace ``default`` (the yaml's value decides the type; null = any)."""
    if default is None or default == "???":
        return True
    if value is None:  # null switches off a text/list/mapping setting, never a number or a switch
        return not isinstance(default, (bool, int, float))
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return not isinstance(value, (dict, list))
    return isinstance(value, type(default))


def _lookup(tree, path: list[str]):
    for part in path:
        if not isinstance(tree, dict) or part not in tree:
            return False, None
        tree = tree[part]
    return True, tree


def _extra_keys(path: list[str]) -> set:
    target = EXTRA_KEYS.get(path[0]) if len(path) == 2 else None
    if not target:
        return set()
    module, attr = target.split(":")
    return set(getattr(importlib.import_module(module), attr))


def _check_value(path: list[str], default, value) -> None:
    field = ".".join(path)
    if not _fits(default, value):
        kind = next(name for t, name in _TYPES if isinstance(default, t))
        raise RealgapError(f"{field}: expected {kind}, got {value!r}")
    if path[-1] in OPEN_KEYS or not isinstance(default, dict) or not isinstance(value, dict):
        return
    for key, sub in value.items():
        if key in default:
            _check_value([*path, key], default[key], sub)
        elif key not in _extra_keys([*path, key]):
            raise RealgapError(f"{field}.{key}: unknown key (known: {', '.join(map(str, default)) or 'none'})")


def check_overrides(config_name: str, overrides: list[str], cfg) -> None:
    """Reject unknown and ill-typed keys: Hydra lets ``+suite.bogus=1`` and ``train.steps=abc`` through.

    Each override is checked against the same config composed without value overrides (group
    choices such as ``suite=...`` or ``policy=...`` kept), so the yaml's own values set the types.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    parsed = OverridesParser.create().parse_overrides(overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="realgap.conf", version_base="1.3"):
            loader = GlobalHydra.instance().config_loader()
            is_group = [bool(loader.get_group_options(o.key_or_group)) for o in parsed]
            base = hydra_compose(config_name=config_name,
                                 overrides=[text for text, group in zip(overrides, is_group) if group])
    finally:
        GlobalHydra.instance().clear()
    base = OmegaConf.to_container(base, resolve=False)
    new = OmegaConf.to_container(cfg, resolve=False)
    for o, group in zip(parsed, is_group):
        path = o.key_or_group.split(".")
        if group or o.is_delete() or any(part in OPEN_KEYS for part in path[:-1]):
            continue  # inside a user's mapping (kwargs, conditions, randomization) its owner validates
        found, default = _lookup(base, path)
        _, value = _lookup(new, path)
        if found:
            _check_value(path, default, value)
        elif path[-1] not in _extra_keys(path):
            known = _lookup(base, path[:-1])[1]
            known = ", ".join(map(str, known)) if isinstance(known, dict) else "none"
            raise RealgapError(f"{'.'.join(path)}: unknown key (known: {known})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="realgap", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, _, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        p.add_argument("--resume", action="store_true", help="continue an interrupted run in the same output")
        p.add_argument("--overwrite", action="store_true", help="replace an existing output")
        p.add_argument("--cfg", action="store_true", help="print the composed config and exit")
        p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. suite=default workers=2")
    args = parser.parse_args(flag_overrides(sys.argv[1:] if argv is None else list(argv)))
    config_name, target, _ = COMMANDS[args.command]
    try:
        if args.resume and args.overwrite:
            raise RealgapError("--resume and --overwrite exclude each other")
        renames = OVERRIDE_KEYS.get(args.command, {})
        overrides = [renames[o.split("=")[0]] + "=" + o.partition("=")[2] if o.split("=")[0] in renames else o
                     for o in args.overrides]
        cfg = compose(config_name, overrides)
        check_overrides(config_name, overrides, cfg)
        if args.cfg:
            from omegaconf import OmegaConf

            print(OmegaConf.to_yaml(cfg))
            return 0
        module, func = target.split(":")
        result = getattr(importlib.import_module(module), func)(cfg, resume=args.resume, overwrite=args.overwrite)
        return int(result or 0)
    except RealgapError as e:
        print(f"realgap {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"realgap {args.command}: interrupted; completed work is kept (rerun with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
