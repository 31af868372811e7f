"""``realgap uncertainty`` and ``realgap score``: sample/score chunks, calibrate, measure the detector.

    realgap uncertainty out=<suite> [k=8] [alpha=0.1] [calibration.seeds.start=2000000 calibration.seeds.n=60]
    realgap score --episodes <store> --policy <checkpoint> [--calibration <calibration.json>] [out=<dir>]

``uncertainty``: runs a calibration suite of nominal episodes on seeds disjoint from the suite's
(``<out>/uncertainty/calibration/``, chunks recorded online), scores them and the suite's episodes
(stored ``data/chunks``, or re-sampled from the stored observations when the suite did not record
them), fits the split-conformal threshold on the calibration successes, and writes
``<out>/uncertainty/{calibration,episodes,metrics}.json`` and ``index.html``. Schema:
``realgap.evaluation.uncertainty``.

``score``: the same scores for any store in the replay-buffer layout (e.g. a real robot's log), always
re-sampled from the logged observations; applies a stored threshold after checking that it was
computed for this checkpoint (digest). The pure scoring/statistics live in ``uncertainty.py``.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from realgap import seeding
from realgap.envs import is_image_key
from realgap.errors import RealgapError
from realgap.outputs import prepare_dir

from . import uncertainty as U
from .policy_loader import checkpoint_path
from .store import STORE_DIR, SUITE_FILE, open_store

SCHEMA = "realgap.uncertainty/1"
DENOISE_TIMESTEPS = (5, 15, 30, 50, 70, 90)  # probe steps of the Diff-DAgger-style loss


def _plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg or {})


def policy_digest(path: Path) -> str:
    """sha256 of the checkpoint's policy.json and weights: what a stored threshold is valid for."""
    h = hashlib.sha256()
    for name in ("policy.json", "model.safetensors"):
        f = path / name
        if not f.exists():
            raise RealgapError(f"{path}: not a realgap checkpoint (no {name})")
        h.update(name.encode())
        h.update(f.read_bytes())
    return "sha256:" + h.hexdigest()


def _checkpoint(spec: str, field: str) -> Path:
    path = checkpoint_path(str(spec)) if spec else None
    if path is None:
        raise RealgapError(f"{field}: '{spec}' is not a realgap checkpoint folder (scores need the diffusion model)")
    policy_digest(path)
    return path


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise RealgapError(f"k: {k!r} samples per replan; chunk disagreement needs an integer K >= 2")
    return k


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, allow_nan=False, default=_jsonable))
    os.replace(tmp, path)


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x).__name__)


def _finite(x):
    """JSON has no NaN/inf: map them to null, recursively."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


# ------------------------------------------------------------------------- model side
class Scorer:
    """Computes every per-replan score of an episode with one diffusion checkpoint."""

    def __init__(self, path: Path, k: int, chunk_choice: str = "first"):
        from realgap.policies import load_diffusion

        self.path, self.k, self.chunk_choice = path, _check_k(k), chunk_choice
        self.model = load_diffusion(path)
        self.digest = policy_digest(path)
        m = self.model
        self.keys = [*m.state_keys, *m.image_keys]
        self.start, self.n_exec = m.n_obs_steps - 1, m.n_action_steps
        g = torch.Generator().manual_seed(seeding.derive_seed(0, "denoise_probe"))
        self.probe_noise = torch.randn((len(DENOISE_TIMESTEPS), m.horizon, m.action_dim), generator=g)
        self.gauss: tuple[np.ndarray, np.ndarray] | None = None

    def check_store(self, store, where: str) -> None:
        missing = [k for k in self.keys if k not in store.keys]
        if missing:
            raise RealgapError(f"{where}: the store lacks observation keys {missing} that the policy needs "
                               f"(it has {store.keys})")
        shapes = self.model.shapes
        for k in self.keys:
            have = tuple(store.root["data"][k].shape[1:])
            if have != tuple(shapes[k]):
                raise RealgapError(f"{where}: data/{k} has shape {have}, the policy was trained on {tuple(shapes[k])}")

    def _batch(self, steps: dict, instruction: str, replan_steps) -> dict:
        from realgap.policies.executor import history_rows

        rows = [history_rows(int(t), self.model.n_obs_steps) for t in replan_steps]
        batch = {k: np.stack([steps[k][r] for r in rows]) for k in self.keys}
        batch["instruction"] = [instruction] * len(rows)
        return batch

    @torch.no_grad()
    def episode(self, steps: dict, info: dict, chunks: np.ndarray | None, replan_steps: list[int],
                noise_seed: int | None = None) -> dict:
        """Traces of every score over the replans; ``chunks`` None = re-sample them (``noise_seed``: other noise)."""
        from realgap.policies.executor import sample_at

        m = self.model
        instruction = _instruction(info)
        seed = int(info.get("seed", 0))
        if chunks is None:
            chunks = sample_at(m, steps, instruction, replan_steps, seed if noise_seed is None else noise_seed, self.k,
                               chunk_choice=self.chunk_choice)
        norm = m.normalizer.normalize("action", torch.as_tensor(np.asarray(chunks, np.float32))).numpy()
        traces = {name: [] for name in U.ALL_SCORES}
        for r, c in enumerate(norm):
            for name, v in U.chunk_scores(c, self.start, self.n_exec).items():
                traces[name].append(v)
            traces["stac"].append(U.overlap_mmd(norm[r - 1], c, replan_steps[r] - replan_steps[r - 1]) if r else math.nan)
        batch = m.to_tensors(self._batch(steps, instruction, replan_steps))
        cond = m.encode(batch)
        traces["denoise_loss"] = self._denoise_loss(torch.as_tensor(norm[:, 0]).float(), cond).tolist()
        traces["random"] = U.random_scores(seed, len(replan_steps)).tolist()
        emb = cond.numpy().astype(np.float64)
        traces["novelty"] = (U.mahalanobis(emb, *self.gauss).tolist() if self.gauss is not None
                             else [math.nan] * len(replan_steps))
        return {"traces": {k: np.asarray(v, np.float64) for k, v in traces.items()}, "embeddings": emb,
                "chunks": chunks}

    def _denoise_loss(self, x0: torch.Tensor, cond: torch.Tensor) -> np.ndarray:
        """Diff-DAgger-style: the denoiser's epsilon error on the executed chunk at fixed noise/timesteps."""
        r, n = x0.shape[0], len(DENOISE_TIMESTEPS)
        t = torch.tensor(DENOISE_TIMESTEPS).repeat(r)
        noise = self.probe_noise.repeat(r, 1, 1)
        x = self.model.train_scheduler.add_noise(x0.repeat_interleave(n, 0), noise, t)
        eps = self.model.denoiser(x, t, cond.repeat_interleave(n, 0))
        return ((eps - noise) ** 2).mean(dim=(1, 2)).reshape(r, n).mean(1).numpy()


def _instruction(info: dict) -> str:
    task = info.get("task") or {}
    return str(info.get("instruction") or (task.get("instruction") if isinstance(task, dict) else "") or "")


def _length(steps: dict, info: dict) -> int:
    if "length" in info:
        return int(info["length"])
    if "action" in steps:
        return int(np.isfinite(np.asarray(steps["action"], np.float64).reshape(len(steps["action"]), -1)).all(1).sum())
    return len(next(iter(steps.values()))) - 1


def _failure_step(info: dict, length: int) -> int | None:
    """Step at which the failure became certain: the env's failure event if it gave one, else the end."""
    if info.get("success") is not False:
        return None
    ev = info.get("failure_event")
    for v in ((ev or {}).get("step") if isinstance(ev, dict) else None, info.get("failure_step")):
        if v is not None:
            return int(v)
    return int(length)


def score_store(scorer: Scorer, store, *, resample: bool, desc: str, indices=None) -> list[dict]:
    """Score every episode of ``store``; stored chunks are used unless ``resample`` (or absent / other K)."""
    has_chunks = "chunks" in store.keys
    stored_k = int(store.root["data"]["chunks"].shape[1]) if has_chunks else None
    out = []
    keys = scorer.keys + (["chunks"] if has_chunks else []) + (["action"] if "action" in store.keys else [])
    idx = range(store.n_episodes) if indices is None else indices
    for i in tqdm(idx, desc=desc, unit="ep", dynamic_ncols=True):
        steps, info = store.episode(i, keys), store.episode_info(i)
        length = _length(steps, info)
        if has_chunks:
            replan = [int(t) for t in np.flatnonzero(np.isfinite(steps["chunks"].reshape(len(steps["chunks"]), -1)).all(1))]
        else:
            replan = list(range(0, max(length, 1), scorer.n_exec))
        replan = [t for t in replan if t < max(length, 1)]
        if not replan:
            continue
        use_stored = has_chunks and not resample and stored_k == scorer.k
        res = scorer.episode(steps, info, steps["chunks"][replan] if use_stored else None, replan)
        out.append({"episode": int(i), "info": info, "length": length, "replan_steps": replan,
                    "failure_step": _failure_step(info, length), "chunks_source": "stored" if use_stored else "resampled",
                    **res, "steps": steps})
    return out


# ------------------------------------------------------------------------- calibration
def calibrate(scored: list[dict], alpha: float, score: str, how: str, q: float) -> dict:
    succ = [e for e in scored if e["info"].get("success") is True]
    thresholds, ranks = {}, {}
    for name in U.ALL_SCORES:
        vals = [U.aggregate(e["traces"][name], how, q) for e in succ]
        thresholds[name], ranks[name] = U.conformal_threshold(vals, alpha, "calibration")
    return {"threshold": thresholds[score], "n": len(succ), "rank": ranks[score], "thresholds": thresholds,
            "calibration_seeds": sorted(int(e["info"]["seed"]) for e in succ)}


def episode_record(e: dict, score: str, threshold: float, how: str, q: float) -> dict:
    info, tr = e["info"], e["traces"][score]
    alarm = U.alarm_step(e["replan_steps"], tr, threshold)
    success = info.get("success")
    return {
        "episode": e["episode"], "condition": info.get("condition", ""), "seed": info.get("seed"),
        "success": None if success is None else bool(success),
        "termination_reason": info.get("termination_reason", "") or "",
        "length": e["length"], "failure_step": e["failure_step"],
        "failure_type": failure_type(info) if success is False else None,
        "score": U.aggregate(tr, how, q),
        "scores": {n: U.aggregate(e["traces"][n], how, q) for n in U.ALL_SCORES},
        "trace": [{"step": int(s), "score": float(v)} for s, v in zip(e["replan_steps"], tr)],
        "alarm_step": alarm, "flagged": alarm is not None,
        "chunks_source": e["chunks_source"],
    }


# ---------------------------------------------------------------------------- metrics
def detector_metrics(scored: list[dict], cal: dict, opts: dict, calibration_condition: str) -> dict:
    """Every detector figure, per condition and pooled, failures = positives."""
    how, q = opts["aggregate"], opts["topq"]
    n_boot, seed = int(opts["bootstrap_n"]), int(opts["bootstrap_seed"])
    conditions = sorted({e["info"].get("condition", "") for e in scored})
    groups = {c: [e for e in scored if e["info"].get("condition", "") == c] for c in conditions}
    if len(conditions) > 1:
        groups["all"] = scored
    events = any(e["info"].get("failure_event") or e["info"].get("failure_step") is not None for e in scored)
    out: dict[str, Any] = {"conditions": {}, "failure_step_source": "the env's failure event where an episode has one, else its end" if events else
                           "the episode end (no failure events in the episode info): lead times run to the timeout"}
    for cname, eps in groups.items():
        eps = [e for e in eps if e["info"].get("success") is not None]
        if not eps:
            continue
        y = np.array([not e["info"]["success"] for e in eps])
        lengths = np.array([e["length"] for e in eps], float)
        fail_steps = [e["failure_step"] for e in eps if e["failure_step"] is not None]
        median_fail = float(np.median(fail_steps)) if fail_steps else None
        max_len = int(lengths.max())
        grid = list(range(0, max_len, int(opts["time_step_stride"])))
        rows = [{"length": e["length"], "positive": not e["info"]["success"], "replan_steps": e["replan_steps"],
                 "traces": e["traces"]} for e in eps]
        c_out: dict[str, Any] = {
            "n": len(eps), "failures": int(y.sum()), "success_rate": U.rate(int((~y).sum()), len(eps)),
            "median_failure_step": median_fail,
            "length_auroc": U.auroc_ci(lengths, y, n_boot, seed),  # the baseline every figure stands beside
            "scores": {},
        }
        for name in U.ALL_SCORES:
            s = np.array([U.aggregate(e["traces"][name], how, q) for e in eps])
            thr = cal["thresholds"][name]
            alarms = [U.alarm_step(e["replan_steps"], e["traces"][name], thr) for e in eps]
            fails = [(a, e["failure_step"]) for a, e in zip(alarms, eps) if e["failure_step"] is not None]
            tm = U.time_matched_auroc(rows, name, grid, 0, seed)
            # only steps with enough episodes of both classes still running: an AUROC over 1 success means nothing
            before = [r for r in tm if median_fail is not None and r["step"] < median_fail
                      and min(r["n_pos"], r["n_neg"]) >= int(opts["min_class"])]
            best = max(before, key=lambda r: r["estimate"], default=None)
            if best is not None:  # its bootstrap CI (computing one at every step would cost minutes)
                best = U.time_matched_auroc(rows, name, [best["step"]], n_boot, seed)[0]
            entry = {
                "auroc": U.auroc_ci(s, y, n_boot, seed), **U.detection(s, y, thr),
                "top20_capture": U.top_fraction_capture(s, y, float(opts["top_fraction"])),
                "lead_time": U.lead_times([a for a, _ in fails], [f for _, f in fails]),
                "time_matched": tm,
                "best_time_matched_before_median_failure": best,
            }
            entry["by_failure_type"] = _breakdown(eps, alarms, s, int(opts["min_class"]))
            if name == opts["score"]:
                entry["aggregates"] = {a: U.auroc(np.array([U.aggregate(e["traces"][name], a, q) for e in eps]), y)
                                       for a in U.AGGREGATES}
            c_out["scores"][name] = entry
        out["conditions"][cname] = c_out
    # realised false-alarm rate on held-out successes of the calibration condition
    nominal = [e for e in scored if e["info"].get("condition") == calibration_condition and e["info"].get("success") is True]
    n_cal = cal["n"]
    out["false_alarm"] = {
        "condition": calibration_condition, "alpha": opts["alpha"], "bound": opts["alpha"] + 1.0 / (n_cal + 1),
        "scores": {name: U.rate(sum(U.aggregate(e["traces"][name], how, q) > cal["thresholds"][name] for e in nominal),
                                len(nominal)) for name in U.ALL_SCORES},
    }
    return out


def failure_type(info: dict) -> str:
    """A failure's type: the env's first failure event if it gave one, else its termination reason."""
    ev = info.get("failure_event")
    if isinstance(ev, dict) and ev.get("type"):
        return str(ev["type"])
    return str(info.get("termination_reason") or "unknown")


def _breakdown(eps: list[dict], alarms: list, scores: np.ndarray, min_class: int) -> dict:
    """Per failure type: how many the score's online alarm caught (TPR at the threshold), the lead time
    of the caught ones to the failure step, and the AUROC of that type's failures against every success
    (when the type has at least ``min_class`` failures)."""
    succ = np.array([bool(e["info"].get("success")) for e in eps])
    out: dict[str, dict] = {}
    for k, (e, a) in enumerate(zip(eps, alarms)):
        if succ[k]:
            continue
        d = out.setdefault(failure_type(e["info"]), {"idx": [], "caught": 0, "leads": []})
        d["idx"].append(k)
        if a is not None:
            d["caught"] += 1
            d["leads"].append(e["failure_step"] - a)
    res = {}
    for r, d in sorted(out.items()):
        auroc = None
        if len(d["idx"]) >= min_class and succ.sum() >= min_class:
            keep = succ.copy()
            keep[d["idx"]] = True
            auroc = U.auroc(scores[keep], ~succ[keep])
        res[r] = {"caught": U.rate(d["caught"], len(d["idx"])), "auroc_vs_successes": auroc,
                  "median_lead": float(np.median(d["leads"])) if d["leads"] else None,
                  "median_failure_step": float(np.median([eps[k]["failure_step"] for k in d["idx"]]))}
    return res


def noise_floor(scorer: Scorer, scored: list[dict], n_episodes: int) -> dict:
    """Score spread under redrawn noise at the same observations (repeated nominal successes)."""
    succ = [e for e in scored if e["info"].get("success") is True][:n_episodes]
    rel_step: dict[str, list] = {n: [] for n in U.CHUNK_SCORES + ("stac",)}
    rel_ep: dict[str, list] = {n: [] for n in rel_step}
    for e in tqdm(succ, desc="noise floor", unit="ep", dynamic_ncols=True):
        seed = seeding.derive_seed(int(e["info"].get("seed", 0)), "noise_floor")
        again = scorer.episode(e["steps"], e["info"], None, e["replan_steps"], noise_seed=seed)["traces"]
        for n in rel_step:
            a, b = e["traces"][n], again[n]
            ok = np.isfinite(a) & np.isfinite(b) & ((a + b) > 0)
            rel_step[n] += (np.abs(a - b)[ok] / ((a + b)[ok] / 2)).tolist()
            if ok.any():
                ma, mb = np.nanmax(a), np.nanmax(b)
                rel_ep[n].append(abs(ma - mb) / ((ma + mb) / 2))
    return {"episodes": len(succ), "scores": {n: {
        "median_rel_diff_per_replan": float(np.median(rel_step[n])) if rel_step[n] else None,
        "median_rel_diff_episode_max": float(np.median(rel_ep[n])) if rel_ep[n] else None} for n in rel_step}}


def goals(metrics: dict, target: str, score_names) -> dict:
    """The issue's goals on the target domain, per score: time-matched AUROC >= 0.85 before the median
    failure event; TPR >= 0.7 at the threshold with the median alarm before the failure event."""
    c = metrics["conditions"].get(target)
    if c is None:
        return {"target": target, "evaluated": False}
    res = {}
    for n in score_names:
        s = c["scores"][n]
        best = s["best_time_matched_before_median_failure"]
        tm_ok = best is not None and best["estimate"] >= 0.85
        tpr_ok = s["tpr"]["estimate"] >= 0.7 and bool(s["lead_time"]["median_alarm_before_failure"])
        res[n] = {"time_matched_auroc_ge_0.85": tm_ok, "tpr_ge_0.7_alarm_before_failure": tpr_ok,
                  "balanced_accuracy": s["balanced_accuracy"], "met": tm_ok and tpr_ok}
    return {"target": target, "evaluated": True, "any_met": any(r["met"] for r in res.values()), "scores": res}


# --------------------------------------------------------------------------------- html
def _fmt(x, nd=3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def _ci(d: dict) -> str:
    return f"{_fmt(d.get('estimate'), 2)} [{_fmt(d.get('low'), 2)}, {_fmt(d.get('high'), 2)}]"


def write_html(path: Path, cal: dict, metrics: dict, command: str) -> None:
    h = [f"<!doctype html><meta charset=utf-8><title>realgap uncertainty</title>",
         "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}"
         "th:first-child,td:first-child{text-align:left}</style>",
         "<h1>Chunk-disagreement uncertainty</h1>",
         f"<p><code>{html.escape(command)}</code></p>",
         f"<p>Primary score <b>{cal['score']}</b> ({cal['aggregate']} over replans), K={cal['k_samples']}; split-conformal "
         f"threshold {_fmt(cal['threshold'], 5)} = rank {cal['rank']} of n={cal['n']} nominal calibration successes, "
         f"&alpha;={cal['alpha']}. Policy digest <code>{cal['policy_digest'][:19]}…</code>.</p>"]
    h.append(f"<p>Failure step (for lead times): {html.escape(metrics.get('failure_step_source', ''))}.</p>")
    fa = metrics["false_alarm"]
    h.append(f"<h2>Realised false-alarm rate</h2><p>On {fa['condition']} successes of the evaluated suite (held out from "
             f"calibration); bound &alpha; + 1/(n+1) = {_fmt(fa['bound'])}.</p><table><tr><th>score</th><th>false alarms</th><th>rate [95% Wilson]</th></tr>")
    for n, r in fa["scores"].items():
        h.append(f"<tr><td>{n}</td><td>{r['k']}/{r['n']}</td><td>{_ci(r)}</td></tr>")
    h.append("</table>")
    for cname, c in metrics["conditions"].items():
        h.append(f"<h2>{html.escape(cname)}: {c['failures']} failures / {c['n']} episodes</h2>"
                 f"<p>Episode-length baseline AUROC: <b>{_ci(c['length_auroc'])}</b> (a score maxed over an episode grows "
                 f"with its length; compare the time-matched column). Median failure step: {_fmt(c['median_failure_step'], 0)}.</p>")
        h.append("<table><tr><th>score</th><th>AUROC [95% CI]</th><th>best time-matched AUROC before median failure (step, n+/n-)</th>"
                 "<th>TPR at threshold</th><th>FPR</th><th>balanced acc.</th><th>top-20% capture</th><th>median lead (alarmed)</th></tr>")
        for n, s in c["scores"].items():
            b = s["best_time_matched_before_median_failure"]
            tm = f"{_ci(b)} (t={b['step']}, {b['n_pos']}/{b['n_neg']})" if b else "–"
            lt = s["lead_time"]
            h.append(f"<tr><td>{n}</td><td>{_ci(s['auroc'])}</td><td>{tm}</td><td>{_ci(s['tpr'])}</td><td>{_ci(s['fpr'])}</td>"
                     f"<td>{_fmt(s['balanced_accuracy'], 2)}</td><td>{_ci(s['top20_capture'])}</td>"
                     f"<td>{_fmt(lt['median_lead'], 1)} ({lt['alarmed']}/{lt['n_failures']})</td></tr>")
        h.append("</table>")
        prim = c["scores"].get(cal["score"], {})
        if prim.get("time_matched"):
            h.append(f"<p>Time-matched AUROC of {cal['score']} (episodes still running at step t): " + ", ".join(
                f"t={r['step']}: {_fmt(r['estimate'], 2)} ({r['n_pos']}/{r['n_neg']})" for r in prim["time_matched"]) + "</p>")
        if prim.get("by_failure_type"):
            h.append("<p>Caught by failure type (alarms / failures, AUROC vs successes, median lead): " + ", ".join(
                f"{html.escape(r)} {d['caught']['k']}/{d['caught']['n']}, {_fmt(d['auroc_vs_successes'])}, {_fmt(d['median_lead'], 0)}"
                for r, d in prim["by_failure_type"].items()) + "</p>")
    g = metrics.get("goals", {})
    if g.get("evaluated"):
        h.append(f"<h2>Goals on {g['target']}</h2><p>Met by any score: <b>{g['any_met']}</b></p><table>"
                 "<tr><th>score</th><th>time-matched AUROC ≥ 0.85</th><th>TPR ≥ 0.7, alarm before failure</th><th>balanced acc.</th></tr>")
        for n, r in g["scores"].items():
            h.append(f"<tr><td>{n}</td><td>{r['time_matched_auroc_ge_0.85']}</td><td>{r['tpr_ge_0.7_alarm_before_failure']}</td>"
                     f"<td>{_fmt(r['balanced_accuracy'], 2)}</td></tr>")
        h.append("</table>")
    nf = metrics.get("noise_floor")
    if nf:
        h.append(f"<h2>Noise floor</h2><p>Same observations, redrawn noise, {nf['episodes']} nominal successes: median relative "
                 "difference per replan / of the episode max: " + ", ".join(
                     f"{n} {_fmt(v['median_rel_diff_per_replan'], 2)} / {_fmt(v['median_rel_diff_episode_max'], 2)}"
                     for n, v in nf["scores"].items()) + "</p>")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(h))
    os.replace(tmp, path)


# ------------------------------------------------------------------------- commands
def _options(cfg: dict) -> dict:
    opts = {
        "k": _check_k(cfg.get("k", 8)), "alpha": U.check_alpha(cfg.get("alpha", 0.1)),
        "score": cfg.get("score", "total_var"), "aggregate": cfg.get("aggregate", "max"),
        "topq": float(cfg.get("topq", 0.25)), "bootstrap_n": int(cfg.get("bootstrap_n", 2000)),
        "bootstrap_seed": int(cfg.get("bootstrap_seed", 0)), "top_fraction": float(cfg.get("top_fraction", 0.2)),
        "time_step_stride": int(cfg.get("time_step_stride", 8)), "min_class": int(cfg.get("min_class", 5)), "noise_floor_episodes": int(cfg.get("noise_floor_episodes", 10)),
        "torch_threads": int(cfg.get("torch_threads", 1)),
    }
    if opts["score"] not in U.ALL_SCORES:
        raise RealgapError(f"score: unknown '{opts['score']}' ({' | '.join(U.ALL_SCORES)})")
    if opts["aggregate"] not in U.AGGREGATES:
        raise RealgapError(f"aggregate: unknown '{opts['aggregate']}' ({' | '.join(U.AGGREGATES)})")
    return opts


def _fit_novelty(scorer: Scorer, cal_scored: list[dict], eval_scored: list[dict], folds: int = 5) -> None:
    """Fit the observation-embedding Gaussian on the calibration successes; fill in the novelty traces.

    Cross-fitted: a calibration success is scored by a Gaussian fitted on the other folds, so its
    score is out-of-sample like an evaluation episode's; an in-sample fit would make the calibration
    scores too small and the threshold too low (measured: 6/28 false alarms at alpha = 0.1).
    """
    succ = [e for e in cal_scored if e["info"].get("success") is True]
    scorer.gauss = U.fit_gaussian(np.concatenate([e["embeddings"] for e in succ]))
    for e in [*eval_scored, *(e for e in cal_scored if e["info"].get("success") is not True)]:
        e["traces"]["novelty"] = U.mahalanobis(e["embeddings"], *scorer.gauss)
    for f in range(folds):
        held = succ[f::folds]
        rest = [e for i, e in enumerate(succ) if i % folds != f]
        if not held or not rest:
            continue
        gauss = U.fit_gaussian(np.concatenate([e["embeddings"] for e in rest]))
        for e in held:
            e["traces"]["novelty"] = U.mahalanobis(e["embeddings"], *gauss)


def main(cfg, resume: bool = False, overwrite: bool = False) -> int:
    """``realgap uncertainty out=<suite>``."""
    cfg = _plain(cfg)
    opts = _options(cfg)
    if not cfg.get("out"):
        raise RealgapError("out: missing (a suite output folder)")
    out = Path(cfg["out"]).expanduser()
    if not (out / SUITE_FILE).exists():
        raise RealgapError(f"out: {out / SUITE_FILE} missing, so {out} is not a suite output")
    saved = json.loads((out / SUITE_FILE).read_text())["suite"]
    store = open_store(out / STORE_DIR)
    if store.n_episodes == 0:
        raise RealgapError(f"{out / STORE_DIR}: no episodes to score")
    spec = cfg.get("checkpoint") or (saved["policy"]["spec"] if isinstance(saved["policy"], dict) else saved["policy"])
    ckpt = _checkpoint(spec, "checkpoint")
    calib = cfg.get("calibration") or {}
    cond = calib.get("condition", "nominal")
    if cond not in saved.get("conditions", {}):
        raise RealgapError(f"calibration.condition: '{cond}' is not a condition of the suite ({sorted(saved['conditions'])})")
    seeds_cfg = calib.get("seeds") or {}
    c_start, c_n = int(seeds_cfg.get("start", 2000000)), int(seeds_cfg.get("n", 60))
    if c_n < U.min_calibration(opts["alpha"]):
        raise RealgapError(f"calibration.seeds.n: {c_n} seeds cannot give n >= 1/alpha - 1 = "
                           f"{U.min_calibration(opts['alpha'])} calibration successes (alpha={opts['alpha']})")
    cal_seeds = set(range(c_start, c_start + c_n))
    eval_seeds = {int(i["seed"]) for i in store.episode_infos()}
    if cal_seeds & eval_seeds:
        raise RealgapError(f"calibration.seeds: overlap the suite's evaluation seeds (e.g. {min(cal_seeds & eval_seeds)}); "
                           "calibration needs held-out seeds")
    kwargs = (saved["policy"].get("kwargs") or {}) if isinstance(saved["policy"], dict) else {}
    choice, executed_k = str(kwargs.get("chunk_choice", "first")), int(kwargs.get("num_samples", 1))
    if choice != "first" and executed_k != opts["k"]:
        # the executed chunk depends on K: calibration episodes must run as the suite's did
        raise RealgapError(f"k: the suite executes the {choice} of {executed_k} chunks per replan; "
                           f"pass k={executed_k} (got {opts['k']})")
    torch.set_num_threads(opts["torch_threads"])
    scorer = Scorer(ckpt, opts["k"], choice)
    scorer.check_store(store, str(out / STORE_DIR))
    unc = out / "uncertainty"
    prepare_dir(unc, resume, overwrite, field="out")

    # 1. calibration suite: nominal episodes on held-out seeds, chunks recorded online
    from .suite import run_suite

    cal_suite = json.loads(json.dumps(saved))
    # scoring re-encodes observations: an image policy's calibration episodes must keep their frames
    needs_frames = any(is_image_key(k) for k in scorer.keys)
    cal_suite.update(name=f"{saved.get('name', 'suite')}-calibration", seeds={"start": c_start, "n": c_n},
                     record_chunks=True, record_frames="all" if needs_frames else "none")
    pol = cal_suite["policy"] if isinstance(cal_suite["policy"], dict) else {"spec": cal_suite["policy"]}
    cal_suite["policy"] = {"spec": str(ckpt), "kwargs": {**(pol.get("kwargs") or {}), "num_samples": opts["k"]}}
    cal_out = unc / "calibration"
    run_suite({"suite": cal_suite, "conditions": [cond], "out": str(cal_out), "executor": calib.get("executor", "local"),
               "workers": int(calib.get("workers", 1))}, resume=(cal_out / SUITE_FILE).exists(), overwrite=False)

    # 2. score both stores
    cal_store = open_store(cal_out / STORE_DIR)
    cal_scored = score_store(scorer, cal_store, resample=False, desc="score calibration")
    ev_scored = score_store(scorer, store, resample=bool(cfg.get("resample", False)), desc="score suite")
    _fit_novelty(scorer, cal_scored, ev_scored)
    np.savez(unc / "novelty.npz", mean=scorer.gauss[0], precision=scorer.gauss[1])

    # 3. calibrate, metrics, files
    c = calibrate(cal_scored, opts["alpha"], opts["score"], opts["aggregate"], opts["topq"])
    cal = {"schema": SCHEMA, "score": opts["score"], "aggregate": opts["aggregate"], "topq": opts["topq"],
           "alpha": opts["alpha"], "k_samples": opts["k"], "chunk_choice": choice, "calibration_condition": cond, **c,
           "calibration_suite": str(cal_out), "policy": str(spec), "policy_digest": scorer.digest}
    metrics = detector_metrics(ev_scored, cal, opts, cond)
    metrics["noise_floor"] = noise_floor(scorer, cal_scored, opts["noise_floor_episodes"])
    metrics["goals"] = goals(metrics, cfg.get("target", "target_lab"), U.ALL_SCORES)
    metrics["chunks_source"] = sorted({e["chunks_source"] for e in ev_scored})
    command = "realgap uncertainty " + " ".join(f"{k}={v}" for k, v in [("out", out), ("k", opts["k"]), ("alpha", opts["alpha"])])
    _write_json(unc / "calibration.json", _finite(cal))
    _write_json(unc / "metrics.json", _finite(metrics))
    _write_episodes(unc / "episodes.json", out / STORE_DIR, ev_scored, cal, scorer, opts)
    write_html(unc / "index.html", cal, metrics, command)
    _print_summary(cal, metrics, unc)
    return 0


def _write_episodes(path: Path, store_path: Path, scored: list[dict], cal: dict, scorer: Scorer, opts: dict) -> None:
    records = [episode_record(e, cal["score"], cal["threshold"], cal["aggregate"], cal.get("topq", 0.25)) for e in scored]
    _write_json(path, _finite({
        "schema": SCHEMA, "store": str(Path(store_path).resolve()), "score": cal["score"], "threshold": cal["threshold"],
        "alpha": cal["alpha"], "k_samples": cal["k_samples"], "n_obs_steps": scorer.model.n_obs_steps,
        "n_action_steps": scorer.n_exec, "episodes": records}))


def _print_summary(cal: dict, metrics: dict, where: Path) -> None:
    print(f"threshold {cal['score']} = {cal['threshold']:.5g} (n={cal['n']}, alpha={cal['alpha']}, rank {cal['rank']})")
    fa = metrics["false_alarm"]["scores"][cal["score"]]
    print(f"realised false-alarm rate: {fa['k']}/{fa['n']} = {_ci(fa)} (bound {metrics['false_alarm']['bound']:.3f})")
    for cname, c in metrics["conditions"].items():
        s = c["scores"][cal["score"]]
        print(f"{cname}: AUROC {_ci(s['auroc'])} (length baseline {_ci(c['length_auroc'])}), TPR {_ci(s['tpr'])}, "
              f"balanced acc {_fmt(s['balanced_accuracy'], 2)}")
    print(f"uncertainty: {where / 'index.html'}")


def score_main(cfg, resume: bool = False, overwrite: bool = False) -> int:
    """``realgap score --episodes <store> --policy <checkpoint>``: offline scoring of logged episodes."""
    cfg = _plain(cfg)
    if not cfg.get("episodes"):
        raise RealgapError("episodes: missing (an episode store in the replay-buffer layout)")
    store_path = Path(cfg["episodes"]).expanduser()
    if not store_path.exists():
        raise RealgapError(f"episodes: {store_path} does not exist")
    store = open_store(store_path)
    if store.n_episodes == 0:
        raise RealgapError(f"{store_path}: no episodes to score")
    ckpt = _checkpoint(cfg.get("checkpoint"), "checkpoint (--policy)")
    cal_path = Path(cfg.get("calibration") or store_path.parent / "uncertainty" / "calibration.json").expanduser()
    if not cal_path.exists():
        raise RealgapError(f"calibration: {cal_path} does not exist (run realgap uncertainty first, or pass calibration=<file>)")
    try:
        cal = json.loads(cal_path.read_text())
        cal["threshold"], cal["policy_digest"], cal["k_samples"]  # noqa: B018 - required fields
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RealgapError(f"{cal_path}: not a realgap calibration file ({type(e).__name__}: {e})") from e
    digest = policy_digest(ckpt)
    if cal["policy_digest"] != digest:
        raise RealgapError(f"{cal_path}: threshold computed for another policy (digest {cal['policy_digest'][:19]}…, "
                           f"{ckpt} is {digest[:19]}…)")
    k = _check_k(cfg.get("k") or cal["k_samples"])
    if k != cal["k_samples"]:
        raise RealgapError(f"k: {k} differs from the calibration's K={cal['k_samples']} (scores depend on K)")
    torch.set_num_threads(int(cfg.get("torch_threads", 1)))
    scorer = Scorer(ckpt, k, str(cal.get("chunk_choice", "first")))  # re-sampled as the calibration episodes ran
    scorer.check_store(store, str(store_path))
    nov = cal_path.parent / "novelty.npz"
    if nov.exists():
        with np.load(nov) as z:
            scorer.gauss = (z["mean"], z["precision"])
    out = Path(cfg.get("out") or store_path.parent / "offline_score").expanduser()
    unc = out / "uncertainty"
    prepare_dir(unc, resume, overwrite, field="out")
    scored = score_store(scorer, store, resample=True, desc="score (re-sampled)")
    opts = {"score": cal["score"], "aggregate": cal.get("aggregate", "max"), "topq": cal.get("topq", 0.25),
            "alpha": cal["alpha"], "bootstrap_n": int(cfg.get("bootstrap_n", 2000)), "bootstrap_seed": 0,
            "top_fraction": 0.2, "time_step_stride": 8, "min_class": 5}
    shutil.copyfile(cal_path, unc / "calibration.json")
    _write_episodes(unc / "episodes.json", store_path, scored, cal, scorer, opts)
    flagged = sum(U.aggregate(e["traces"][cal["score"]], opts["aggregate"], opts["topq"]) > cal["threshold"] for e in scored)
    if all(e["info"].get("success") is not None for e in scored):
        metrics = detector_metrics(scored, cal, opts, cal.get("calibration_condition", "nominal"))
        _write_json(unc / "metrics.json", _finite(metrics))
    print(f"scored {len(scored)} episodes ({flagged} flagged at {cal['score']} > {cal['threshold']:.5g}): {unc / 'episodes.json'}")
    return 0
