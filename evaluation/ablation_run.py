"""``realgap ablate``: plan and run a leave-one-axis-out DR study, resumably, then write its report.

    realgap ablate [ablation=quick|full] [workers=N] [executor=local|ray|inline] [out=...] [--resume|--overwrite]

The plan is a DAG of jobs, each one call of an existing command's function with a composed config:

- ``collect``  (``realgap.data.collect.main``): demonstrations under one variant's training DR;
- ``train``    (``realgap.policies.train.main``): one (variant, training seed);
- ``eval``     (``realgap.evaluation.suite.run_suite``): one checkpoint on nominal / training DR / target;
- ``sensitivity``: pi_all (first seed) with each axis alone and all-but-one at evaluation time;
- ``breakdown``: the scripted expert on the target with each of its effects alone / left out.

Work is content-addressed: a collect job by its data + DR config, a training job by the digest of the
demonstrations it reads (``ablation.training_data_digest``) + its training config, an eval job by its
checkpoint + suite. Two variants whose demos are bit-identical (the state policy never sees lighting,
appearance or camera) therefore share one checkpoint: pi_-a *is* pi_all, checked by digest.

A job is finished when its folder holds ``DONE.json`` (written last, atomically); ``--resume`` skips
finished jobs and continues unfinished ones with the command's own resume. Jobs run one per core in a
spawn process pool (``executor=local``), on Ray (``executor=ray``; training jobs ask for a GPU when the
cluster has one), or in this process (``inline``). Output layout::

    <out>/study.json            config and fingerprint (checked on --resume)
    <out>/manifest.json         every job request -> its content key, folder, status, wall time
    <out>/jobs/<kind>-<key>/    one folder per job (its outputs and DONE.json)
    <out>/logs/<kind>-<key>.log its stdout/stderr
    <out>/report/               index.html, ablation.json (rebuilt from the jobs' outputs)
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import copy
import json
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from realgap.errors import RealgapError

DONE = "DONE.json"
STUDY = "study.json"
MANIFEST = "manifest.json"
EXECUTORS = ("local", "inline", "ray")
# run-time knobs that never change results: allowed to differ on --resume
RUNTIME_KEYS = ("executor", "workers", "ray_address", "torch_threads", "out", "report_only")


# ------------------------------------------------------------------------------------------ helpers
def _plain(cfg) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else copy.deepcopy(cfg)


def digest(obj: Any) -> str:
    from .plan import digest as plan_digest

    return plan_digest(obj)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def _compose(name: str, overrides: list[str], field: str) -> dict:
    from realgap.cli import compose

    try:
        return _plain(compose(name, overrides))
    except RealgapError as e:
        raise RealgapError(f"{field}: {e}") from e


def load_randomization(name: str, field: str) -> dict:
    from .plan import load_randomization as load

    return load(name, field)


# ------------------------------------------------------------------------------ DR variants
def axis_params() -> dict:
    from realgap.randomization.randomizer import AXIS_PARAMS

    return AXIS_PARAMS


def validated(rand: dict, field: str) -> dict:
    from realgap.randomization.config import validate

    try:
        return validate(rand, axis_params())
    except RealgapError as e:
        raise RealgapError(f"{field}: {e}") from e


def without_axis(rand: dict, axis: str) -> dict:
    out = copy.deepcopy(rand)
    out["axes"][axis]["enabled"] = False
    out["name"] = f"{rand.get('name', 'dr')}-{axis}"
    return out


def only_axes(rand: dict, keep: list[str], name: str) -> dict:
    out = copy.deepcopy(rand)
    for axis, axis_cfg in out["axes"].items():
        axis_cfg["enabled"] = axis in keep and bool(axis_cfg.get("enabled"))
    out["name"] = name
    return out


def scale_axis(rand: dict, axis: str, scale: float) -> dict:
    """``rand`` with one axis's ranges scaled about nominal (the global ``scale`` arithmetic, one axis)."""
    from realgap.randomization.config import scaled

    out = validated(copy.deepcopy(rand), "ablation.sweep")
    params = axis_params()[axis]
    global_scale = out["scale"]
    for key, value in list(out["axes"][axis].items()):
        if key in params:
            out["axes"][axis][key] = scaled(params[key][0], value, scale)
    out["scale"] = global_scale
    out["name"] = f"{rand.get('name', 'dr')}-{axis}x{scale:g}"
    return out


def enabled_axes(rand: dict) -> list[str]:
    return [a for a, c in (rand.get("axes") or {}).items() if c.get("enabled")]


# ------------------------------------------------------------------------------------ the plan
@dataclass
class Request:
    """One job of the DAG. Train/eval requests learn their content key once their inputs exist."""

    id: str
    kind: str  # collect | train | eval | sensitivity | breakdown
    cfg: dict
    deps: list[str] = field(default_factory=list)
    priority: int = 0
    meta: dict = field(default_factory=dict)
    key: str | None = None
    folder: str | None = None
    status: str = "pending"  # pending | running | done | failed
    result: dict = field(default_factory=dict)
    alias_of: str | None = None


@dataclass
class Study:
    cfg: dict
    out: Path
    base: dict  # validated training DR of pi_all
    target: dict
    variants: dict[str, dict]  # name -> {randomization, role, axis, scale}
    requests: dict[str, Request]


def _validate_top(cfg: dict) -> dict:
    a = cfg.get("ablation")
    if not isinstance(a, dict):
        raise RealgapError("ablation: missing (pick a preset with ablation=quick|full)")
    for key in ("name", "base_randomization", "target", "axes", "data", "policy", "train", "eval", "stats"):
        if key not in a:
            raise RealgapError(f"ablation.{key}: missing")
    if cfg.get("executor", "local") not in EXECUTORS:
        raise RealgapError(f"executor: expected one of {', '.join(EXECUTORS)}, got {cfg.get('executor')!r}")
    from .suite import resolve_workers

    resolve_workers(cfg.get("workers"))
    threads = cfg.get("torch_threads", 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise RealgapError(f"torch_threads: expected an integer >= 1, got {threads!r}")
    if not cfg.get("out"):
        raise RealgapError("out: missing (the study's output folder)")
    return a


def build_study(cfg: dict) -> Study:
    """Validate the whole study config and plan every job. Raises one-line RealgapErrors; writes nothing."""
    a = _validate_top(cfg)
    known = list(axis_params())
    base = validated(load_randomization(a["base_randomization"], "ablation.base_randomization"), "ablation.base_randomization")
    axes = a["axes"]
    if not isinstance(axes, list) or not axes:
        raise RealgapError("ablation.axes: expected a non-empty list of DR axes to leave out")
    for axis in axes:
        if axis not in known:
            raise RealgapError(f"ablation.axes: unknown axis '{axis}' (known: {', '.join(known)})")
        if not base["axes"][axis]["enabled"]:
            raise RealgapError(f"ablation.axes: '{axis}' is disabled in base randomization "
                               f"'{a['base_randomization']}', so leaving it out changes nothing")
    if len(set(axes)) != len(axes):
        raise RealgapError(f"ablation.axes: duplicate axes in {axes}")
    target = validated(load_randomization(a["target"], "ablation.target"), "ablation.target")
    if not enabled_axes(target):
        raise RealgapError(f"ablation.target: '{a['target']}' enables no axis, so it equals nominal (nothing to transfer to)")
    seeds = a["train"].get("seeds")
    if not isinstance(seeds, list) or len(set(seeds)) < 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise RealgapError(f"ablation.train.seeds: need >= 2 distinct integer seeds >= 0 for a CI over training seeds, got {seeds!r}")
    margin = a["stats"].get("margin")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 < margin < 1:
        raise RealgapError(f"ablation.stats.margin: expected a number in (0, 1), got {margin!r}")
    n_eval = (a["eval"].get("seeds") or {}).get("n")
    if isinstance(n_eval, bool) or not isinstance(n_eval, int) or n_eval < 2:
        raise RealgapError(f"ablation.eval.seeds.n: expected an integer >= 2, got {n_eval!r}")
    look = (a.get("sequential") or {}).get("look_every", 10)
    if isinstance(look, bool) or not isinstance(look, int) or not 1 <= look <= n_eval:
        raise RealgapError(f"ablation.sequential.look_every: expected an integer in [1, {n_eval}], got {look!r}")

    variants: dict[str, dict] = {"all": {"randomization": base, "role": "all", "axis": None, "scale": 1.0}}
    for axis in axes:
        variants[f"-{axis}"] = {"randomization": without_axis(base, axis), "role": "leave_out", "axis": axis, "scale": None}
    if a.get("train_none", True):
        variants["none"] = {"randomization": only_axes(base, [], "none"), "role": "none", "axis": None, "scale": 0.0}
    sweep = a.get("sweep") or {}
    if sweep.get("axis"):
        axis = sweep["axis"]
        if axis not in known:
            raise RealgapError(f"ablation.sweep.axis: unknown axis '{axis}' (known: {', '.join(known)})")
        if not base["axes"][axis]["enabled"]:
            raise RealgapError(f"ablation.sweep.axis: '{axis}' is disabled in base randomization '{a['base_randomization']}'")
        scales = sweep.get("scales")
        if not isinstance(scales, list) or not scales:
            raise RealgapError("ablation.sweep.scales: expected a list of numbers >= 0")
        for s in scales:
            if isinstance(s, bool) or not isinstance(s, (int, float)) or s < 0:
                raise RealgapError(f"ablation.sweep.scales: expected numbers >= 0, got {s!r}")
            variants[f"{axis}x{s:g}"] = {"randomization": scale_axis(base, axis, float(s)), "role": "sweep",
                                         "axis": axis, "scale": float(s)}
    for name, v in variants.items():
        validated(v["randomization"], f"ablation variant '{name}'")

    out = Path(cfg["out"]).expanduser()
    study = Study(cfg, out, base, target, variants, {})
    _plan_jobs(study, a, seeds)
    return study


def _data_overrides(a: dict) -> list[str]:
    return [f"data={a['data']['config']}"]


def _plan_jobs(study: Study, a: dict, seeds: list[int]) -> None:
    jobs_dir = study.out / "jobs"
    collect_base = _compose("collect", _data_overrides(a), "ablation.data.config")
    for key, value in (a["data"].get("overrides") or {}).items():
        collect_base["data"][key] = value
    train_base = _compose("train", [*_data_overrides(a), f"policy={a['policy']}"], "ablation.policy")
    train_base["data"] = copy.deepcopy(collect_base["data"])
    for key, value in (a["train"].get("overrides") or {}).items():
        if key not in train_base["train"]:
            raise RealgapError(f"ablation.train.overrides.{key}: unknown training setting")
        train_base["train"][key] = value
    train_base["train"]["torch_threads"] = int(study.cfg.get("torch_threads", 1))
    suite_base = _compose("suite", [], "suite")
    ev = a["eval"]
    eval_conditions = {"nominal": {"randomization": None}, "train_dr": {"randomization": study.base},
                       "target": {"randomization": study.target}}

    def suite_cfg(policy_spec: str, conditions: dict, seeds_cfg: dict, out: str) -> dict:
        s = copy.deepcopy(suite_base)
        s["suite"].update({"name": Path(out).name, "policy": {"spec": policy_spec, "kwargs": {}},
                           "conditions": conditions, "seeds": dict(seeds_cfg), "record_frames": "none",
                           "frames_first_seeds": 0, "batch_envs": int(ev.get("batch_envs", 8)), "baseline": "nominal"})
        if a.get("env_kwargs"):
            s["suite"]["env"]["kwargs"].update(a["env_kwargs"])
        s.update({"out": out, "executor": "inline", "workers": 1, "conditions": None})
        s["report"] = {"enabled": True, "videos_per_condition": 0, "fps": 20,
                       "bootstrap_n": int(a["stats"].get("n_boot", 2000)), "bootstrap_seed": 0}
        return s

    reqs = study.requests
    # collect: one per distinct DR config (the sweep's scale 1 is pi_all's config)
    for name, v in study.variants.items():
        c = copy.deepcopy(collect_base)
        c["randomization"] = v["randomization"]
        key = digest({"data": {k: val for k, val in c["data"].items() if k not in ("path", "name")},
                      "randomization": {k: val for k, val in c["randomization"].items() if k != "name"}})
        rid = f"collect:{key}"
        folder = jobs_dir / f"collect-{key}"
        c["data"]["path"] = str(folder / "demos.zarr")
        if rid not in reqs:
            reqs[rid] = Request(rid, "collect", c, priority=3, key=key, folder=str(folder))
        v["collect"] = rid
    # train + eval per (variant, seed); seed-major order so every variant gets its first seed early
    for i, seed in enumerate(seeds):
        for name, v in study.variants.items():
            t = copy.deepcopy(train_base)
            t["train"]["seed"] = int(seed)
            tid = f"train:{name}:{seed}"
            # main variants' first seeds first, the sweep last: a cut-short study still has the main result
            priority = (1 - i) if v["role"] != "sweep" else (-2 - i)
            reqs[tid] = Request(tid, "train", t, deps=[v["collect"]], priority=priority,
                                meta={"variant": name, "seed": int(seed)})
            eid = f"eval:{name}:{seed}"
            reqs[eid] = Request(eid, "eval", suite_cfg("", eval_conditions, ev["seeds"], ""), deps=[tid],
                                priority=2, meta={"variant": name, "seed": int(seed)})
    sens = a.get("sensitivity") or {}
    if sens.get("enabled", True):
        conds: dict[str, dict] = {"nominal": {"randomization": None}}
        for axis in enabled_axes(study.base):
            conds[f"only {axis}"] = {"randomization": only_axes(study.base, [axis], f"only-{axis}")}
        for axis in enabled_axes(study.base):
            conds[f"all but {axis}"] = {"randomization": without_axis(study.base, axis)}
        conds["all"] = {"randomization": study.base}
        folder = jobs_dir / "sensitivity"
        reqs["sensitivity"] = Request("sensitivity", "sensitivity",
                                      suite_cfg("", conds, sens.get("seeds") or ev["seeds"], str(folder)),
                                      deps=[f"train:all:{seeds[0]}"], priority=-1, key="sensitivity", folder=str(folder))
    brk = a.get("breakdown") or {}
    if brk.get("enabled", True):
        conds = {"nominal": {"randomization": None}, "target": {"randomization": study.target}}
        for effect, rand in target_effects(study.target, brk.get("split") or {}).items():
            conds[f"only {effect}"] = {"randomization": rand["alone"]}
            conds[f"target without {effect}"] = {"randomization": rand["without"]}
        folder = jobs_dir / "breakdown"
        reqs["breakdown"] = Request("breakdown", "breakdown",
                                    suite_cfg("expert", conds, brk.get("seeds") or ev["seeds"], str(folder)),
                                    priority=4, key="breakdown", folder=str(folder))


EFFECT_KINDS = ("offset", "factor", "prob", "std", "steps", "vec3")  # kinds that set an effect's size (not targets/modes)


def target_effects(target: dict, split: dict | None = None) -> dict[str, dict]:
    """The target's effects: one per enabled axis, or one per parameter group listed in ``split``
    (``{axis: {effect: [params]}}``, e.g. sensing -> latency / noise). Each effect gives the nominal
    scene with only that effect ("alone") and the target without it ("without"); a parameter that is
    not part of the effect is set to its nominal default."""
    params = axis_params()
    split = split or {}
    effects = {}
    for axis in enabled_axes(target):
        numeric = [k for k, (kind, _) in params[axis].items() if kind in EFFECT_KINDS]
        groups = split.get(axis) or {axis: numeric}
        for effect, keys in groups.items():
            for k in keys:
                if k not in numeric:
                    raise RealgapError(f"ablation.breakdown.split.{axis}.{effect}: unknown parameter '{k}' "
                                       f"(known: {', '.join(numeric)})")
            if effect in effects:
                raise RealgapError(f"ablation.breakdown.split.{axis}.{effect}: effect name used twice")
            alone = copy.deepcopy(target)
            for other in alone["axes"]:
                alone["axes"][other]["enabled"] = other == axis
            without = copy.deepcopy(target)
            for k in numeric:
                if k in keys:
                    without["axes"][axis][k] = copy.deepcopy(params[axis][k][1])
                else:
                    alone["axes"][axis][k] = copy.deepcopy(params[axis][k][1])
            if set(keys) == set(numeric):
                without["axes"][axis]["enabled"] = False
            alone["name"], without["name"] = f"{target['name']}-only-{effect}", f"{target['name']}-without-{effect}"
            effects[effect] = {"axis": axis, "params": list(keys), "alone": alone, "without": without}
    return effects


# ------------------------------------------------------------------------------------ job bodies
def _threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)


def _exit_with_parent() -> None:
    """In a pool worker: exit when the study process dies (kill -9 leaves pool workers running, and a
    resumed study must not find a second writer in a job's folder)."""
    import threading

    if mp.current_process().name == "MainProcess":
        return
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def run_job(kind: str, cfg: dict, folder: str, torch_threads: int = 1) -> dict:
    """Run one job to completion in this process; returns its result (also written to DONE.json).

    An unfinished earlier attempt in ``folder`` is continued with the command's own --resume.
    """
    if not any(t.name == "exit-with-parent" for t in __import__("threading").enumerate()):
        _exit_with_parent()
    _threads(torch_threads)
    folder_p = Path(folder)
    folder_p.mkdir(parents=True, exist_ok=True)
    started = time.time()
    logs = folder_p.parent.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{folder_p.name}.log", "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        print(f"=== {kind} {folder} started {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
        result: dict = {"kind": kind}
        if kind == "collect":
            from realgap.data.collect import main as collect

            from .ablation import training_data_digest

            path = Path(cfg["data"]["path"])
            collect(OmegaConf.create(cfg), resume=path.exists(), overwrite=False)
            result["data_digest"] = training_data_digest(path)
            from realgap.data.replay_buffer import ReplayBuffer

            buf = ReplayBuffer.open(path)
            result["n_episodes"] = buf.n_episodes
            result["collect"] = dict(buf.root.attrs.get("collect", {}))
        elif kind == "train":
            from realgap.policies.train import main as train

            resume = (folder_p / "train_state.json").exists()
            cfg = copy.deepcopy(cfg)
            cfg["out_dir"] = str(folder_p)
            # killed before its first full checkpoint: start clean
            train(OmegaConf.create(cfg), resume=resume, overwrite=not resume)
        elif kind in ("eval", "sensitivity", "breakdown"):
            from .report import build_report
            from .store import SUITE_FILE
            from .suite import run_suite

            out = Path(cfg["out"])
            resume = (out / SUITE_FILE).exists()
            run_suite(cfg, resume=resume, overwrite=(not resume and out.exists()), progress=True)
            options = {k: v for k, v in cfg["report"].items() if k != "enabled"}
            result["report"] = str(build_report(out, options))
        else:
            raise ValueError(f"unknown job kind {kind}")
        result["wall_s"] = time.time() - started
        print(f"=== {kind} done in {result['wall_s']:.1f} s", flush=True)
    _write_json(folder_p / DONE, result)
    return result


def read_done(folder: str | Path) -> dict | None:
    path = Path(folder) / DONE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # a torn marker: the job reruns (and resumes its own output)


# ------------------------------------------------------------------------------------ the runner
def _resolve(study: Study, req: Request) -> None:
    """Fix a train/eval request's content key and folder from its finished inputs."""
    jobs = study.out / "jobs"
    if req.kind == "train":
        dep = study.requests[req.deps[0]]
        t = req.cfg
        t["data"]["path"] = dep.cfg["data"]["path"]
        d = t["data"]
        req.key = digest({"data_digest": dep.result["data_digest"],
                          "train": {k: v for k, v in t["train"].items() if k != "torch_threads"},
                          "policy": t["policy"],
                          "env": {k: d.get(k) for k in ("env_id", "obs_mode", "image_size", "cameras", "max_episode_steps")}})
        req.folder = str(jobs / f"train-{req.key}")
        req.cfg["out_dir"] = req.folder
    elif req.kind in ("eval", "sensitivity"):
        dep = study.requests[req.deps[0]]
        req.cfg["suite"]["policy"]["spec"] = dep.folder
        if req.kind == "eval":
            from .plan import build_plan

            plan = build_plan(req.cfg["suite"], None)
            req.key = digest({"policy": dep.key, "suite": plan.fingerprint()})
            req.folder = str(jobs / f"eval-{req.key}")
            req.cfg["suite"]["name"] = f"eval-{req.key}"
        req.cfg["out"] = req.folder


def write_manifest(study: Study) -> None:
    rows = {r.id: {"kind": r.kind, "key": r.key, "folder": r.folder, "status": r.status, "deps": r.deps,
                   "meta": r.meta, "alias_of": r.alias_of, "result": r.result} for r in study.requests.values()}
    _write_json(study.out / MANIFEST, {"variants": {n: {k: v for k, v in var.items() if k != "randomization"}
                                                    for n, var in study.variants.items()}, "jobs": rows})


class _Pool:
    """Submit jobs to the chosen executor; results come back as concurrent futures."""

    def __init__(self, executor: str, workers: int, ray_address: str | None):
        self.executor, self.workers = executor, workers
        self.pool = None
        self._ray_started = False
        if executor == "local":
            self.pool = cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
        elif executor == "ray":
            try:
                import ray
            except ImportError as e:
                raise RealgapError("executor=ray: ray is not installed (pip install 'realgap[ray]')") from e
            if not ray.is_initialized():
                if ray_address:
                    ray.init(address=ray_address, log_to_driver=False)
                else:
                    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
                self._ray_started = True
            self.ray = ray
            self.gpus = ray.cluster_resources().get("GPU", 0) > 0

    def submit(self, req: Request, torch_threads: int) -> cf.Future:
        args = (req.kind, req.cfg, req.folder, torch_threads)
        if self.executor == "local":
            return self.pool.submit(run_job, *args)
        if self.executor == "ray":
            gpus = 1 if (req.kind == "train" and self.gpus) else 0
            return self.ray.remote(num_cpus=1, num_gpus=gpus)(run_job).remote(*args).future()
        future: cf.Future = cf.Future()
        try:
            future.set_result(run_job(*args))
        except BaseException as e:  # noqa: BLE001  (handed to the caller like a pool's future)
            future.set_exception(e)
        return future

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        if self._ray_started:
            self.ray.shutdown()


def run_study(study: Study, executor: str, workers: int, ray_address: str | None = None, torch_threads: int = 1,
              progress: bool = True) -> None:
    reqs = study.requests
    owners: dict[tuple[str, str], str] = {}  # (kind, content key) -> request id that runs it
    for r in reqs.values():
        if r.key and r.kind == "collect":
            owners[(r.kind, r.key)] = r.id
    running: dict[cf.Future, Request] = {}
    pool = _Pool(executor, workers, ray_address)
    bar = tqdm(total=len(reqs), desc=f"ablate {study.cfg['ablation']['name']}", unit="job", disable=not progress,
               dynamic_ncols=True)

    def finish(req: Request, result: dict) -> None:
        req.status, req.result = "done", result
        bar.update(1)
        bar.set_postfix_str(f"{req.id} ({result.get('wall_s', 0):.0f} s)" if not req.alias_of else f"{req.id} = {req.alias_of}")

    try:
        while any(r.status not in ("done",) for r in reqs.values()):
            progressed = False
            ready = [r for r in reqs.values() if r.status == "pending" and all(reqs[d].status == "done" for d in r.deps)]
            for req in sorted(ready, key=lambda r: -r.priority):
                if req.key is None or req.kind == "sensitivity":
                    _resolve(study, req)
                owner = owners.setdefault((req.kind, req.key), req.id)
                if owner != req.id:  # same content as another request: share its output
                    req.alias_of, req.folder = owner, reqs[owner].folder
                    req.cfg = reqs[owner].cfg
                    if reqs[owner].status == "done":
                        finish(req, reqs[owner].result)
                        progressed = True
                    continue
                done = read_done(req.folder)
                if done is not None:  # --resume: finished before
                    finish(req, done)
                    progressed = True
                    continue
                if len(running) < workers:
                    req.status = "running"
                    running[pool.submit(req, torch_threads)] = req
                    progressed = True
            if progressed:
                write_manifest(study)
                continue
            if not running:
                waiting = [r.id for r in reqs.values() if r.status != "done"]
                raise RuntimeError(f"ablate: no job can run; waiting: {waiting[:5]}")
            finished, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
            for future in finished:
                req = running.pop(future)
                try:
                    result = future.result()
                except RealgapError as e:
                    req.status = "failed"
                    write_manifest(study)
                    raise RealgapError(f"job {req.id} ({req.folder}): {e}") from e
                finish(req, result)
            write_manifest(study)
    finally:
        bar.close()
        pool.close()
    # alias requests whose owner finished in the last round
    for r in reqs.values():
        if r.alias_of and r.status != "done":
            finish(r, reqs[r.alias_of].result)
    write_manifest(study)


# ------------------------------------------------------------------------------------ entry point
def fingerprint(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in RUNTIME_KEYS}


def prepare_output(study: Study, resume: bool, overwrite: bool) -> None:
    from realgap.outputs import claim_output, prepare_dir

    from .store import _diff_field

    out = study.out
    fp = json.loads(json.dumps(fingerprint(study.cfg), default=str))
    if claim_output(out, resume, overwrite, marker=STUDY, what="study") == "resume":
        try:
            old = json.loads((out / STUDY).read_text())["fingerprint"]
        except (OSError, ValueError, KeyError) as e:
            raise RealgapError(f"{out / STUDY}: unreadable, so {out} is not a study to resume") from e
        if old != fp:
            raise RealgapError(f"{out / STUDY}: the study differs from the one being resumed (field '{_diff_field(old, fp)}')")
        return
    prepare_dir(out, resume, overwrite)
    _write_json(out / STUDY, {"config": study.cfg, "fingerprint": fp, "digest": digest(fp)})


def main(cfg, resume: bool = False, overwrite: bool = False) -> int:
    cfg = _plain(cfg)
    if resume and overwrite:
        raise RealgapError("--resume and --overwrite exclude each other")
    study = build_study(cfg)  # every check before anything is written or simulated
    if cfg.get("report_only"):  # e.g. a study still running or cut short: report what has finished
        if not (study.out / MANIFEST).exists():
            raise RealgapError(f"out: {study.out / MANIFEST} missing (no study to report on)")
        from .ablation import build_report

        print(f"report: {build_report(study.out)}")
        return 0
    _preflight_env(study)
    lock = _lock(study.out)  # held until this process ends (released by the kernel even on kill -9)
    prepare_output(study, resume, overwrite)
    from .suite import resolve_workers

    workers = resolve_workers(cfg.get("workers"))
    t0 = time.time()
    run_study(study, cfg.get("executor", "local"), workers, cfg.get("ray_address"), int(cfg.get("torch_threads", 1)))
    print(f"ablate: all {len(study.requests)} jobs finished in {time.time() - t0:.0f} s (this run)")
    from .ablation import build_report

    index = build_report(study.out)
    print(f"report: {index}")
    lock.close()
    return 0


def _lock(out: Path):
    import fcntl

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fh = open(out.parent / f".{out.name}.lock", "w")  # beside the study: --overwrite may delete the folder
    except OSError as e:
        raise RealgapError(f"out: {out} is not writable ({e.strerror or e})") from e
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        fh.close()
        raise RealgapError(f"out: another `realgap ablate` is running on {out}") from e
    return fh


def _preflight_env(study: Study) -> None:
    """Build the env once under the base and target DR (catches env/DR config errors before any job)."""
    from realgap.data.collect import make_env

    collect = next(r for r in study.requests.values() if r.kind == "collect")
    for name, rand in (("ablation.base_randomization", study.base), ("ablation.target", study.target)):
        try:
            env = make_env(OmegaConf.create(collect.cfg["data"]), rand)
            env.close()
        except RealgapError as e:
            raise RealgapError(f"{name}: {e}") from e
