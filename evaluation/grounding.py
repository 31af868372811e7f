"""Grounding analysis: pure functions from a grounding suite's episode store to where each episode went.

``realgap grounding`` (``grounding_run.py``) builds the variants and runs them as one suite; this module only
reads what the suite stored. ``classify`` decides where each episode *went* from the
end-effector path (``proprio[:3]``) and the gripper (command ``action[:, 3] > 0``, fingers
``proprio[6:8]``): the receptacle the gripper released a held object over, else the one it was
carrying the object at when the episode ended (else, rarely, and also when that release went
nowhere, the one an object that slipped out landed in): ``instructed`` / ``memorized`` (L0, the
trained target's place) / ``other`` / ``none``. ``summarize`` turns the per-episode records into
per-variant rates with Wilson CIs, paired tests and the follow matrix; ``verdict`` says it in words.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


from . import stats

CATEGORIES = ("instructed", "memorized", "other", "none")
HOLD_MIN = 0.006  # m: fingers closer than this to the centre line hold nothing (closed on air)
HOLD_MAX = 0.037  # m: wider than this they are (still) open -- FINGER_OPEN is 0.045
REACH = 0.08  # m: a release farther than this (xy) from every receptacle and L0 went nowhere (slots are 0.16 apart)
LANDED = 0.04  # m: an unreleased object that moved this far and ends this close to a receptacle landed in it
SAME_PATH = 0.02  # m: counterfactual paths closer than this at every step are "unchanged"
SWAP_VARIANTS = ("novel_in_place", "novel_move", "novel_move_distractor",
                 "training_in_place", "training_move", "training_move_distractor",
                 "novel_object_in_place", "training_object_in_place")
MOVED = ("novel_move", "novel_move_distractor", "training_move", "training_move_distractor", "counterfactual")
# (base, other, what the difference measures): paired McNemar on "went to the instructed receptacle"
PAIRS = (
    ("training_move", "novel_move", "novelty (L0 empty)"),
    ("training_move_distractor", "novel_move_distractor", "novelty (trained target at L0)"),
    ("novel_move", "novel_move_distractor", "distractor at L0 (novel item)"),
    ("training_move", "training_move_distractor", "distractor at L0 (training item)"),
    ("novel_in_place", "novel_move", "relocation (novel item)"),
    ("training_in_place", "training_move", "relocation (training item)"),
    ("training_object_in_place", "novel_object_in_place", "novelty (object to move, in place)"),
)


# --------------------------------------------------------------------------- classification
@dataclass(frozen=True)
class Destination:
    category: str  # one of CATEGORIES
    item: str | None  # the receptacle (or "L0 (empty)") the gripper went to
    mode: str  # release | carry | object (nothing released, but an object landed in it) | none
    step: int | None  # the release step (or the last step while carrying)
    xy: tuple[float, float] | None  # end-effector xy there

    def as_dict(self) -> dict:
        return asdict(self)


def gripper_closed(actions: np.ndarray) -> np.ndarray:
    """Per step: the gripper commanded closed (the env closes on action[3] > 0). NaN rows are open."""
    a = np.asarray(actions, float)[:, 3]
    return np.nan_to_num(a, nan=-1.0) > 0


def holding(proprio: np.ndarray) -> np.ndarray:
    """Per step: the fingers stand at an object's width (neither open nor closed on air)."""
    fingers = np.asarray(proprio, float)[:, 6:8].mean(axis=1)
    return (fingers > HOLD_MIN) & (fingers < HOLD_MAX)


def places(task: dict, object_state: np.ndarray | None) -> dict[str, np.ndarray]:
    """Candidate destinations -> xy: every receptacle present at the start, plus L0 if it stands empty."""
    from realgap.envs.catalogue import ITEM_NAMES
    from realgap.envs.scene import RECEPTACLE_SLOTS

    out: dict[str, np.ndarray] = {}
    for name, slot in zip(task["receptacles"], task["receptacle_slots"]):
        xy = np.array(RECEPTACLE_SLOTS[slot], float)
        if object_state is not None:  # the observed pose (placement DR may have moved it)
            row = np.asarray(object_state, float).reshape(len(ITEM_NAMES), -1)[ITEM_NAMES.index(name)]
            if row[0] > 0.5:
                xy = row[1:3].copy()
        out[name] = xy
    l0 = memorized_xy(task)
    if l0 is not None and all(np.hypot(*(xy - l0)) > REACH / 2 for xy in out.values()):
        out["L0 (empty)"] = l0
    return out


def memorized_xy(task: dict) -> np.ndarray | None:
    g = task.get("grounding") or {}
    return np.array(g["memorized_xy"], float) if g.get("memorized_xy") is not None else None


def classify(proprio: np.ndarray, actions: np.ndarray, task: dict, object_state: np.ndarray | None = None) -> Destination:
    """Where one episode went (see the module docstring). ``object_state``: the observed rows per step (T+1, R*6)
    give the receptacles' observed poses and, when no held object was released, the object that ended up in one."""
    proprio, actions = np.asarray(proprio, float), np.asarray(actions, float)
    os0 = None if object_state is None else np.asarray(object_state, float)[0]
    n = min(len(proprio), len(actions))
    command = actions[:n, 3]
    closed, opened = gripper_closed(actions[:n]), np.isfinite(command) & (command <= 0)
    held = holding(proprio[:n])
    # release: the command opens at step t after a close at t-1 while the fingers still hold something
    releases = [t for t in range(1, n) if closed[t - 1] and opened[t] and held[t]]
    acted = np.flatnonzero(np.isfinite(command))  # the stored last row has no action (NaN)
    if len(acted) and closed[acted[-1]] and held[n - 1]:
        mode, step = "carry", n - 1  # still closed on the object when the episode ended
    elif releases:
        mode, step = "release", releases[-1]
    else:  # nothing released: an object that slipped out on the way may still have landed in a receptacle
        return _landed(task, object_state)
    xy = proprio[step, :2]
    cands = places(task, os0)
    point = (float(xy[0]), float(xy[1]))
    name, dist = min(((k, float(np.hypot(*(xy - v)))) for k, v in cands.items()), key=lambda kv: kv[1]) if cands else (None, math.inf)
    if dist > REACH:  # released/carried nowhere: an object that slipped out later may still have landed in one
        landed = _landed(task, object_state)
        return landed if landed.category != "none" else Destination("none", None, mode, int(step), point)
    return Destination(_category(name, cands, task), name, mode, int(step), point)


def _category(name: str, cands: dict[str, np.ndarray], task: dict) -> str:
    instructed = task["target_receptacle"]
    l0 = memorized_xy(task)
    if name == instructed:
        return "instructed"
    if name == "L0 (empty)" or (l0 is not None and np.hypot(*(cands[name] - l0)) < REACH / 2):
        return "memorized"
    return "other"


def _landed(task: dict, object_state: np.ndarray | None) -> Destination:
    """Mode "object": an object moved more than LANDED m that ended within LANDED of a receptacle's centre."""
    from realgap.envs.catalogue import ITEM_NAMES, OBJECT_NAMES

    nothing = Destination("none", None, "none", None, None)
    if object_state is None or len(object_state) < 2:
        return nothing
    rows = np.asarray(object_state, float).reshape(len(object_state), len(ITEM_NAMES), -1)
    cands = places(task, rows[0].reshape(-1))
    for name in task.get("objects") or []:
        k = OBJECT_NAMES.index(name)
        first, last = rows[0, k, 1:3], rows[-1, k, 1:3]
        if rows[-1, k, 0] < 0.5 or np.hypot(*(last - first)) < LANDED:
            continue
        hits = [(float(np.hypot(*(last - v))), c) for c, v in cands.items() if c != "L0 (empty)"]
        if hits and min(hits)[0] < LANDED:
            item = min(hits)[1]
            return Destination(_category(item, cands, task), item, "object", len(rows) - 1,
                               (float(last[0]), float(last[1])))
    return nothing


def jerk(proprio: np.ndarray) -> float:
    """Mean squared third difference of the end-effector positions, in mm^2 (per step^3)."""
    ee = np.asarray(proprio, float)[:, :3] * 1000.0
    d3 = np.diff(ee, n=3, axis=0)
    return float(np.mean(np.sum(d3 ** 2, axis=1))) if len(d3) else math.nan


def gripper_switches(actions: np.ndarray) -> int:
    """How often the gripper command flips between open and close."""
    a = np.asarray(actions, float)
    closed = gripper_closed(a[np.isfinite(a[:, 3])])
    return int(np.sum(closed[1:] != closed[:-1]))


def path_divergence(a: np.ndarray, b: np.ndarray) -> float:
    """Largest xy distance between two end-effector paths, step by step (the shorter one waits at its end)."""
    n = max(len(a), len(b))
    pa = np.concatenate([a, np.repeat(a[-1:], n - len(a), 0)])[:, :2]
    pb = np.concatenate([b, np.repeat(b[-1:], n - len(b), 0)])[:, :2]
    return float(np.max(np.hypot(*(pa - pb).T)))


# --------------------------------------------------------------------------------- analysis
def episode_records(infos: list[dict], store) -> list[dict]:
    """One record per stored episode: outcome, destination, smoothness, path (from the store only)."""
    keys = [k for k in ("proprio", "action", "object_state") if k in store.keys]
    records = []
    for i, info in enumerate(infos):
        steps = store.episode(info.get("index", i), keys=keys)
        task = info.get("task") or {}
        if "proprio" not in steps or not task.get("receptacles"):
            dest = Destination("none", None, "none", None, None)
        else:
            dest = classify(steps["proprio"], steps["action"], task, steps.get("object_state"))
        proprio = steps.get("proprio", np.zeros((1, 8)))
        g = task.get("grounding") or {}
        records.append({
            "condition": info["condition"], "seed": int(info["seed"]), "index": info.get("index", i),
            "success": bool(info["success"]), "termination_reason": info.get("termination_reason"),
            "instruction": task.get("instruction"), "instructed": task.get("target_receptacle"),
            "trained_target": g.get("trained_target"), "memorized_xy": g.get("memorized_xy"), "new_xy": g.get("new_xy"),
            "frames": bool(info.get("frames")), **{f"dest_{k}": v for k, v in dest.as_dict().items()},
            "jerk_mm2": jerk(proprio), "gripper_switches": gripper_switches(steps["action"]) if "action" in steps else 0,
            "path": proprio[:, :3],
            "receptacles": {k: v.tolist() for k, v in places(task, steps["object_state"][0] if "object_state" in steps else None).items()} if task.get("receptacles") else {},
        })
    return records


def _iv(k: int, n: int) -> dict:
    return stats.wilson(k, n).as_dict()


def summarize(records: list[dict], order: list[str], options: dict) -> dict:
    by = {c: {r["seed"]: r for r in records if r["condition"] == c} for c in order}
    boot = {"seed": int(options["bootstrap_seed"]), "n_boot": int(options["bootstrap_n"])}
    variants = []
    for c in order:
        eps = list(by[c].values())
        n = len(eps)
        counts = {cat: sum(r["dest_category"] == cat for r in eps) for cat in CATEGORIES}
        identifiable = any(r["new_xy"] is not None for r in eps) or c == "counterfactual"
        variants.append({
            "variant": c, "n": n, "identifiable": identifiable, "counts": counts,
            "success": _iv(sum(r["success"] for r in eps), n),
            "object_following": _iv(counts["instructed"], n),
            "location_following": _iv(counts["memorized"], n),
            "other": _iv(counts["other"], n), "none": _iv(counts["none"], n),
        })
    pairs = []
    for base, other, what in PAIRS:
        if base in by and other in by and by[base] and by[other]:
            cmp = stats.compare_paired({s: r["dest_category"] == "instructed" for s, r in by[base].items()},
                                       {s: r["dest_category"] == "instructed" for s, r in by[other].items()}, **boot)
            pairs.append({"base": base, "other": other, "measures": what, **cmp.as_dict()})
    out = {"variants": variants, "pairs": pairs}
    if "counterfactual" in by and "canonical" in by:
        shared = sorted(set(by["canonical"]) & set(by["counterfactual"]))
        a, b = by["canonical"], by["counterfactual"]
        follow = sum(a[s]["dest_category"] == "instructed" and b[s]["dest_category"] == "instructed" for s in shared)
        invariant = sum(a[s]["dest_item"] is not None and a[s]["dest_item"] == b[s]["dest_item"] for s in shared)
        unchanged = sum(path_divergence(a[s]["path"], b[s]["path"]) < SAME_PATH for s in shared)
        n = len(shared)
        out["counterfactual"] = {"n": n, "follows_both": _iv(follow, n), "invariant_destination": _iv(invariant, n),
                                 "unchanged_path": _iv(unchanged, n),
                                 "median_path_divergence_m": float(np.median([path_divergence(a[s]["path"], b[s]["path"]) for s in shared])) if n else None}
    rob = []
    for c in order:
        if not c.startswith("phrase_") or "canonical" not in by:
            continue
        base, other = by["canonical"], by[c]
        shared = sorted(set(base) & set(other))
        row = {"variant": c, "n_pairs": len(shared), "example": next(iter(other.values()))["instruction"] if other else None,
               "success": _iv(sum(other[s]["success"] for s in shared), len(shared)),
               "success_vs_canonical": stats.compare_paired({s: base[s]["success"] for s in shared},
                                                            {s: other[s]["success"] for s in shared}, **boot).as_dict()}
        for key in ("jerk_mm2", "gripper_switches"):
            x = np.array([base[s][key] for s in shared], float)
            y = np.array([other[s][key] for s in shared], float)
            ok = np.isfinite(x) & np.isfinite(y)  # an episode too short for a third difference has no jerk
            x, y = x[ok], y[ok]
            row[key] = {"n_pairs": int(ok.sum()), "canonical": stats.mean_ci(x).as_dict(), "variant": stats.mean_ci(y).as_dict(),
                        "difference": stats.paired_bootstrap_diff(x, y, **boot).as_dict(),
                        "p_wilcoxon": stats.wilcoxon_paired(x, y)}
        rob.append(row)
    out["robustness"] = rob
    out["verdict"] = verdict(out, records)
    return out


def percent_text(iv: dict) -> str:
    if iv["estimate"] is None or (isinstance(iv["estimate"], float) and math.isnan(iv["estimate"])):
        return "n/a"
    return f"{100 * iv['estimate']:.0f}% [{100 * iv['low']:.0f}, {100 * iv['high']:.0f}]"


def verdict(summary: dict, records: list[dict]) -> str:
    """One paragraph in plain words, built from the numbers above."""
    moved = [r for r in records if r["condition"] in MOVED]
    parts = []
    if moved:
        n = len(moved)
        obj = _iv(sum(r["dest_category"] == "instructed" for r in moved), n)
        loc = _iv(sum(r["dest_category"] == "memorized" for r in moved), n)
        none = _iv(sum(r["dest_category"] == "none" for r in moved), n)
        if not obj["estimate"] and not loc["estimate"]:
            call = "No evidence either way, since it reached no receptacle"
        elif obj["low"] > loc["high"]:
            call = "It follows the object it is told to, not a memorized place"
        elif loc["low"] > obj["high"]:
            call = "It follows the place it memorized, not the instruction"
        else:
            call = "Neither the named object nor the memorized place clearly wins"
        if none["estimate"] > max(obj["estimate"], loc["estimate"]) and (obj["estimate"] or loc["estimate"]):
            call += ", though more often it goes nowhere"
        parts.append(f"{call}: in moved-target episodes (the named receptacle away from L0, {n} episodes over "
                     f"{len({r['condition'] for r in moved})} variants) it went to the named receptacle in {percent_text(obj)}, "
                     f"to the memorized location L0 in {percent_text(loc)} and nowhere in {percent_text(none)} (Wilson 95%; the variants "
                     "share seeds, so these pooled intervals are a little optimistic).")
    by = {v["variant"]: v for v in summary["variants"]}
    if "training_move" in by and "novel_move" in by:
        t, v = by["training_move"], by["novel_move"]
        pair = next((p for p in summary["pairs"] if p["base"] == "training_move" and p["other"] == "novel_move"), None)
        parts.append(f"Moved to L1 with L0 empty, a training receptacle drew it there in {percent_text(t['object_following'])} "
                     f"and the held-out one in {percent_text(v['object_following'])}"
                     + (f" (McNemar p = {pair['p_value']:.2g})" if pair else "")
                     + f"; with the held-out one it went nowhere in {percent_text(v['none'])}.")
    if "training_object_in_place" in by and "novel_object_in_place" in by:
        t, v = by["training_object_in_place"], by["novel_object_in_place"]
        parts.append(f"Asked to move a held-out object standing where the trained one stood, it succeeded in "
                     f"{percent_text(v['success'])} (a training object there: {percent_text(t['success'])}).")
    cf = summary.get("counterfactual")
    if cf and cf["n"]:
        parts.append(f"Naming the other receptacle in the same scene, it followed both instructions in "
                     f"{percent_text(cf['follows_both'])} of scenes and went to the same place regardless in "
                     f"{percent_text(cf['invariant_destination'])}.")
    rob = summary["robustness"]
    if rob and "canonical" in by:
        words = "; ".join(f"{r['variant'][len('phrase_'):]} {percent_text(r['success'])} (p = {r['success_vs_canonical']['p_value']:.2g})"
                          for r in rob)
        jerky = [r["variant"][len("phrase_"):] for r in rob
                 if r["jerk_mm2"]["n_pairs"] and r["jerk_mm2"]["p_wilcoxon"] < 0.05
                 and r["jerk_mm2"]["difference"]["estimate"] > 0]
        chatty = [f"{r['variant'][len('phrase_'):]} ({r['gripper_switches']['variant']['estimate']:.1f} vs "
                  f"{r['gripper_switches']['canonical']['estimate']:.1f})" for r in rob
                  if r["gripper_switches"]["n_pairs"] and r["gripper_switches"]["p_wilcoxon"] < 0.05
                  and r["gripper_switches"]["difference"]["estimate"] > 0]
        parts.append(f"Reworded instructions, success vs canonical {percent_text(by['canonical']['success'])}: {words}. "
                     + (f"Motion was significantly jerkier (Wilcoxon p < 0.05) for: {', '.join(jerky)}. "
                        if jerky else "No wording made the motion significantly jerkier (Wilcoxon p < 0.05). ")
                     + (f"The gripper switched open/close significantly more often per episode for: {', '.join(chatty)}."
                        if chatty else "No wording made the gripper switch significantly more often."))
    return " ".join(parts)
