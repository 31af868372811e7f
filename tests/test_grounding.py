"""realgap grounding: task variants, the where-did-it-go classifier on scripted trajectories with known
answers, the statistics it reports, and the command end to end (scripted policies, inline executor)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import realgap.envs as envs
from realgap.envs.scene import RECEPTACLE_SLOTS
from realgap.envs.tasks import TaskVariant, make_task, object_pool, receptacle_pool
from realgap.errors import RealgapError
from realgap.evaluation import grounding as G
from realgap.evaluation import grounding_run
from realgap.evaluation.rollout import GroupTask, run_group
from realgap.policies import baselines

ENV_ID = "realgap/PlaceInReceptacle-v0"
POOLS = (object_pool(None, False), receptacle_pool(None, False))
SEED = 7


def variant(name, **kw):
    return {"name": name, "target_slot": 0, **kw}


def move(keep_trained=False, item="training"):
    return variant("move", swap={"item": item, "place": "move", "keep_trained": keep_trained})


# ------------------------------------------------------------------------------ task variants
def test_variants_swap_in_place_move_and_distractor():
    base = make_task(SEED, *POOLS)
    for seed in range(40):
        plain = make_task(seed, *POOLS, TaskVariant.from_spec(variant("canonical"), False))
        assert plain.receptacle_slots[plain.receptacles.index(plain.target_receptacle)] == 0  # pinned to L0
        inplace = make_task(seed, *POOLS, TaskVariant.from_spec(variant("p", swap={"item": "blue cup", "place": "in_place"}), True))
        assert inplace.target_receptacle == "blue cup" and plain.target_receptacle not in inplace.receptacles
        assert inplace.receptacle_slots[inplace.receptacles.index("blue cup")] == 0
        moved = make_task(seed, *POOLS, TaskVariant.from_spec(move(item="blue cup"), True))
        assert 0 not in moved.receptacle_slots  # L0 empty
        l1 = moved.receptacle_slots[moved.receptacles.index("blue cup")]
        assert l1 == moved.grounding["new_slot"] and l1 not in plain.receptacle_slots
        distract = make_task(seed, *POOLS, TaskVariant.from_spec(move(True, "blue cup"), True))
        assert distract.receptacles[distract.receptacle_slots.index(0)] == plain.target_receptacle  # trained item stays at L0
        assert len(distract.receptacles) == 3 and distract.target_receptacle == "blue cup"
        train = make_task(seed, *POOLS, TaskVariant.from_spec(move(), False))
        assert train.target_receptacle not in plain.receptacles and not train.target_receptacle == "blue cup"
        obj = make_task(seed, *POOLS, TaskVariant.from_spec(variant("o", swap_object="green vial"), True))
        k = plain.objects.index(plain.target_object)
        assert obj.target_object == obj.objects[k] == "green vial"
        assert obj.object_slots == plain.object_slots and obj.target_receptacle == plain.target_receptacle
        assert "green vial" in obj.instruction and plain.target_object not in obj.objects
        cf = make_task(seed, *POOLS, TaskVariant.from_spec(variant("cf", instruct="other"), False))
        assert cf.target_receptacle != plain.target_receptacle and cf.target_receptacle in plain.receptacles
        assert cf.receptacles == plain.receptacles and cf.objects == plain.objects  # same scene
    # deterministic per seed, and the plain sampler is untouched
    v = TaskVariant.from_spec(move(), False)
    assert make_task(SEED, *POOLS, v) == make_task(SEED, *POOLS, v)
    assert make_task(SEED, *POOLS) == base and "grounding" not in base.to_dict()


def test_phrasings_and_synonyms_reach_the_observation():
    spec = variant("w", phrasing="in the {receptacle} place the {object}", synonyms={"block": "cube", "rack": "stand"})
    env = envs.make(ENV_ID, task_variant=spec)
    try:
        for seed in range(6):
            obs, info = env.reset(seed=seed)
            task = info["task"]
            expected = f"in the {task['target_receptacle']} place the {task['target_object']}"
            expected = expected.replace("block", "cube").replace("rack", "stand")
            assert obs["instruction"] == expected == task["instruction"]
    finally:
        env.close()


@pytest.mark.parametrize("spec, allow, message", [
    (move(item="blue cup"), False, "task_variant.swap.item: 'blue cup' is held out"),
    (move(item="purple cup"), True, "task_variant.swap.item: unknown receptacle 'purple cup'"),
    (move(item="red block"), True, "task_variant.swap.item: 'red block' is an object"),
    ({"swap_object": "teal block"}, False, "task_variant.swap_object: 'teal block' is held out"),
    ({"swap_object": "teal cube"}, True, "task_variant.swap_object: unknown object 'teal cube'"),
    ({"phrasing": "put the {thing} away"}, True, "task_variant.phrasing: unknown placeholder(s) ['thing']"),
    ({"phrasing": "place the {object} in the {receptacle}!"}, True, "lowercase letters and spaces"),
    ({"target_slot": 5}, True, "task_variant.target_slot"),
    ({"colour": "red"}, True, "task_variant: unknown key(s) ['colour']"),
])
def test_bad_variants_are_one_line_errors(spec, allow, message):
    with pytest.raises(RealgapError) as e:
        envs.make(ENV_ID, allow_held_out=allow, task_variant=spec)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unbuildable_variant_names_seed_and_distance():
    v = TaskVariant.from_spec(variant("far", swap={"item": "training", "place": "move", "min_distance": 0.3}), False)
    errors = []
    for seed in range(20):
        try:
            t = make_task(seed, *POOLS, v)
            assert np.hypot(*np.subtract(t.grounding["new_xy"], RECEPTACLE_SLOTS[0])) >= 0.3
        except RealgapError as e:
            errors.append(str(e))
    assert errors, "some seeds have only the adjacent slot free"
    assert "no free receptacle slot at >= 0.30 m from L0 (slot 0)" in errors[0] and "seed" in errors[0]


# ------------------------------------------------------------------ classifier, synthetic paths
def _trajectory(points, close_at, open_at=None, width=0.02, end_holding=False):
    """EE path through ``points`` (one per step); gripper closes at ``close_at`` and opens at ``open_at``."""
    n = len(points)
    proprio = np.zeros((n, 8))
    proprio[:, :3] = np.column_stack([np.asarray(points, float), np.full(n, 0.1)])
    actions = np.full((n, 4), -1.0)
    actions[-1] = np.nan  # the store's last row has no action
    proprio[:, 6:8] = 0.045
    stop = open_at if open_at is not None else n - 1
    actions[close_at:stop, 3] = 1.0
    proprio[close_at + 1:stop + 1, 6:8] = width  # the fingers lag the command by one step
    if end_holding:
        proprio[-1, 6:8] = width
    return proprio, actions


TASK = {"target_receptacle": "grey bowl", "receptacles": ["yellow rack", "grey bowl"], "receptacle_slots": [0, 2],
        "grounding": {"memorized_xy": list(RECEPTACLE_SLOTS[0])}}


def _path(to, n=12):
    start = np.array([0.0, -0.09])
    return [tuple(start + (np.asarray(to) - start) * k / (n - 1)) for k in range(n)]


def test_classifier_synthetic_release_carry_and_none():
    l0, l2, free = RECEPTACLE_SLOTS[0], RECEPTACLE_SLOTS[2], RECEPTACLE_SLOTS[1]
    d = G.classify(*_trajectory(_path(l2) + [l2] * 3, close_at=2, open_at=12), TASK)
    assert (d.category, d.item, d.mode, d.step) == ("instructed", "grey bowl", "release", 12)
    assert G.classify(*_trajectory(_path(l0) + [l0] * 3, 2, 12), TASK).category == "memorized"  # trained item at L0
    moved = {**TASK, "receptacles": ["white crate", "grey bowl"], "receptacle_slots": [1, 2]}  # L0 empty
    d = G.classify(*_trajectory(_path(l0) + [l0] * 3, 2, 12), moved)
    assert (d.category, d.item) == ("memorized", "L0 (empty)")
    assert G.classify(*_trajectory(_path(free) + [free] * 3, 2, 12), moved).category == "other"
    far = (0.0, -0.18)
    assert G.classify(*_trajectory(_path(far) + [far] * 3, 2, 12), TASK).category == "none"
    # closed on air (fingers shut to 0): nothing held, nothing released
    assert G.classify(*_trajectory(_path(l2) + [l2] * 3, 2, 12, width=0.0), TASK).mode == "none"
    # never opens: the episode ends carrying the object over the bowl
    d = G.classify(*_trajectory(_path(l2) + [l2] * 3, 2, None, end_holding=True), TASK)
    assert (d.category, d.mode) == ("instructed", "carry")
    # slipped out on the way (fingers shut on air) but the object landed in the bowl: the object says where
    from realgap.envs.catalogue import ITEM_NAMES
    p, a = _trajectory(_path(l2) + [l2] * 3, 2, None, width=0.0)
    rows = np.zeros((len(p), len(ITEM_NAMES), 6))
    rows[:, ITEM_NAMES.index("yellow rack"), :3] = (1, *l0)
    rows[:, ITEM_NAMES.index("grey bowl"), :3] = (1, *l2)
    rows[:, ITEM_NAMES.index("red block"), :3] = (1, 0.0, -0.09)
    rows[-1, ITEM_NAMES.index("red block"), 1:3] = (l2[0] + 0.01, l2[1])
    task = {**TASK, "objects": ["red block"]}
    d = G.classify(p, a, task, rows.reshape(len(p), -1))
    assert (d.category, d.item, d.mode) == ("instructed", "grey bowl", "object")
    rows[-1, ITEM_NAMES.index("red block"), 1:3] = (0.0, -0.05)  # knocked over, not into anything
    assert G.classify(p, a, task, rows.reshape(len(p), -1)).category == "none"
    # a one-step close/open at the pick reads as a release far from everything; the object then slipped
    # into the bowl on the way: the landed object wins over the release that went nowhere
    p2, a2 = p.copy(), a.copy()
    a2[0, 3], p2[1, 6:8] = 1.0, 0.02
    d = G.classify(p2, a2, task, rows.reshape(len(p), -1))
    assert (d.category, d.mode) == ("none", "release")  # knocked over: the release still says nowhere
    rows[-1, ITEM_NAMES.index("red block"), 1:3] = (l2[0] + 0.01, l2[1])
    d = G.classify(p2, a2, task, rows.reshape(len(p), -1))
    assert (d.category, d.item, d.mode) == ("instructed", "grey bowl", "object")
    # an early release (dropped at the pick) followed by a re-grasp and a release over L0: the last counts
    p, a = _trajectory(_path(l0) + [l0] * 3, 8, 12)
    a[2:4, 3], p[3:5, 6:8] = 1.0, 0.02
    assert G.classify(p, a, TASK).category == "memorized"


def test_smoothness_measures():
    straight = np.zeros((20, 8))
    straight[:, 0] = np.linspace(0, 0.1, 20)
    assert G.jerk(straight) == pytest.approx(0.0, abs=1e-9)
    shaky = straight.copy()
    shaky[::2, 1] += 0.002
    assert G.jerk(shaky) == pytest.approx(64.0)  # 2 mm zig-zag: third differences of +-8 mm
    a = np.array([[0, 0, 0, -1], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, -1], [0, 0, 0, 1], [np.nan] * 4])
    assert G.gripper_switches(a) == 3


# ------------------------------------------------------------ classifier, real scripted episodes
def _run(policy, spec, seeds=(SEED,)):
    task = GroupTask(group=0, condition="c", seeds=tuple(seeds), env_id=ENV_ID,
                     env_kwargs={"allow_held_out": True, "objects": list(POOLS[0]), "receptacles": list(POOLS[1]),
                                 "task_variant": spec})
    out = []
    for ep in run_group(task, policy):
        d = G.classify(ep.steps["proprio"], ep.steps["action"], ep.info["task"], ep.steps["object_state"])
        out.append((d, ep))
    return out


def test_classifier_on_scripted_expert_episodes():
    spec = move()  # a training receptacle at L1, L0 empty
    task = make_task(SEED, *POOLS, TaskVariant.from_spec(spec, False))
    other = next(r for r in task.receptacles if r != task.target_receptacle)
    (d, ep), = _run(baselines.RewiredExpert(), spec)
    assert ep.info["success"] and (d.category, d.item, d.mode) == ("instructed", task.target_receptacle, "release")
    (d, ep), = _run(baselines.location_follower(), spec)
    assert (d.category, d.item) == ("memorized", "L0 (empty)") and not ep.info["success"]
    (d, _), = _run(baselines.expert_to(other), spec)
    assert (d.category, d.item) == ("other", other)
    (d, _), = _run(baselines.expert_never_closing(), spec)
    assert (d.category, d.mode) == ("none", "none")
    (d, ep), = _run(baselines.expert_holding(), spec)
    assert (d.category, d.mode) == ("instructed", "carry") and not ep.info["success"]
    (d, _), = _run(baselines.location_follower(), move(keep_trained=True))  # the trained item still at L0
    assert (d.category, d.item) == ("memorized", make_task(SEED, *POOLS, TaskVariant.from_spec(variant("c"), False)).target_receptacle)


# ----------------------------------------------------------------------- the command end to end
def _cfg(tmp_path, policy="expert", **preset):
    grounding = {"name": "t", "env": {"id": ENV_ID, "kwargs": {"obs_mode": "state", "image_size": 48, "cameras": ["front"]}},
                 "randomization": None, "seeds": {"start": 11, "n": 1}, "batch_envs": 1, "record_frames": "failures",
                 "frames_first_seeds": 1, "target_slot": 0, "tests": ["swap", "counterfactual", "robustness"],
                 "swap": {"novel": "blue cup", "novel_object": "green vial", "min_distance": 0.15},
                 "robustness": {"phrasings": {"word_order": "in the {receptacle} place the {object}"}}}
    grounding.update(preset)
    return {"grounding": grounding, "policy_spec": policy, "policy_kwargs": {}, "out": str(tmp_path / "g"),
            "executor": "inline", "workers": 1, "report": {"videos": 3, "paths_per_variant": 1, "bootstrap_n": 200}}


def test_grounding_command_separates_object_and_location_following(tmp_path, capsys):
    assert grounding_run.main(_cfg(tmp_path, "expert", tests=["swap"], record_frames="none")) == 0
    expert = json.loads((tmp_path / "g" / "report" / "grounding.json").read_text())
    assert grounding_run.main(_cfg(tmp_path / "loc", "realgap.policies.baselines:location_follower")) == 0
    loc = json.loads((tmp_path / "loc" / "g" / "report" / "grounding.json").read_text())
    e = {v["variant"]: v for v in expert["variants"]}
    lf = {v["variant"]: v for v in loc["variants"]}
    for name in ("novel_move", "novel_move_distractor", "training_move", "training_move_distractor"):
        assert e[name]["counts"]["instructed"] == 1 and lf[name]["counts"]["memorized"] == 1
    for name in ("novel_object_in_place", "training_object_in_place"):  # named receptacle at L0: both get there
        assert e[name]["success"]["estimate"] == 1.0 and lf[name]["counts"]["instructed"] == 1
    assert lf["canonical"]["counts"]["instructed"] == 1  # L0 holds the instructed item: no contradiction there
    assert "follows the object" in expert["verdict"] and "follows the place it memorized" in loc["verdict"] and "switched open/close significantly more often" not in expert["verdict"]
    assert loc["counterfactual"]["invariant_destination"]["estimate"] == 1.0
    rob, = loc["robustness"]
    assert rob["variant"] == "phrase_word_order" and rob["success"]["estimate"] == 0.0  # the expert parses one wording only
    page = (tmp_path / "loc" / "g" / "report" / "grounding.html").read_text()
    assert "Follow matrix" in page and "data:image/png;base64" in page and "L0" in page
    assert "<video" in page or "no playable codec" in page
    with pytest.raises(RealgapError, match="exists; pass --resume"):
        grounding_run.main(_cfg(tmp_path, "expert", tests=["swap"], record_frames="none"))
    assert grounding_run.main(_cfg(tmp_path, "expert", tests=["swap"], record_frames="none"), resume=True) == 0  # nothing left to run, report rebuilt


class _Deaf:
    config = {"use_instruction": False}

    def reset(self, seeds):
        pass

    def act(self, obs, slots):
        return np.zeros((len(slots), 4), np.float32)


def deaf_policy():
    return _Deaf()


@pytest.mark.parametrize("change, message", [
    ({"policy": f"{__name__}:deaf_policy"}, "does not read the instruction"),
    ({"swap": {"novel": "purple cup"}}, "grounding.swap.novel: unknown receptacle 'purple cup'"),
    ({"swap": {"novel": "yellow rack"}}, "grounding.swap.novel: 'yellow rack' is a training receptacle"),
    ({"swap": {"novel": "blue cup", "min_distance": 0.3}}, "cannot be built: no free receptacle slot at >= 0.30 m"),
    ({"tests": ["swap", "colour"]}, "grounding.tests: unknown test(s) ['colour']"),
    ({"policy": "???"}, "policy: missing"),
])
def test_bad_input_stops_before_anything_is_written(tmp_path, change, message):
    policy = change.pop("policy", "expert")
    cfg = _cfg(tmp_path, policy, **change)
    cfg["grounding"]["seeds"]["n"] = 12
    with pytest.raises(RealgapError) as e:
        grounding_run.main(cfg)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "g").exists()


def test_suite_elsewhere_rejects_a_held_out_variant_before_writing(tmp_path):
    from realgap.evaluation.suite import run_suite

    suite = {"name": "s", "policy": {"spec": "expert"}, "env": {"id": ENV_ID, "kwargs": {"obs_mode": "state"}},
             "seeds": {"start": 0, "n": 2}, "batch_envs": 2, "record_frames": "none",
             "conditions": {"nominal": {}, "cup": {"env_kwargs": {"task_variant": move(item="blue cup")}}}}
    with pytest.raises(RealgapError, match="'blue cup' is held out of training tasks; only `realgap grounding`"):
        run_suite({"suite": suite, "out": str(tmp_path / "s"), "executor": "inline"}, progress=False)
    assert not (tmp_path / "s").exists()


def test_grounding_passes_policy_kwargs_to_the_loader():
    """`+policy_kwargs.num_samples=16 +policy_kwargs.chunk_choice=medoid` reach the policy (they were rejected as unknown keys)."""
    from realgap.cli import check_overrides, compose
    from realgap.evaluation.grounding_run import suite_config

    overrides = ["policy=checkpoints/image_policy_small", "grounding=image",
                 "+policy_kwargs.num_samples=16", "+policy_kwargs.chunk_choice=medoid"]
    overrides = [o.replace("policy=", "policy_spec=", 1) if o.startswith("policy=") else o for o in overrides]
    cfg = compose("grounding", overrides)
    check_overrides("grounding", overrides, cfg)
    from omegaconf import OmegaConf

    suite = suite_config(OmegaConf.to_container(cfg, resolve=True))["suite"]
    assert suite["policy"]["kwargs"] == {"num_samples": 16, "chunk_choice": "medoid"}
