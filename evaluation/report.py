"""``realgap report out=<dir>``: rebuild a suite's report from its episode store alone.

Writes ``<out>/report/``: ``index.html`` (self-contained: tables, plots as base64 PNG, videos),
``summary.json`` (everything), ``conditions.csv``, ``comparisons.csv``, ``episodes.csv``, ``faults.csv``
and ``videos/``. The report is derived data: rebuilding it replaces the previous report.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from pathlib import Path

import numpy as np

from realgap.data.replay_buffer import ReplayBuffer  # noqa: F401  (the store's type)
from realgap.envs import is_image_key
from realgap.errors import RealgapError

from . import stats
from .store import STORE_DIR, SUITE_FILE, open_store

# Reasons that mean "something broke", as opposed to the task being failed (timeout) or solved.
FAULT_REASONS = ("policy_error", "nan_action", "action_out_of_range", "sim_error", "unstable")
FAULTS_IN_RATES = ("Faulted episodes stay in every rate: each counts as one episode that did not succeed "
                   "(success rate, paired differences and McNemar count it as a failure; mean length uses the "
                   "steps it ran). They are never dropped, so a fault lowers a rate instead of hiding.")
DEFAULTS = {"videos_per_condition": 2, "fps": 20, "bootstrap_n": 10_000, "bootstrap_seed": 0, "baseline": None}


def check_options(options: dict, prefix: str = "") -> dict:
    """Validate report options up front (``realgap suite`` calls this before its first rollout)."""
    options = {**DEFAULTS, **(options or {})}

    def integer(key: str, low: int) -> None:
        v = options[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise RealgapError(f"{prefix}{key}: expected an integer >= {low}, got {v!r}")

    integer("videos_per_condition", 0)
    integer("bootstrap_n", 1)
    integer("bootstrap_seed", 0)
    fps = options["fps"]
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 1000:
        raise RealgapError(f"{prefix}fps: expected a number in (0, 1000], got {fps!r}")
    if options["baseline"] is not None and not isinstance(options["baseline"], str):
        raise RealgapError(f"{prefix}baseline: expected a condition name or null, got {options['baseline']!r}")
    return options


# ------------------------------------------------------------------------------------------ data
def load(out: Path) -> tuple[dict, list[dict], ReplayBuffer]:
    out = Path(out)
    suite_path, store_path = out / SUITE_FILE, out / STORE_DIR
    if not store_path.exists():
        raise RealgapError(f"out: {store_path} does not exist (run `realgap suite out={out}` first)")
    try:
        meta = json.loads(suite_path.read_text())
    except (OSError, ValueError) as e:
        raise RealgapError(f"{suite_path}: unreadable ({type(e).__name__})") from e
    store = open_store(store_path, mode="r")
    store.verify()  # a missing or damaged chunk reads as zeros or garbage: refuse to report on it
    try:
        infos = store.episode_infos()
    except Exception as e:
        raise RealgapError(f"{store_path}: unreadable episode_info ({type(e).__name__})") from e
    for i, info in enumerate(infos):
        info["index"] = i
    return meta, infos, store


def condition_order(meta: dict, infos: list[dict]) -> list[str]:
    planned = [cond[0] for cond in (meta.get("fingerprint") or {}).get("conditions") or []]  # [name, randomization, ...]
    return planned + sorted({i["condition"] for i in infos} - set(planned))


def summarize(meta: dict, infos: list[dict], options: dict) -> dict:
    """Every number of the report, as plain JSON-able data."""
    conds = condition_order(meta, infos)
    by_cond = {c: sorted((i for i in infos if i["condition"] == c), key=lambda i: i["seed"]) for c in conds}
    planned_seeds = (meta.get("fingerprint") or {}).get("seeds") or []
    baseline = options.get("baseline") or (meta.get("suite") or {}).get("baseline", "nominal")
    rows = []
    for c in conds:
        eps = by_cond[c]
        k = sum(bool(e["success"]) for e in eps)
        lengths = np.array([e["length"] for e in eps], float)
        ok_lengths = np.array([e["length"] for e in eps if e["success"]], float)
        reasons: dict[str, int] = {}
        for e in eps:
            reasons[e["termination_reason"]] = reasons.get(e["termination_reason"], 0) + 1
        rows.append({
            "condition": c,
            "n": len(eps),
            "planned": len(planned_seeds),
            "successes": k,
            "success_rate": stats.wilson(k, len(eps)).as_dict(),
            "episode_length": stats.mean_ci(lengths).as_dict(),
            "time_to_success": stats.mean_ci(ok_lengths).as_dict(),
            "faults": sum(reasons.get(r, 0) for r in FAULT_REASONS),
            "termination_reasons": dict(sorted(reasons.items())),
        })
    comparisons = []
    if baseline in by_cond:
        base = {e["seed"]: e["success"] for e in by_cond[baseline]}
        for c in conds:
            if c == baseline:
                continue
            other = {e["seed"]: e["success"] for e in by_cond[c]}
            cmp = stats.compare_paired(base, other, seed=int(options["bootstrap_seed"]), n_boot=int(options["bootstrap_n"]))
            comparisons.append({"condition": c, "baseline": baseline, **cmp.as_dict()})
    faults = [
        {k: e.get(k) for k in ("condition", "seed", "termination_reason", "length", "error", "collateral", "index")}
        for c in conds for e in by_cond[c] if e["termination_reason"] in FAULT_REASONS
    ]
    return {
        "suite": (meta.get("suite") or {}).get("name"),
        "policy": (meta.get("suite") or {}).get("policy"),
        "digest": meta.get("digest"),
        "baseline": baseline,
        "n_episodes": len(infos),
        "n_planned": len(planned_seeds) * len((meta.get("fingerprint") or {}).get("conditions") or conds),
        "conditions": rows,
        "comparisons": comparisons,
        "faults": faults,
        "fault_counts": {r: sum(f["termination_reason"] == r for f in faults) for r in FAULT_REASONS},
        # policy_error episodes that ended only because another slot of their batch raised in act()
        "collateral": sum(bool(f.get("collateral")) for f in faults),
        "faults_in_rates": FAULTS_IN_RATES,
    }


# ------------------------------------------------------------------------------------ plots/videos
def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _interval_arrays(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, low, high) arrays of the interval ``key`` of each row."""
    return tuple(np.array([r[key][part] for r in rows], float) for part in ("estimate", "low", "high"))


def _yerr(est: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Error-bar lengths, never negative (matplotlib raises on a negative error; NaN draws no bar)."""
    return np.stack([np.clip(est - lo, 0, None), np.clip(hi - est, 0, None)])


def plots(summary: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    rows = summary["conditions"]
    if rows:
        names = [r["condition"] for r in rows]
        est, lo, hi = _interval_arrays(rows, "success_rate")
        fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(rows) + 2), 3.2))
        ax.bar(names, est, color="#4c72b0")
        ax.errorbar(names, est, yerr=_yerr(est, lo, hi), fmt="none", ecolor="black", capsize=4)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("success rate (Wilson 95% CI)")
        ax.tick_params(axis="x", rotation=30)
        out["success"] = _png(fig)
    cmps = summary["comparisons"]
    if cmps:
        names = [c["condition"] for c in cmps]
        d, lo, hi = _interval_arrays(cmps, "difference")
        fig, ax = plt.subplots(figsize=(5.5, 0.45 * len(cmps) + 1.2))
        y = np.arange(len(cmps))[::-1]
        ax.errorbar(d, y, xerr=_yerr(d, lo, hi), fmt="o", color="#c44e52", capsize=4)
        ax.axvline(0, color="grey", lw=1)
        ax.set_yticks(y, names)
        ax.set_xlim(-1.05, 1.05)
        ax.set_xlabel(f"success difference vs {summary['baseline']} (paired bootstrap 95% CI)")
        out["difference"] = _png(fig)
    return out


def select_videos(infos: list[dict], conds: list[str], per_condition: int) -> list[dict]:
    """The first failures of each condition (by seed) that kept frames, then its first success."""
    chosen = []
    for c in conds:
        eps = sorted((i for i in infos if i["condition"] == c and i.get("frames")), key=lambda i: i["seed"])
        chosen += [e for e in eps if not e["success"]][:per_condition]
        chosen += [e for e in eps if e["success"]][:1]
    return chosen


def write_videos(store: ReplayBuffer, chosen: list[dict], folder: Path, fps: float) -> list[dict]:
    from .videos import write_video

    image_keys = [k for k in store.keys if is_image_key(k)]
    if not image_keys or not chosen:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    videos = []
    for info in chosen:
        frames = store.episode(info["index"], keys=image_keys)
        strip = np.concatenate([frames[k] for k in image_keys], axis=2)  # cameras side by side
        outcome = "success" if info["success"] else info["termination_reason"]
        name = f"{info['condition']}_seed{info['seed']}_{outcome}"
        written = write_video(folder / f"{name}.mp4", strip, fps=fps)
        if written["mp4"] is not None:
            videos.append({"condition": info["condition"], "seed": info["seed"], "outcome": outcome, **written})
    return videos


# ------------------------------------------------------------------------------------------ files
def _fmt(x: float, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.1f}%" if pct else f"{x:.3g}"


def _ci(iv: dict, pct: bool = False) -> str:
    return f"{_fmt(iv['estimate'], pct)} [{_fmt(iv['low'], pct)}, {_fmt(iv['high'], pct)}]"


def json_safe(x):
    """Plain JSON data: NaN/inf (an undefined interval) become null, Paths and other objects strings."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if x is None or isinstance(x, str):
        return x
    return str(x)


def _csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        path.write_text("")
        return
    flat = []
    for r in rows:
        f = {}
        for k, v in r.items():
            if isinstance(v, dict):
                f.update({f"{k}_{kk}": vv for kk, vv in v.items()})
            else:
                f[k] = v
        flat.append(f)
    fields = list(dict.fromkeys(k for r in flat for k in r))
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows({k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in r.items()} for r in flat)


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _video_figure(v: dict, caption: str, caption_without_video: str) -> str:
    """A video written by ``write_videos`` embedded in a figure (captions are HTML); without a playable codec,
    the second caption alone."""
    playable = v["mp4"] if v["codec"] == "avc1" else v["webm"]
    if playable is None:
        return f"<figure><figcaption>{caption_without_video}</figcaption></figure>"
    mime = "video/mp4" if str(playable).endswith(".mp4") else "video/webm"
    data = base64.b64encode(Path(playable).read_bytes()).decode()
    return (f'<figure><video controls loop muted width="192" src="data:{mime};base64,{data}"></video>'
            f"<figcaption>{caption}</figcaption></figure>")


def _video_tag(v: dict, report_dir: Path) -> str:
    label = html.escape(f"{v['condition']} seed {v['seed']}: {v['outcome']}")
    link = f'<a href="{html.escape(str(Path(v["mp4"]).relative_to(report_dir)))}">mp4</a>'
    return _video_figure(v, f"{label} ({link})", f"{label} ({link}, {v['codec']})")


def write_html(path: Path, summary: dict, images: dict[str, str], videos: list[dict]) -> None:
    s = summary
    cond_rows = [[r["condition"], f"{r['n']}/{r['planned']}", r["successes"], _ci(r["success_rate"], True),
                  _ci(r["episode_length"]), _ci(r["time_to_success"]), r["faults"],
                  ", ".join(f"{k}: {v}" for k, v in r["termination_reasons"].items())] for r in s["conditions"]]
    cmp_rows = [[c["condition"], c["n_pairs"], c["only_base"], c["only_other"], _ci(c["difference"], True),
                 f"{c['p_value']:.3g}"] for c in s["comparisons"]]
    fault_rows = [[f["condition"], f["seed"], f["termination_reason"] + (" (collateral)" if f.get("collateral") else ""),
                   f["length"], f["error"]] for f in s["faults"]]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>realgap suite report</title><style>",
        "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}",
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}th{background:#eee}",
        "figure{display:inline-block;margin:4px}figcaption{font-size:12px}</style></head><body>",
        f"<h1>Suite <code>{html.escape(str(s['suite']))}</code></h1>",
        f"<p>policy: <code>{html.escape(json.dumps(s['policy']))}</code> · episodes: {s['n_episodes']}/{s['n_planned']}"
        f" · config digest <code>{html.escape(str(s['digest']))}</code></p>",
        "<h2>Success per condition</h2>",
        _table(["condition", "episodes", "successes", "success [Wilson 95% CI]", "mean length [95% CI]",
                "time to success [95% CI]", "faults", "termination reasons"], cond_rows),
    ]
    if "success" in images:
        parts.append(f'<img src="data:image/png;base64,{images["success"]}">')
    parts.append(f"<h2>Paired difference vs {html.escape(str(s['baseline']))} (same seeds)</h2>")
    parts.append("<p>Signed difference in success rate (condition − baseline) with a paired bootstrap 95% CI; "
                 "p-value: exact McNemar test on the discordant seeds.</p>")
    parts.append(_table(["condition", "pairs", f"only {s['baseline']} succeeds", "only condition succeeds",
                         "difference [95% CI]", "p (McNemar)"], cmp_rows) if cmp_rows else
                 "<p>No baseline condition in this store.</p>")
    if "difference" in images:
        parts.append(f'<img src="data:image/png;base64,{images["difference"]}">')
    counts = ", ".join(f"{k}: {v}" for k, v in s["fault_counts"].items())
    parts.append(f"<h2>Faulted episodes ({len(s['faults'])})</h2><p>{html.escape(counts)}</p>"
                 f"<p>{html.escape(s['faults_in_rates'])}</p>")
    if s["collateral"]:
        parts.append(f"<p>{s['collateral']} of the policy_error episodes are collateral: act() serves a whole batch, "
                     "so one raise ended every episode of it, and these ran fine when offered to act() alone. "
                     "Rerun with <code>suite.batch_envs=1</code> to isolate faults.</p>")
    if fault_rows:
        parts.append(_table(["condition", "seed", "reason", "length", "error"], fault_rows))
    parts.append(f"<h2>Videos ({len(videos)})</h2>")
    parts += [_video_tag(v, path.parent) for v in videos] or ["<p>No frames were recorded (record_frames=none).</p>"]
    parts.append("</body></html>")
    path.write_text("\n".join(parts))


def build_report(out: Path, options: dict | None = None) -> Path:
    """Rebuild ``<out>/report`` from the store; returns the path of ``index.html``."""
    options = check_options(options)
    out = Path(out)
    meta, infos, store = load(out)
    summary = summarize(meta, infos, options)
    report_dir = out / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    chosen = select_videos(infos, [r["condition"] for r in summary["conditions"]], int(options["videos_per_condition"]))
    videos = write_videos(store, chosen, report_dir / "videos", float(options["fps"]))
    summary["videos"] = [{k: str(v) if isinstance(v, Path) else v for k, v in vid.items()} for vid in videos]
    episodes = [{k: v for k, v in i.items() if k not in ("chunks",)} for i in infos]
    summary_json = json.dumps(json_safe({**summary, "episodes": episodes}), indent=1, allow_nan=False)
    (report_dir / "summary.json").write_text(summary_json)
    _csv(report_dir / "conditions.csv", summary["conditions"])
    _csv(report_dir / "comparisons.csv", summary["comparisons"])
    _csv(report_dir / "episodes.csv", episodes)
    _csv(report_dir / "faults.csv", summary["faults"])
    index = report_dir / "index.html"
    write_html(index, summary, plots(summary), videos)
    return index


def main(cfg, resume: bool = False, overwrite: bool = False) -> int:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(cfg, resolve=True)
    if not cfg.get("out"):
        raise RealgapError("out: missing (the suite output folder, e.g. out=outputs/suite/default)")
    options = check_options({k: v for k, v in cfg.items() if k in DEFAULTS})
    index = build_report(Path(cfg["out"]), options)
    print(f"report: {index}")
    return 0
