"""Analysis of a ``realgap ablate`` study: pure functions from episode stores + the study manifest.

Nothing here simulates. ``analyze(out)`` reads ``<out>/manifest.json`` (written by
``evaluation/ablation_run.py``) and each job's episode store, and returns every number of the report;
``build_report(out)`` writes ``<out>/report/ablation.json`` and ``index.html``.

- **Attribution**: effect(a) = target success(pi_all) - target success(pi_-a); CI from the two-level
  bootstrap (training seeds, then episode seeds; ``stats.hierarchical_paired_effect``); verdict by TOST
  against the margin (``stats.tost_verdict``).
- **Strength sweep**: target / nominal success per scale of the sweep axis.
- **Evaluation-time sensitivity** and the **target breakdown**: paired comparisons against nominal.
- **Sim vs target**: Pearson r and MMRV over the trained policies (``stats.sim_real_agreement``).
- **Sequential**: the group-sequential test per comparison against the fixed-N design.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from realgap.errors import RealgapError

from . import stats
from .store import suite_outcomes


# ------------------------------------------------------------------------------------ demo digest
def training_data_digest(path: str | Path) -> str:
    """sha256 of everything training reads from a demo store: every ``data/<key>`` array (dtype, shape,
    bytes), ``episode_ends``, each episode's instruction and the recorded observation-noise std (the
    normalizer's input, ``realgap.data.dataset.recorded_obs_noise``). Episode DR parameters of axes
    the policy never observes are not read by training, so they are not part of it."""
    from realgap.data.dataset import recorded_obs_noise
    from realgap.data.replay_buffer import ReplayBuffer

    buf = ReplayBuffer.open(path, mode="r")
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(buf.episode_ends).tobytes())
    for key in buf.keys:
        arr = np.ascontiguousarray(buf.array(key))
        h.update(f"{key}|{arr.dtype.str}|{arr.shape}".encode())
        h.update(arr.tobytes())
    infos = buf.episode_infos()
    h.update(json.dumps([str(i.get("instruction", "")) for i in infos]).encode())
    h.update(repr(recorded_obs_noise(infos)).encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------------ loading
def load_manifest(out: Path) -> dict:
    path = Path(out) / "manifest.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RealgapError(f"{path}: missing or unreadable (run `realgap ablate` first)") from e


def outcome_matrix(runs: list[dict[int, bool]], seeds: list[int]) -> np.ndarray:
    """(runs, seeds) 0/1 matrix over the seeds every run holds."""
    return np.array([[float(r[s]) for s in seeds] for r in runs])


def shared_seeds(runs: list[dict[int, bool]]) -> list[int]:
    common = set(runs[0]) if runs else set()
    for r in runs[1:]:
        common &= set(r)
    return sorted(common)


def _runs(manifest: dict) -> dict[str, dict[int, dict]]:
    """variant -> training seed -> {train, eval, outcomes} for every finished eval job."""
    jobs = manifest["jobs"]
    cache: dict[str, dict] = {}
    runs: dict[str, dict[int, dict]] = {}
    for jid, job in jobs.items():
        if job["kind"] != "eval" or job["status"] != "done" or not job.get("folder"):
            continue
        variant, seed = job["meta"]["variant"], int(job["meta"]["seed"])
        train = jobs.get(f"train:{variant}:{seed}") or {}
        if job["folder"] not in cache:
            cache[job["folder"]] = suite_outcomes(job["folder"])
        runs.setdefault(variant, {})[seed] = {
            "train_key": train.get("key"), "train_folder": train.get("folder"), "eval_folder": job["folder"],
            "shared_from": train.get("alias_of"),
            "report": (job.get("result") or {}).get("report"), "outcomes": cache[job["folder"]],
        }
    return runs


# ------------------------------------------------------------------------------------ analyses
def arm_matrix(arm: dict[int, dict], seeds: list[int], condition: str) -> tuple[np.ndarray, list[int]]:
    per_seed = [arm[s]["outcomes"].get(condition, {}) for s in seeds]
    episodes = shared_seeds(per_seed)
    return outcome_matrix(per_seed, episodes), episodes


def attribute(runs: dict, base: str, other: str, condition: str, margin: float, seed: int, n_boot: int) -> dict | None:
    """effect = success(base) - success(other) on ``condition``: estimate, CIs, verdict (None if < 2 shared seeds)."""
    if base not in runs or other not in runs:
        return None
    seeds = sorted(set(runs[base]) & set(runs[other]))
    if len(seeds) < 2:
        return None
    a, eps_a = arm_matrix(runs[base], seeds, condition)
    b, eps_b = arm_matrix(runs[other], seeds, condition)
    episodes = sorted(set(eps_a) & set(eps_b))
    if not episodes:
        return None
    a = a[:, [eps_a.index(e) for e in episodes]]
    b = b[:, [eps_b.index(e) for e in episodes]]
    eff = stats.hierarchical_paired_effect(a, b, seed=seed, n_boot=n_boot)
    same = all(runs[base][s]["train_key"] == runs[other][s]["train_key"] for s in seeds)
    return {
        "base": base, "other": other, "condition": condition, "train_seeds": seeds, "n_episodes": len(episodes),
        "effect": eff.as_dict(), "verdict": stats.tost_verdict(eff.ci90, eff.ci95, margin), "margin": margin,
        "success_base": float(a.mean()), "success_other": float(b.mean()), "same_checkpoints": same,
        "diff_matrix": (a - b),
    }


def arm_rate(arm: dict[int, dict], condition: str, seed: int, n_boot: int) -> dict | None:
    """Mean success of one configuration over its training seeds, with the two-level bootstrap CI."""
    seeds = sorted(arm)
    m, episodes = arm_matrix(arm, seeds, condition)
    if not episodes:
        return None
    if len(seeds) == 1:
        iv = stats.wilson(int(m.sum()), m.size)
        return {"estimate": iv.estimate, "low": iv.low, "high": iv.high, "n_train_seeds": 1, "n_episodes": len(episodes)}
    boot = stats.cluster_bootstrap_samples(m, seed=seed, n_boot=n_boot)
    low, high = np.quantile(boot, [0.025, 0.975])
    return {"estimate": float(m.mean()), "low": float(low), "high": float(high), "n_train_seeds": len(seeds),
            "n_episodes": len(episodes)}


def paired_vs(outcomes: dict[str, dict[int, bool]], base: str, other: str, seed: int, n_boot: int) -> dict | None:
    if base not in outcomes or other not in outcomes:
        return None
    c = stats.compare_paired(outcomes[base], outcomes[other], seed=seed, n_boot=n_boot)
    k = sum(outcomes[other].values())
    return {"condition": other, "baseline": base, "success": stats.wilson(k, len(outcomes[other])).as_dict(), **c.as_dict()}


def coverage(base: dict, effect: dict) -> dict:
    """Does the training DR cover a target effect? Per parameter: 'covered' (target value inside the
    training range), 'beyond' (the axis randomizes it in training, but not this far) or 'absent'
    (training leaves it at nominal, e.g. latency)."""
    from realgap.randomization.randomizer import AXIS_PARAMS

    axis = effect["axis"]
    train_axis = base["axes"][axis]
    target_axis = effect["alone"]["axes"][axis]
    params = AXIS_PARAMS[axis]
    per = {}
    for key in effect["params"]:
        kind, default = params[key]
        t_val, tr_val = target_axis[key], train_axis[key]
        if not train_axis["enabled"] or tr_val == default:
            per[key] = "absent"
        elif kind in ("offset", "factor", "steps"):
            per[key] = "covered" if tr_val[0] <= t_val[0] and t_val[1] <= tr_val[1] else "beyond"
        elif kind in ("std", "prob"):
            per[key] = "covered" if t_val <= tr_val else "beyond"
        else:  # vec3 biases: training randomizes no bias
            per[key] = "covered" if t_val == tr_val else "absent"
    if any(v == "absent" for v in per.values()):
        overall = "absent" if all(v == "absent" for v in per.values()) else "partly absent"
    else:
        overall = "covered" if all(v == "covered" for v in per.values()) else "beyond"
    return {"overall": overall, "params": per}


def sequential_study(comparisons: list[dict], look_every: int, margin: float, alpha: float) -> dict:
    """Each comparison's paired differences in evaluation order (episode seeds ascending, every training
    seed at each episode seed) through the group-sequential test, against the fixed-N design."""
    rows, used, fixed = [], 0, 0
    for c in comparisons:
        m = c["diff_matrix"]  # (train seeds, episodes)
        n_seeds, n_eps = m.shape
        d = m.T.reshape(-1)
        looks = [k * n_seeds for k in range(look_every, n_eps, look_every)] + [n_eps * n_seeds]
        seq = stats.sequential_paired_test(d, looks, margin, alpha)
        fix = stats.fixed_n_paired_test(d, margin, alpha)
        rows.append({"comparison": f"{c['base']} vs {c['other']}", "sequential": seq.as_dict(), "fixed_n": fix,
                     "rollouts_sequential": 2 * seq.n_used, "rollouts_fixed": 2 * d.size,
                     "agree": seq.decision == fix})
        used += 2 * seq.n_used
        fixed += 2 * d.size
    return {"comparisons": rows, "rollouts_sequential": used, "rollouts_fixed": fixed,
            "fraction": used / fixed if fixed else None, "look_every": look_every, "margin": margin, "alpha": alpha}


def _curve(folder: str | None) -> list[dict]:
    if not folder:
        return []
    try:
        return json.loads((Path(folder) / "curve.json").read_text())
    except (OSError, ValueError):
        return []


def job_costs(manifest: dict) -> dict:
    """Wall seconds of every job that ran (aliases excluded: they ran nothing)."""
    out: dict[str, dict] = {}
    for job in manifest["jobs"].values():
        if job["status"] != "done" or job.get("alias_of") or "wall_s" not in (job.get("result") or {}):
            continue
        row = out.setdefault(job["kind"], {"n": 0, "total_s": 0.0})
        row["n"] += 1
        row["total_s"] += float(job["result"]["wall_s"])
    for row in out.values():
        row["mean_s"] = row["total_s"] / row["n"]
    return out


def analyze(out: str | Path) -> dict:
    """Every number of the study's report, from its manifest and episode stores."""
    out = Path(out)
    manifest = load_manifest(out)
    try:
        cfg = json.loads((out / "study.json").read_text())["config"]
    except (OSError, ValueError, KeyError) as e:
        raise RealgapError(f"{out / 'study.json'}: missing or unreadable") from e
    a = cfg["ablation"]
    st = a["stats"]
    margin, n_boot, bseed = float(st["margin"]), int(st.get("n_boot", 2000)), int(st.get("bootstrap_seed", 0))
    runs = _runs(manifest)
    jobs = manifest["jobs"]
    variants = manifest["variants"]
    result: dict[str, Any] = {"name": a["name"], "target": a["target"], "base_randomization": a["base_randomization"],
                              "margin": margin, "jobs_done": sum(j["status"] == "done" for j in jobs.values()),
                              "jobs_total": len(jobs), "job_costs": job_costs(manifest)}
    digests = {}
    for name, v in variants.items():
        col = jobs.get(v.get("collect")) or {}
        digests[name] = (col.get("result") or {}).get("data_digest")
    # 1) attribution: pi_all - pi_-a on the target
    axes = []
    for axis in a["axes"]:
        row = attribute(runs, "all", f"-{axis}", "target", margin, bseed, n_boot)
        entry = {"axis": axis, "demos_identical": digests.get("all") is not None and digests.get("all") == digests.get(f"-{axis}"),
                 "data_digest_all": digests.get("all"), "data_digest_without": digests.get(f"-{axis}")}
        if row is None:
            entry["status"] = "pending"
        else:
            entry.update(status="done", **{k: v for k, v in row.items() if k != "diff_matrix"})
            entry["_diff"] = row["diff_matrix"]
            nominal = attribute(runs, "all", f"-{axis}", "nominal", margin, bseed, n_boot)
            entry["effect_nominal"] = nominal["effect"] if nominal else None
        axes.append(entry)
    done = [e for e in axes if e["status"] == "done"]
    done.sort(key=lambda e: -e["effect"]["estimate"])
    result["axes"] = done + [e for e in axes if e["status"] != "done"]
    all_vs_none = attribute(runs, "all", "none", "target", margin, bseed, n_boot)
    result["all_vs_none"] = {k: v for k, v in all_vs_none.items() if k != "diff_matrix"} if all_vs_none else None
    # 2) per-configuration success (nominal / training DR / target)
    configs = []
    for name in variants:
        if name not in runs:
            configs.append({"variant": name, "status": "pending"})
            continue
        row = {"variant": name, "status": "done", "train_seeds": sorted(runs[name]), **{
            k: variants[name].get(k) for k in ("role", "axis", "scale")}}
        for cond in ("nominal", "train_dr", "target"):
            row[cond] = arm_rate(runs[name], cond, bseed, n_boot)
        row["reports"] = [runs[name][s]["report"] for s in sorted(runs[name])]
        row["checkpoints"] = [runs[name][s]["train_folder"] for s in sorted(runs[name])]
        configs.append(row)
    result["configs"] = configs
    # verdicts near the floor: when pi_all rarely succeeds even in sim, every effect is squeezed toward 0
    all_row = next((c for c in configs if c["variant"] == "all" and c["status"] == "done"), None)
    floor = float(a.get("floor_warning", 0.3))
    result["floor_warning"] = bool(all_row and all_row["nominal"] and all_row["nominal"]["estimate"] < floor)
    result["floor"] = floor
    # 3) strength sweep
    sweep = a.get("sweep") or {}
    result["sweep"] = {"axis": sweep.get("axis"), "points": sorted(
        [c for c in configs if c.get("role") == "sweep" and c["status"] == "done"], key=lambda c: c["scale"])}
    # 4) sim vs target over the distinct trained policies
    policies, seen = [], set()
    for name in variants:
        for s, run in sorted((runs.get(name) or {}).items()):
            if run["train_key"] in seen or run["shared_from"]:  # one point per checkpoint, under its owner's name
                continue
            seen.add(run["train_key"])
            o = run["outcomes"]
            if all(c in o for c in ("nominal", "train_dr", "target")):
                policies.append({"variant": name, "seed": s, "train_key": run["train_key"],
                                 **{c: [float(x) for _, x in sorted(o[c].items())] for c in ("nominal", "train_dr", "target")}})
    agreement = {}
    if len(policies) >= 2:
        for sim in ("nominal", "train_dr"):
            ag = stats.sim_real_agreement([p[sim] for p in policies], [p["target"] for p in policies], seed=bseed, n_boot=n_boot)
            agreement[sim] = {k: v.as_dict() for k, v in ag.items()}
    result["sim_vs_target"] = {"policies": [{"variant": p["variant"], "seed": p["seed"], "train_key": p["train_key"],
                                             **{c: float(np.mean(p[c])) for c in ("nominal", "train_dr", "target")}}
                                            for p in policies], "agreement": agreement}
    # 5) evaluation-time sensitivity (pi_all, first seed) and 6) target breakdown (scripted expert)
    result["sensitivity"] = _sensitivity(jobs.get("sensitivity"), bseed, n_boot)
    result["breakdown"] = _breakdown(jobs.get("breakdown"), cfg, bseed, n_boot)
    # 7) sequential vs fixed-N
    seq_cfg = a.get("sequential") or {}
    comparisons = [dict(e, diff_matrix=e["_diff"]) for e in done]
    if all_vs_none:
        comparisons.append(all_vs_none)
    alpha = float(seq_cfg.get("alpha", 0.05))
    result["sequential"] = sequential_study(comparisons, int(seq_cfg.get("look_every", 10)), margin, alpha)
    n_max = comparisons[0]["diff_matrix"].size if comparisons else len(a["train"]["seeds"]) * int(a["eval"]["seeds"]["n"])
    n_seeds = comparisons[0]["diff_matrix"].shape[0] if comparisons else len(a["train"]["seeds"])
    result["sequential"]["simulation"] = [
        stats.simulate_sequential_error(p, p, n_max, int(seq_cfg.get("look_every", 10)) * n_seeds,
                                        reps=int(seq_cfg.get("sim_reps", 2000)), seed=bseed, margin=margin, alpha=alpha)
        for p in seq_cfg.get("sim_rates", [0.5])]
    # 8) training curves
    curves = []
    for name in variants:
        for s in a["train"]["seeds"]:
            job = jobs.get(f"train:{name}:{s}") or {}
            if job.get("status") == "done" and not job.get("alias_of"):
                curves.append({"variant": name, "seed": s, "folder": job["folder"], "curve": _curve(job["folder"])})
    result["curves"] = curves
    for e in result["axes"]:
        e.pop("_diff", None)
    return result


def _sensitivity(job: dict | None, seed: int, n_boot: int) -> dict | None:
    if not job or job["status"] != "done":
        return None
    o = suite_outcomes(job["folder"])
    rows = []
    for cond in o:
        if cond.startswith("only "):
            axis = cond[len("only "):]
            rows.append({"axis": axis, "alone_vs_nominal": paired_vs(o, "nominal", cond, seed, n_boot),
                         "all_but_vs_all": paired_vs(o, "all", f"all but {axis}", seed, n_boot)})
    return {"axes": rows, "all_vs_nominal": paired_vs(o, "nominal", "all", seed, n_boot),
            "report": (job.get("result") or {}).get("report"), "policy": "pi_all, first training seed"}


def _breakdown(job: dict | None, cfg: dict, seed: int, n_boot: int) -> dict | None:
    if not job or job["status"] != "done":
        return None
    from .ablation_run import load_randomization, target_effects, validated

    a = cfg["ablation"]
    base = validated(load_randomization(a["base_randomization"], "ablation.base_randomization"), "base")
    target = validated(load_randomization(a["target"], "ablation.target"), "target")
    effects = target_effects(target, (a.get("breakdown") or {}).get("split") or {})
    o = suite_outcomes(job["folder"])
    rows = []
    for name, eff in effects.items():
        rows.append({"effect": name, "axis": eff["axis"], "params": eff["params"], "coverage": coverage(base, eff),
                     "alone_vs_nominal": paired_vs(o, "nominal", f"only {name}", seed, n_boot),
                     "target_without_vs_target": paired_vs(o, "target", f"target without {name}", seed, n_boot)})
    return {"effects": rows, "target_vs_nominal": paired_vs(o, "nominal", "target", seed, n_boot),
            "report": (job.get("result") or {}).get("report"), "policy": "scripted expert"}


# ------------------------------------------------------------------------------------ report
def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:+.1f}" if isinstance(x, float) and x < 0 else f"{100 * x:.1f}"


def _iv(iv: dict | None, signed: bool = False) -> str:
    if not iv:
        return "–"
    f = (lambda v: f"{100 * v:+.1f}") if signed else (lambda v: f"{100 * v:.1f}")
    return f"{f(iv['estimate'])} [{f(iv['low'])}, {f(iv['high'])}]"


def _link(path: str | None, out: Path, text: str) -> str:
    import html
    import os

    if not path:
        return "–"
    rel = os.path.relpath(path, out / "report")
    return _H(f'<a href="{html.escape(rel)}">{html.escape(text)}</a>')


def _plots(r: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report import _png, _yerr

    imgs = {}
    axes = [e for e in r["axes"] if e["status"] == "done"]
    if axes:
        fig, ax = plt.subplots(figsize=(6, 0.45 * len(axes) + 1.3))
        y = np.arange(len(axes))[::-1]
        est = np.array([e["effect"]["estimate"] for e in axes])
        lo = np.array([e["effect"]["ci95"]["low"] for e in axes])
        hi = np.array([e["effect"]["ci95"]["high"] for e in axes])
        ax.errorbar(est, y, xerr=_yerr(est, lo, hi), fmt="o", color="#c44e52", capsize=4)
        ax.axvspan(-r["margin"], r["margin"], color="#dddddd", label=f"equivalence margin ±{r['margin']:g}")
        ax.axvline(0, color="grey", lw=1)
        ax.set_yticks(y, [e["axis"] for e in axes])
        ax.set_xlabel("effect on target success: π_all − π_-axis (95% two-level bootstrap CI)")
        ax.legend(loc="lower right", fontsize=8)
        imgs["effects"] = _png(fig)
    pts = r["sweep"]["points"]
    if pts:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for cond, color in (("target", "#c44e52"), ("nominal", "#4c72b0"), ("train_dr", "#55a868")):
            rows = [(p["scale"], p[cond]) for p in pts if p.get(cond)]
            if rows:
                x = np.array([s for s, _ in rows])
                e = np.array([v["estimate"] for _, v in rows])
                ax.errorbar(x, e, yerr=_yerr(e, np.array([v["low"] for _, v in rows]), np.array([v["high"] for _, v in rows])),
                            marker="o", capsize=4, color=color, label=cond)
        ax.set_xlabel(f"strength of '{r['sweep']['axis']}' (× its training range)")
        ax.set_ylabel("success (95% CI)")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
        imgs["sweep"] = _png(fig)
    pol = r["sim_vs_target"]["policies"]
    if pol:
        fig, axs = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
        for ax, sim in zip(axs, ("nominal", "train_dr")):
            ax.scatter([p[sim] for p in pol], [p["target"] for p in pol], color="#4c72b0")
            for p in pol:
                ax.annotate(f"{p['variant']}/{p['seed']}", (p[sim], p["target"]), fontsize=7)
            ag = r["sim_vs_target"]["agreement"].get(sim)
            title = f"sim = {sim}"
            if ag:
                title += f"\nr = {_num(ag['pearson'])}, MMRV = {_num(ag['mmrv'])}"
            ax.set_title(title, fontsize=9)
            ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
            ax.set_xlabel(f"sim success ({sim})")
        axs[0].set_ylabel("target success")
        imgs["scatter"] = _png(fig)
    curves = [c for c in r["curves"] if c["curve"]]
    if curves:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for i, c in enumerate(curves):
            label = f"{c['variant']}/{c['seed']}"
            for key, style in (("val_loss", "-"), ("train_loss", ":")):
                rows = [(row["step"], row[key]) for row in c["curve"] if row.get(key) is not None]
                if rows:
                    ax.plot(*zip(*rows), style, color=f"C{i % 10}", lw=1, label=label)
                    label = None
        ax.set_xlabel("training step")
        ax.set_ylabel("loss: validation (EMA, solid), training (dotted)")
        ax.set_yscale("log")
        ax.legend(fontsize=6, ncol=2)
        imgs["curves"] = _png(fig)
    return imgs


class _H(str):
    """A table cell that is already HTML (links, bold verdicts); every other cell is escaped."""


def _table(headers: list[str], rows: list[list]) -> str:
    import html

    def cell(c) -> str:
        return c if isinstance(c, _H) else html.escape(str(c))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _num(iv: dict | None) -> str:
    if not iv:
        return "–"
    return f"{iv['estimate']:.2f} [{iv['low']:.2f}, {iv['high']:.2f}]"


def write_html(path: Path, r: dict, imgs: dict[str, str], out: Path) -> None:
    import html

    def img(key: str) -> str:
        return f'<img src="data:image/png;base64,{imgs[key]}">' if key in imgs else "<p>(not yet available)</p>"

    parts = [f"<h1>realgap ablate: {html.escape(r['name'])}</h1>",
             f"<p>Target domain <b>{html.escape(r['target'])}</b>, training DR <b>{html.escape(r['base_randomization'])}</b>. "
             f"Jobs finished: {r['jobs_done']}/{r['jobs_total']}"
             + ("" if r["jobs_done"] == r["jobs_total"] else " — <b>the study is incomplete</b>; `realgap ablate --resume` continues it")
             + ". Success rates in %; intervals are 95% unless noted.</p>",
             ("<p style='color:#a00'><b>Warning:</b> π_all succeeds in fewer than "
              f"{100 * r['floor']:.0f}% of nominal episodes: every policy of this study is near the floor, so effects are "
              "squeezed toward 0 and a 'placebo' verdict means 'no effect at this training budget', not that the axis "
              "is useless. Train longer (ablation.train.overrides.steps) for a study that can tell axes apart.</p>"
              if r.get("floor_warning") else ""),
             "<h2>1. Which axis buys transfer (training-time leave-one-out)</h2>",
             f"<p>effect = target success of π_all − π_-axis, both trained on the same demo seeds and training seeds, "
             f"evaluated on the same episode seeds. CI: two-level bootstrap (training seeds, then episode seeds, pairs kept). "
             f"Verdict: <b>placebo</b> when the 90% CI lies inside ±{100 * r['margin']:g} points (TOST), else <b>helpful</b> / "
             f"<b>harmful</b> when the 95% CI excludes 0, else <b>undecided</b>. 'demos identical' = the two demo sets have the same "
             f"training-data digest, so the checkpoints are the same (for the state policy: lighting, appearance, camera).</p>"]
    rows = []
    for e in r["axes"]:
        if e["status"] != "done":
            rows.append([e["axis"], "pending", "", "", "", "", "", ""])
            continue
        rows.append([e["axis"], _H(f"<b>{e['verdict']}</b>"), _iv({**e["effect"]["ci95"]}, True), _iv(e["effect"]["ci90"], True),
                     f"±{100 * e['margin']:g}", f"{100 * e['success_base']:.1f} / {100 * e['success_other']:.1f}",
                     _iv(e.get("effect_nominal", {}) and e["effect_nominal"]["ci95"], True),
                     "yes" if e["demos_identical"] else "no"])
    parts.append(_table(["axis", "verdict", "effect on target [95% CI]", "90% CI (TOST)", "margin",
                         "target success π_all / π_-axis", "effect on nominal [95% CI]", "demos identical"], rows))
    if r.get("all_vs_none"):
        e = r["all_vs_none"]
        parts.append(f"<p>All DR vs no DR (π_all − π_none) on the target: {_iv(e['effect']['ci95'], True)}, verdict <b>{e['verdict']}</b>.</p>")
    parts.append(img("effects"))
    parts.append("<h2>Per configuration</h2>")
    rows = []
    for c in r["configs"]:
        if c["status"] != "done":
            rows.append([c["variant"], "pending", "", "", "", ""])
            continue
        links = _H(" ".join(_link(p, out, f"seed {s}") for s, p in zip(c["train_seeds"], c["reports"])))
        rows.append([c["variant"], ", ".join(map(str, c["train_seeds"])), _iv(c["nominal"]), _iv(c["train_dr"]), _iv(c["target"]), links])
    parts.append(_table(["config", "training seeds", "nominal", "training DR", "target", "suite reports"], rows))
    parts.append(f"<h2>2. Strength sweep: {html.escape(str(r['sweep']['axis']))}</h2>")
    parts.append("<p>Training DR with this one axis's ranges scaled (0 = its nominal values, 1 = π_all).</p>" + img("sweep"))
    parts.append("<h2>3. Evaluation-time sensitivity (no training)</h2>")
    s = r.get("sensitivity")
    if s:
        parts.append(f"<p>{html.escape(s['policy'])}, evaluated with each axis alone (vs nominal) and with all axes but one "
                     f"(vs all), on the same episode seeds; McNemar exact p. This asks how much the <i>trained</i> policy's "
                     f"success moves when the world varies along one axis; section 1 asks whether <i>training</i> with the "
                     f"axis helps on the target. They answer different questions. {_link(s.get('report'), out, 'suite report')}</p>")
        train_eff = {e["axis"]: e for e in r["axes"] if e["status"] == "done"}
        rows = [[x["axis"], _iv(x["alone_vs_nominal"] and x["alone_vs_nominal"]["difference"], True),
                 f"{x['alone_vs_nominal']['p_value']:.3g}" if x["alone_vs_nominal"] else "–",
                 _iv(x["all_but_vs_all"] and x["all_but_vs_all"]["difference"], True),
                 f"{x['all_but_vs_all']['p_value']:.3g}" if x["all_but_vs_all"] else "–",
                 _iv(train_eff[x["axis"]]["effect"]["ci95"], True) if x["axis"] in train_eff else "–"] for x in s["axes"]]
        parts.append(_table(["axis", "alone − nominal", "p", "all-but-axis − all", "p", "training-time effect (section 1)"], rows))
    else:
        parts.append("<p>(not yet available)</p>")
    parts.append("<h2>4. Does sim predict the target?</h2>")
    ag = r["sim_vs_target"]["agreement"]
    if ag:
        parts.append("<p>Over the distinct trained policies (one point per checkpoint): Pearson r and MMRV (SIMPLER's "
                     "definitions; MMRV weighs each rank violation by its target-success gap, lower is better), 95% CI from a "
                     "bootstrap over each policy's episodes.</p>")
        parts.append(_table(["sim condition", "Pearson r", "MMRV"],
                            [[k, _num(v["pearson"]), _num(v["mmrv"])] for k, v in ag.items()]))
    parts.append(img("scatter"))
    parts.append("<h2>5. Target drop by effect (scripted expert)</h2>")
    b = r.get("breakdown")
    if b:
        parts.append(f"<p>Target − nominal for the expert: {_iv(b['target_vs_nominal']['difference'], True)}. Each effect of the "
                     f"target alone (vs nominal) and the target without it (vs the target). Coverage: whether the training DR "
                     f"randomizes that parameter as far as the target sets it ('covered'), not as far ('beyond'), or not at all "
                     f"('absent': no training axis can explain it). {_link(b.get('report'), out, 'suite report')}</p>")
        rows = [[x["effect"], x["axis"], ", ".join(x["params"]), x["coverage"]["overall"],
                 _iv(x["alone_vs_nominal"] and x["alone_vs_nominal"]["difference"], True),
                 _iv(x["target_without_vs_target"] and x["target_without_vs_target"]["difference"], True)] for x in b["effects"]]
        parts.append(_table(["effect", "axis", "parameters", "coverage by training DR", "alone − nominal",
                             "target without it − target"], rows))
    else:
        parts.append("<p>(not yet available)</p>")
    parts.append("<h2>6. Sequential stopping vs fixed N</h2>")
    q = r["sequential"]
    parts.append(f"<p>Group-sequential test with O'Brien–Fleming alpha spending (repeated confidence intervals; α = {q['alpha']:g} "
                 f"for better/worse, TOST at ±{100 * q['margin']:g} points for equivalent), a look every {q['look_every']} episode "
                 f"seeds. Treats the trained checkpoints as fixed (episode-level pairs), unlike the two-level CI of section 1. "
                 f"Rollouts used: <b>{q['rollouts_sequential']}</b> of {q['rollouts_fixed']} for the fixed-N design"
                 + (f" (<b>{100 * q['fraction']:.0f}%</b>)" if q["fraction"] is not None else "") + ".</p>")
    parts.append(_table(["comparison", "sequential decision", "stopped at pairs", "fixed-N decision", "agree"],
                        [[c["comparison"], c["sequential"]["decision"], f"{c['sequential']['n_used']}/{c['sequential']['n_max']}",
                          c["fixed_n"], "yes" if c["agree"] else "no"] for c in q["comparisons"]]))
    parts.append("<p>False-positive rate (declaring better or worse) simulated on independent Bernoulli pairs with equal rates:</p>")
    parts.append(_table(["rate", "pairs (max)", "reps", "false positives", "mean pairs used"],
                        [[f"{x['p_base']:g}", x["n_max"], x["reps"], f"{x['false_positive']:.4f}", f"{x['mean_pairs_used']:.1f}"]
                         for x in q["simulation"]]))
    parts.append("<h2>7. Training curves</h2>" + img("curves"))
    rows = [[c["variant"], c["seed"], _link(c["folder"], out, Path(c["folder"]).name)] for c in r["curves"]]
    parts.append(_table(["config", "seed", "checkpoint"], rows))
    parts.append("<h2>Job costs (wall seconds)</h2>")
    parts.append(_table(["kind", "jobs run", "total s", "mean s"],
                        [[k, v["n"], f"{v['total_s']:.0f}", f"{v['mean_s']:.0f}"] for k, v in sorted(r["job_costs"].items())]))
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;margin:8px 0}"
             "td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px}img{max-width:100%}")
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>realgap ablate {html.escape(r['name'])}</title>"
                    f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def build_report(out: str | Path) -> Path:
    """Write ``<out>/report/ablation.json`` and ``index.html`` from the study's stores; returns the index."""
    from .report import json_safe

    out = Path(out)
    r = analyze(out)
    folder = out / "report"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ablation.json").write_text(json.dumps(json_safe(r), indent=1))
    index = folder / "index.html"
    write_html(index, r, _plots(r), out)
    return index
