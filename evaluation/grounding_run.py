"""``realgap grounding``: does the policy follow the object it is told to, or the place it memorized?

    realgap grounding policy=<spec> [grounding=<preset>] [out=<dir>] [workers=N] [--resume | --overwrite]

Three tests, each a set of paired, seeded variants of training-distribution scenes (``TaskVariant``,
``realgap.envs.tasks``), run as one ordinary suite (one condition per variant, every variant on the
same seeds; parallel, resumable, stored like any suite):

1. novel-object swap: the instructed receptacle is a held-out one (``novel_*``) or a training one
   absent from the scene (``training_*``), put in place of the trained target at L0 (``*_in_place``,
   the control) or at a free slot L1 with L0 empty (``*_move``) or with the trained target left at L0
   as a distractor (``*_move_distractor``);
2. counterfactual instruction: ``canonical`` and ``counterfactual`` share scene and seed; the latter
   names the other receptacle present;
3. instruction robustness: ``phrase_*`` reword the canonical instruction on the same seeds.

The scoring lives in ``grounding.py`` (pure functions of the episode store); this module plans the
variants, runs them through the suite and writes the HTML/JSON/CSV report.
"""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path

import numpy as np

from realgap.errors import RealgapError

from .grounding import (CATEGORIES, MOVED, REACH, SAME_PATH, SWAP_VARIANTS, episode_records, percent_text,
                        summarize)
from .report import _png, _table, _video_figure  # the reports' shared PNG/HTML helpers

TESTS = ("swap", "counterfactual", "robustness")
REPORT_DEFAULTS = {"fps": 10, "videos": 8, "paths_per_variant": 2, "bootstrap_n": 10_000, "bootstrap_seed": 0}


# ------------------------------------------------------------------------------ variants -> suite
def variant_specs(preset: dict) -> dict[str, dict]:
    """Condition name -> {"test": ..., "task_variant": ...} for the preset's tests, in report order."""
    tests = preset.get("tests") or list(TESTS)
    unknown = [t for t in tests if t not in TESTS]
    if unknown:
        raise RealgapError(f"grounding.tests: unknown test(s) {unknown}; known: {', '.join(TESTS)}")
    pin = preset.get("target_slot")
    out = {"canonical": {"test": "control", "task_variant": {"name": "canonical", "target_slot": pin}}}
    if "swap" in tests:
        swap = preset.get("swap") or {}
        novel = swap.get("novel", "blue cup")
        from realgap.envs.catalogue import RECEPTACLE_NAMES, receptacle_spec

        if novel not in RECEPTACLE_NAMES:
            raise RealgapError(f"grounding.swap.novel: unknown receptacle {novel!r}; known: {', '.join(RECEPTACLE_NAMES)}")
        if not receptacle_spec(novel).held_out:
            raise RealgapError(f"grounding.swap.novel: {novel!r} is a training receptacle; name a held-out one")
        novel_object = swap.get("novel_object")
        if novel_object is not None:
            from realgap.envs.catalogue import OBJECT_NAMES, object_spec

            if novel_object not in OBJECT_NAMES:
                raise RealgapError(f"grounding.swap.novel_object: unknown object {novel_object!r}; known: {', '.join(OBJECT_NAMES)}")
            if not object_spec(novel_object).held_out:
                raise RealgapError(f"grounding.swap.novel_object: {novel_object!r} is a training object; name a held-out one")
        dist = swap.get("min_distance", 0.15)
        for kind, item in (("novel", novel), ("training", "training")):
            for suffix, place, keep in (("in_place", "in_place", False), ("move", "move", False),
                                        ("move_distractor", "move", True)):
                name = f"{kind}_{suffix}"
                out[name] = {"test": "swap", "task_variant": {"name": name, "target_slot": pin, "swap": {
                    "item": item, "place": place, "keep_trained": keep, "min_distance": dist}}}
        if novel_object is not None:  # the object to move swapped in place (the receptacle stays at L0)
            for kind, item in (("novel", novel_object), ("training", "training")):
                name = f"{kind}_object_in_place"
                out[name] = {"test": "swap", "task_variant": {"name": name, "target_slot": pin, "swap_object": item}}
    if "counterfactual" in tests:
        out["counterfactual"] = {"test": "counterfactual",
                                 "task_variant": {"name": "counterfactual", "target_slot": pin, "instruct": "other"}}
    if "robustness" in tests:
        rob = preset.get("robustness") or {}
        phrasings = dict(rob.get("phrasings") or {})
        if rob.get("synonyms"):
            phrasings["synonyms"] = {"phrasing": None, "synonyms": dict(rob["synonyms"])}
        if not phrasings:
            raise RealgapError("grounding.robustness.phrasings: empty; give at least one template or drop the test")
        for key, text in phrasings.items():
            spec = text if isinstance(text, dict) else {"phrasing": text}
            name = f"phrase_{key}"
            out[name] = {"test": "robustness", "task_variant": {"name": name, "target_slot": pin, **spec}}
    return out


def suite_config(cfg: dict) -> dict:
    """The ``realgap suite`` config of a grounding run (one condition per variant)."""
    preset = cfg.get("grounding")
    if not isinstance(preset, dict):
        raise RealgapError("grounding: missing (pick a preset with grounding=<name>)")
    spec = cfg.get("policy_spec")
    if not isinstance(spec, str) or not spec or spec == "???":
        raise RealgapError("policy: missing (policy=expert | a checkpoint folder | module:factory)")
    from realgap.envs.tasks import object_pool, receptacle_pool

    env = dict(preset.get("env") or {})
    kwargs = dict(env.get("kwargs") or {})
    # Held-out items enter only through the variants: the scenes themselves stay the training pools.
    kwargs.update(allow_held_out=True,
                  objects=list(object_pool(kwargs.get("objects"), False)),
                  receptacles=list(receptacle_pool(kwargs.get("receptacles"), False)))
    env["kwargs"] = kwargs
    rand = preset.get("randomization", "nominal")
    conditions = {name: {"randomization": rand, "env_kwargs": {"task_variant": v["task_variant"]}}
                  for name, v in variant_specs(preset).items()}
    suite = {
        "name": f"grounding_{preset.get('name', 'default')}",
        "policy": {"spec": spec, "kwargs": dict(cfg.get("policy_kwargs") or {})},
        "env": env, "seeds": preset.get("seeds"), "batch_envs": preset.get("batch_envs", 8),
        "record_frames": preset.get("record_frames", "failures"),
        "frames_first_seeds": preset.get("frames_first_seeds", 2),
        "record_chunks": False, "baseline": "canonical", "conditions": conditions,
    }
    return {"suite": suite, "out": cfg.get("out"), "executor": cfg.get("executor", "local"),
            "workers": cfg.get("workers"), "ray_address": cfg.get("ray_address")}


def validate_variants(suite: dict) -> None:
    """Build every (variant, seed) task before anything runs: an unbuildable one is a one-line error."""
    from realgap.envs.tasks import TaskVariant, make_task, object_pool, receptacle_pool
    from .plan import build_plan

    plan = build_plan(suite, None)
    kw = plan.env_kwargs
    objects, receptacles = object_pool(kw["objects"], False), receptacle_pool(kw["receptacles"], False)
    for cond in plan.conditions:
        variant = TaskVariant.from_spec(cond.env_kwargs["task_variant"], True, f"grounding variant {cond.name}")
        for seed in plan.seeds:
            make_task(int(seed), objects, receptacles, variant)


def check_reads_instruction(suite: dict) -> None:
    """Grounding needs an instruction in the observation and a policy that reads it."""
    import realgap.envs as envs

    from .policy_loader import load_policy

    env_cfg = suite["env"]
    env = envs.make(env_cfg["id"], **{**env_cfg["kwargs"], **suite["conditions"]["canonical"]["env_kwargs"]})
    try:
        obs, _ = env.reset(seed=int(suite["seeds"]["start"]))
    finally:
        env.close()
    if "instruction" not in obs:
        raise RealgapError(f"grounding.env.id: {env_cfg['id']} observations have no 'instruction' "
                           f"(keys: {', '.join(sorted(obs))}); grounding needs one")
    policy = load_policy(suite["policy"]["spec"], suite["policy"]["kwargs"])
    model = getattr(policy, "policy", policy)
    config = getattr(model, "config", None) or {}
    if getattr(model, "reads_instruction", True) is False or config.get("use_instruction", True) is False:
        raise RealgapError(f"policy: {suite['policy']['spec']} does not read the instruction "
                           "(use_instruction: false); grounding needs a policy whose observation includes it")


# ----------------------------------------------------------------------------------- report
def rates_plot(summary: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["variants"]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(rows) + 2), 3.4))
    for off, key, colour, label in ((-0.2, "object_following", "#4c72b0", "instructed item"),
                                    (0.2, "location_following", "#c44e52", "memorized location L0")):
        est = np.array([r[key]["estimate"] for r in rows], float)
        lo = np.array([r[key]["low"] for r in rows], float)
        hi = np.array([r[key]["high"] for r in rows], float)
        ax.bar(x + off, est, 0.4, color=colour, label=label)
        ax.errorbar(x + off, est, yerr=[est - lo, hi - est], fmt="none", ecolor="black", capsize=3)
    ax.set_xticks(x, [r["variant"] for r in rows], rotation=35, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of episodes (Wilson 95% CI)")
    ax.legend(fontsize=8)
    return _png(fig)


def paths_plot(records: list[dict], conds: list[str], per_variant: int) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from realgap.envs.catalogue import COLOURS, RECEPTACLE_NAMES, receptacle_spec

    chosen = [r for c in conds for r in sorted((r for r in records if r["condition"] == c), key=lambda r: r["seed"])[:per_variant]]
    if not chosen:
        return None
    cols = min(4, len(chosen))
    rows = math.ceil(len(chosen) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat[len(chosen):]:
        ax.axis("off")
    colour = {"instructed": "#2a9d3f", "memorized": "#c44e52", "other": "#e08a1e", "none": "#777777"}
    for ax, r in zip(axes.flat, chosen):
        for name, xy in r["receptacles"].items():
            if name in RECEPTACLE_NAMES:
                ax.add_patch(plt.Rectangle((xy[0] - 0.05, xy[1] - 0.05), 0.1, 0.1, fc=COLOURS[receptacle_spec(name).colour],
                                           alpha=0.6, lw=2 if name == r["instructed"] else 0.5, ec="black"))
                ax.text(xy[0], xy[1] - 0.075, name, ha="center", fontsize=6)
        for key, label in (("memorized_xy", "L0"), ("new_xy", "L1")):
            if r.get(key) is not None:
                ax.add_patch(plt.Circle(r[key], REACH, fill=False, ls="--", color="black", lw=0.8))
                ax.text(r[key][0], r[key][1] + 0.06, label, ha="center", fontsize=8, weight="bold")
        p = np.asarray(r["path"])
        ax.plot(p[:, 0], p[:, 1], color=colour[r["dest_category"]], lw=1.3)
        ax.plot(p[0, 0], p[0, 1], "o", color="black", ms=3)
        if r["dest_xy"] is not None:
            ax.plot(*r["dest_xy"], "x", color=colour[r["dest_category"]], ms=9, mew=2)
        ax.set_xlim(-0.27, 0.27)
        ax.set_ylim(-0.24, 0.22)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{r['condition']} s{r['seed']}: {r['dest_category']}", fontsize=7)
    return _png(fig)


def pick_videos(records: list[dict], conds: list[str], limit: int) -> list[dict]:
    """Representative episodes that kept frames: per variant, the first of each destination seen."""
    chosen, seen = [], set()
    for c in conds:
        for r in sorted((r for r in records if r["condition"] == c and r["frames"]), key=lambda r: r["seed"]):
            if (c, r["dest_category"]) not in seen:
                seen.add((c, r["dest_category"]))
                chosen.append(r)
    # variants that test grounding first, then the rest
    chosen.sort(key=lambda r: (r["condition"] not in MOVED, conds.index(r["condition"])))
    return chosen[:limit]


def _video_tag(v: dict, label: str) -> str:
    return _video_figure(v, html.escape(label), f"{html.escape(label)} (no playable codec)")


def write_html(path: Path, meta: dict, summary: dict, images: dict, videos: list[tuple[dict, str]]) -> None:
    s = summary
    var_rows = [[v["variant"], v["n"], percent_text(v["success"]), percent_text(v["object_following"]),
                 percent_text(v["location_following"]) if v["identifiable"] else f"{percent_text(v['location_following'])} (L0 = instructed)",
                 percent_text(v["other"]), percent_text(v["none"])] for v in s["variants"]]
    matrix = [[v["variant"], *[f"{v['counts'][c]} ({100 * v['counts'][c] / max(1, v['n']):.0f}%)" for c in CATEGORIES]]
              for v in s["variants"]]
    pair_rows = [[p["measures"], p["base"], p["other"], p["n_pairs"], p["only_base"], p["only_other"],
                  f"{100 * p['difference']['estimate']:.0f} [{100 * p['difference']['low']:.0f}, {100 * p['difference']['high']:.0f}]"
                  if p["difference"]["estimate"] is not None else "n/a", f"{p['p_value']:.3g}"] for p in s["pairs"]]
    policy = (meta.get("suite") or {}).get("policy")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>realgap grounding</title><style>",
        "body{font-family:sans-serif;margin:2em;max-width:1150px}table{border-collapse:collapse;margin:1em 0}",
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}th{background:#eee}",
        ".verdict{background:#f4f4ee;padding:0.8em;border-left:4px solid #888}",
        "figure{display:inline-block;margin:4px}figcaption{font-size:12px;max-width:200px}</style></head><body>",
        f"<h1>Grounding: <code>{html.escape(json.dumps(policy))}</code></h1>",
        f"<p class='verdict'>{html.escape(s['verdict'])}</p>",
        "<p>Each variant runs the same seeds. <b>instructed</b>: the gripper released (or, never releasing, was carrying) "
        "the object over the receptacle the instruction names; <b>memorized</b>: over L0, where the trained target stood "
        "(empty, or holding the trained target as a distractor); <b>other</b>: another receptacle; <b>none</b>: no "
        f"held object released within {100 * REACH:.0f} cm of any (nor one that slipped out landing in one). Success and the standard tables: "
        "<a href='index.html'>suite report</a>.</p>",
        "<h2>Per-variant rates</h2>",
        _table(["variant", "episodes", "success", "object-following", "location-following (L0)", "other", "none"], var_rows),
        f'<img src="data:image/png;base64,{images["rates"]}">' if images.get("rates") else "",
        "<h2>Follow matrix (where the gripper went)</h2>", _table(["variant", *CATEGORIES], matrix),
        "<h2>Paired comparisons (went to the instructed item; same seeds)</h2>",
        "<p>Difference = other − base in percentage points, paired bootstrap 95% CI; p: exact McNemar.</p>",
        _table(["measures", "base", "other", "pairs", "only base", "only other", "difference [95% CI]", "p"], pair_rows)
        if pair_rows else "<p>No swap variants in this run.</p>",
    ]
    cf = s.get("counterfactual")
    if cf:
        parts += ["<h2>Counterfactual instruction (same scene and seed, the other receptacle named)</h2>",
                  _table(["scenes", "follows both instructions", "same destination (ignores the instruction)",
                          f"path unchanged (< {100 * SAME_PATH:.0f} cm)", "median path divergence"],
                         [[cf["n"], percent_text(cf["follows_both"]), percent_text(cf["invariant_destination"]), percent_text(cf["unchanged_path"]),
                           f"{100 * cf['median_path_divergence_m']:.1f} cm" if cf["median_path_divergence_m"] is not None else "n/a"]])]
    if s["robustness"]:
        rows = []
        for r in s["robustness"]:
            c = r["success_vs_canonical"]
            j, g = r["jerk_mm2"], r["gripper_switches"]
            rows.append([r["variant"], r["example"], r["n_pairs"], percent_text(r["success"]), f"{c['p_value']:.3g}",
                         f"{j['variant']['estimate']:.3g} vs {j['canonical']['estimate']:.3g}", f"{j['p_wilcoxon']:.3g}",
                         f"{g['variant']['estimate']:.2f} vs {g['canonical']['estimate']:.2f}", f"{g['p_wilcoxon']:.3g}"])
        parts += ["<h2>Instruction robustness (vs the canonical wording, same seeds)</h2>",
                  "<p>Jerk: mean squared third difference of end-effector positions (mm²); switches: gripper open/close "
                  "flips per episode. Paired tests: McNemar (success), Wilcoxon signed-rank (jerk, switches).</p>",
                  _table(["variant", "example", "pairs", "success", "p (McNemar)", "jerk (variant vs canonical)", "p",
                          "gripper switches", "p"], rows)]
    if images.get("paths"):
        parts += ["<h2>End-effector paths, top-down</h2><p>Receptacles as coloured squares (the instructed one outlined), "
                  f"L0/L1 dashed circles of radius {100 * REACH:.0f} cm, × where the gripper released.</p>",
                  f'<img src="data:image/png;base64,{images["paths"]}">']
    parts.append(f"<h2>Videos ({len(videos)})</h2>")
    parts += [_video_tag(v, label) for v, label in videos] or ["<p>No frames were recorded.</p>"]
    parts.append("</body></html>")
    path.write_text("\n".join(parts))


def build_grounding_report(out: Path, options: dict | None = None) -> Path:
    """Write ``<out>/report/grounding.{html,json}`` and ``grounding_episodes.csv`` from the store alone."""
    from .report import condition_order, load, write_videos

    options = {**REPORT_DEFAULTS, **(options or {})}
    out = Path(out)
    meta, infos, store = load(out)
    if not infos:
        raise RealgapError(f"{out}: the episode store holds no episodes")
    order = condition_order(meta, infos)
    records = episode_records(infos, store)
    summary = summarize(records, order, options)
    report_dir = out / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    images = {"rates": rates_plot(summary),
              "paths": paths_plot(records, [c for c in order if c in ("canonical", *SWAP_VARIANTS, "counterfactual")],
                                  int(options["paths_per_variant"]))}
    chosen = pick_videos(records, order, int(options["videos"]))
    written = write_videos(store, [{**infos[r["index"]], "index": r["index"]} for r in chosen],
                           report_dir / "videos", float(options["fps"]))
    labels = {(r["condition"], r["seed"]): f"{r['condition']} seed {r['seed']}: went to {r['dest_category']} "
              f"({r['dest_item'] or 'nothing'}); \"{r['instruction']}\"" for r in chosen}
    videos = [(v, labels[(v["condition"], v["seed"])]) for v in written]
    plain = [{k: v for k, v in r.items() if k not in ("path",)} for r in records]
    (report_dir / "grounding.json").write_text(json.dumps({"policy": (meta.get("suite") or {}).get("policy"),
                                                           **summary, "episodes": plain}, indent=1, default=str))
    with (report_dir / "grounding_episodes.csv").open("w", newline="") as fh:
        fields = [k for k in plain[0] if k != "receptacles"]
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(plain)
    page = report_dir / "grounding.html"
    write_html(page, meta, summary, images, videos)
    return page


def main(cfg, resume: bool = False, overwrite: bool = False) -> int:
    from omegaconf import DictConfig, OmegaConf

    from .report import build_report
    from .suite import run_suite

    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    run = suite_config(plain)
    validate_variants(run["suite"])  # every (variant, seed) scene can be built
    check_reads_instruction(run["suite"])
    out = run_suite(run, resume=resume, overwrite=overwrite)
    options = dict(plain.get("report") or {})
    index = build_report(out, {"videos_per_condition": 1, **{k: options[k] for k in ("fps", "bootstrap_n", "bootstrap_seed") if k in options}})
    page = build_grounding_report(out, options)
    print(f"report: {index}")
    print(f"grounding: {page}")
    summary = json.loads((page.parent / "grounding.json").read_text())
    print(summary["verdict"])
    return 0
