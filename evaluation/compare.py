"""``realgap compare``: two suites (two policies, or one policy run two ways) paired on their shared seeds.

    realgap compare a=outputs/suite/image_k1 b=outputs/suite/image_medoid [out=<dir>]

Per condition present in both stores: each side's rate with its Wilson interval, and the paired difference
b − a over the seeds both ran (bootstrap interval, exact McNemar p, discordant counts). A condition is
compared only where both suites defined it identically (the same resolved DR config and env): the same name
with another definition is an error, since such a pair is not paired. Pure functions over the stores; the
CLI prints the table and writes compare.json / compare.csv when ``out`` is given.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from realgap.errors import RealgapError
from realgap.evaluation.stats import compare_paired, wilson
from realgap.evaluation.store import SUITE_FILE, suite_outcomes

FIELDS = ["condition", "n_pairs", "a_successes", "a_rate", "a_low", "a_high", "b_successes", "b_rate", "b_low",
          "b_high", "difference", "diff_low", "diff_high", "only_a", "only_b", "p_value"]


def suite_meta(out: Path) -> dict:
    path = Path(out) / SUITE_FILE
    if not path.is_file():
        raise RealgapError(f"{path}: not found (a suite output folder holds suite.json and episodes.zarr)")
    return json.loads(path.read_text())


def condition_definitions(meta: dict) -> dict[str, str]:
    """Condition -> its resolved definition plus the env (what makes two episodes with one seed a pair)."""
    fp = meta.get("fingerprint") or {}
    env = json.dumps(fp.get("env", (meta.get("suite") or {}).get("env")), sort_keys=True)
    return {name: json.dumps(defn, sort_keys=True) + env for name, defn in fp.get("conditions", [])}


def compare_suites(a: Path, b: Path, seed: int = 0, n_boot: int = 10_000) -> list[dict]:
    defs_a, defs_b = condition_definitions(suite_meta(a)), condition_definitions(suite_meta(b))
    out_a, out_b = suite_outcomes(a), suite_outcomes(b)
    shared = [c for c in out_a if c in out_b]
    if not shared:
        raise RealgapError(f"b: {b} shares no condition with a: {a}")
    rows = []
    for cond in shared:
        if defs_a.get(cond) != defs_b.get(cond):
            raise RealgapError(f"condition '{cond}': defined differently in {a} and {b} (DR config or env), not a paired pair")
        seeds = sorted(set(out_a[cond]) & set(out_b[cond]))
        if not seeds:
            raise RealgapError(f"condition '{cond}': {a} and {b} ran no common seed")
        pa = {s: out_a[cond][s] for s in seeds}
        pb = {s: out_b[cond][s] for s in seeds}
        cmp = compare_paired(pa, pb, seed=seed, n_boot=n_boot)
        ka, kb = sum(pa.values()), sum(pb.values())
        wa, wb = wilson(ka, len(seeds)), wilson(kb, len(seeds))
        rows.append({"condition": cond, "n_pairs": len(seeds),
                     "a_successes": ka, "a_rate": ka / len(seeds), "a_low": wa.low, "a_high": wa.high,
                     "b_successes": kb, "b_rate": kb / len(seeds), "b_low": wb.low, "b_high": wb.high,
                     "difference": cmp.difference.estimate, "diff_low": cmp.difference.low,
                     "diff_high": cmp.difference.high, "only_a": cmp.only_base, "only_b": cmp.only_other,
                     "p_value": cmp.p_value})
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'condition':<14}{'pairs':>6}  {'a':<24}{'b':<24}{'b - a':<26}{'only a/b':>9}{'McNemar p':>11}"]
    for r in rows:
        a = f"{r['a_successes']}/{r['n_pairs']} [{r['a_low']:.3f}, {r['a_high']:.3f}]"
        b = f"{r['b_successes']}/{r['n_pairs']} [{r['b_low']:.3f}, {r['b_high']:.3f}]"
        d = f"{r['difference']:+.3f} [{r['diff_low']:+.3f}, {r['diff_high']:+.3f}]"
        lines.append(f"{r['condition']:<14}{r['n_pairs']:>6}  {a:<24}{b:<24}{d:<26}{r['only_a']:>4}/{r['only_b']:<4}{r['p_value']:>11.2g}")
    return "\n".join(lines)


def main(cfg, resume: bool = False, overwrite: bool = False) -> int:
    from omegaconf import OmegaConf

    from realgap.outputs import prepare_dir

    cfg = OmegaConf.to_container(cfg, resolve=True)
    for side in ("a", "b"):
        if not cfg.get(side):
            raise RealgapError(f"{side}: missing (a suite output folder, e.g. {side}=outputs/suite/default)")
    rows = compare_suites(Path(cfg["a"]), Path(cfg["b"]), int(cfg["bootstrap_seed"]), int(cfg["bootstrap_n"]))
    out = Path(cfg["out"]) if cfg.get("out") else None
    if out is not None:  # after the inputs proved valid, before anything is printed or written
        prepare_dir(out, resume, overwrite, field="out", marker="compare.json", what="comparison")
    print(f"a = {cfg['a']}\nb = {cfg['b']}\n" + format_table(rows))
    if out is not None:
        (out / "compare.json").write_text(json.dumps({"a": str(cfg["a"]), "b": str(cfg["b"]), "rows": rows}, indent=1))
        with open(out / "compare.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            w.writerows(rows)
        print(f"compare: {out / 'compare.json'}")
    return 0
