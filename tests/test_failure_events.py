"""The env's failure events (``info["failure_event"]``): scripted mishaps give the right type, item and
step; a nominal expert success gives none; the suite's episode info keeps the first one.

Each expected step is found independently of the env's detector, from the state the test reads after
every step (tilt of the object, target position, gripper contact), so a detector that fires early,
late or never fails here. Outcomes are untouched by the feature: the events only read the state, and
tests/test_executor_parity.py and tests/test_suite_resume.py hold the env's results to recorded runs.
"""

import numpy as np

import realgap.envs as envs
from realgap.envs.catalogue import ITEM_NAMES, OBJECT_NAMES, RECEPTACLE_NAMES, object_spec
from realgap.envs.expert import ScriptedExpert
from realgap.envs.place_env import KNOCKED_TILT_COS, MAX_EE_STEP, OBJECT_ROW
from realgap.envs.tasks import parse_instruction
from realgap.evaluation.rollout import GroupTask, run_batch

ENV_ID = "realgap/PlaceInReceptacle-v0"
SEED = 1  # orange vial into the yellow rack; distractors purple vial (a vial tips) and red block (slides)


def _pos(obs, name):
    return np.asarray(obs["object_state"], np.float64).reshape(-1, OBJECT_ROW)[ITEM_NAMES.index(name), 1:4]


def _tilt_cos(env, name):
    u = env.unwrapped
    return float(u.data.xmat[u._obj_body[OBJECT_NAMES.index(name)]][8])


def _drive(env, obs, goal, grip, n, trace):
    """Move the gripper toward ``goal`` for ``n`` steps; ``trace`` gets (info, env) after every step."""
    for _ in range(n):
        a = np.clip(0.8 * (goal - obs["proprio"][:3]) / MAX_EE_STEP, -1.0, 1.0)
        obs, _, terminated, truncated, info = env.step(np.array([*a, grip], np.float32))
        trace.append(info)
        yield info
        if terminated or truncated:
            return


def _push(env, name, z_offset):
    """Sweep the closed gripper through object ``name`` along +x at its height plus ``z_offset``; per step
    (info, tilt cos of the object, its horizontal displacement from reset)."""
    obs, _ = env.reset(seed=SEED)
    p, out, trace = _pos(obs, name), [], []
    z = p[2] + z_offset
    for goal, n in (((p[0] - 0.07, p[1], 0.12), 15), ((p[0] - 0.07, p[1], z), 15), ((p[0] + 0.06, p[1], z), 20)):
        for info in _drive(env, obs, np.array(goal), 1.0, n, trace):
            obs = env.unwrapped._observe()
            out.append((info, _tilt_cos(env, name), float(np.hypot(*(_pos(obs, name) - p)[:2]))))
    return out


def _first_event(infos):
    for info in infos:
        if "failure_event" in info:
            return info["failure_event"]
    return None


def test_knocking_a_vial_over_is_a_knocked_over_event_at_the_step_it_tips():
    env = envs.make(ENV_ID)
    env.reset(seed=SEED)
    assert "purple vial" in env.unwrapped.task.objects and env.unwrapped.task.target_object != "purple vial"
    steps = _push(env, "purple vial", 0.0)
    event = _first_event(i for i, _, _ in steps)
    tipped = next(k + 1 for k, (_, tilt, _) in enumerate(steps) if tilt < KNOCKED_TILT_COS)
    assert event == {"type": "knocked_over", "step": tipped, "item": "purple vial"}
    # from that step on every info carries the same (first) event, the final one included
    assert all(i["failure_event"] == event for i, _, _ in steps[tipped - 1:])
    assert all("failure_event" not in i for i, _, _ in steps[: tipped - 1])


def test_shoving_a_block_is_a_distractor_moved_event_once_it_is_3_cm_away():
    env = envs.make(ENV_ID)
    steps = _push(env, "red block", 0.0)
    event = _first_event(i for i, _, _ in steps)
    moved = next(k + 1 for k, (_, _, shift) in enumerate(steps) if shift > 0.03)
    assert all(tilt > KNOCKED_TILT_COS for _, tilt, _ in steps)  # it slid, it did not tip
    assert event == {"type": "distractor_moved", "step": moved, "item": "red block"}


class _Misdirected(ScriptedExpert):
    """The expert, told to use another present receptacle than the instruction names."""

    def act(self, obs, slots):
        return super().act([self._swap(o) for o in obs], slots)

    @staticmethod
    def _swap(o):
        _, rec = parse_instruction(str(o["instruction"]))
        rows = np.asarray(o["object_state"]).reshape(-1, OBJECT_ROW)
        other = next(r for r in RECEPTACLE_NAMES if r != rec and rows[ITEM_NAMES.index(r), 0] > 0)
        return {**o, "instruction": str(o["instruction"]).replace(rec, other)}


def _run(env, policy, seed, *, release_after=None):
    """Roll ``policy`` out; with ``release_after``, open the gripper and hold still once the target has been
    carried that many steps above 2 cm. Returns the infos and the first step the target rests, released,
    outside the named receptacle after being lifted (None if it never does)."""
    obs, _ = env.reset(seed=seed)
    policy.reset([seed])
    u, infos, carried, rested = env.unwrapped, [], 0, None
    target = u.task.target_object
    z0 = _pos(obs, target)[2]
    lifted = False
    while True:
        a = policy.act([obs], [0])[0]
        if release_after is not None and carried >= release_after:
            a = np.array([0.0, 0.0, 0.0, -1.0], np.float32)
        obs, _, terminated, truncated, info = env.step(a)
        infos.append(info)
        z = _pos(obs, target)[2]
        carried += z > z0 + 0.02
        lifted = lifted or z > z0 + 0.02
        i = OBJECT_NAMES.index(target)
        v = u._obj_vadr[i]
        if (rested is None and lifted and np.linalg.norm(u.data.qvel[v : v + 3]) < 0.05
                and not u._touches_gripper(u._obj_geom[i])):
            rested = len(infos)
        if terminated or truncated:
            return infos, rested


def test_placing_the_target_in_another_receptacle_is_a_wrong_receptacle_event():
    env = envs.make(ENV_ID, max_episode_steps=70)
    infos, rested = _run(env, _Misdirected(), SEED)
    assert infos[-1]["termination_reason"] == "timeout"
    event = infos[-1]["failure_event"]
    assert event == {"type": "wrong_receptacle", "step": rested, "item": env.unwrapped.task.target_object}
    assert _first_event(infos) == event


def test_letting_go_of_the_target_over_the_table_is_a_dropped_event_where_it_lands():
    env = envs.make(ENV_ID, max_episode_steps=60)
    infos, rested = _run(env, ScriptedExpert(), SEED, release_after=5)
    event = infos[-1]["failure_event"]
    assert event["type"] == "dropped" and event["item"] == env.unwrapped.task.target_object
    assert event["step"] == rested and _first_event(infos) == event


def test_nominal_expert_successes_have_no_failure_event():
    env = envs.make(ENV_ID)
    for seed in range(1000, 1012):
        infos, _ = _run(env, ScriptedExpert(), seed)
        assert infos[-1]["is_success"], seed
        assert _first_event(infos) is None, (seed, _first_event(infos))


def test_the_suite_episode_info_keeps_the_first_failure_event():
    seeds = (SEED, 1000)  # two slots: the event is kept per slot, whatever the other one does
    task = GroupTask(group=0, condition="c", seeds=seeds, env_id=ENV_ID, env_kwargs={"max_episode_steps": 70})
    eps = run_batch([envs.make(ENV_ID, max_episode_steps=70) for _ in seeds], _Misdirected(), task)
    solo, _ = _run(envs.make(ENV_ID, max_episode_steps=70), _Misdirected(), SEED)
    assert eps[0].info["failure_event"] == solo[-1]["failure_event"]
    assert eps[0].info["failure_event"]["type"] == "wrong_receptacle"
    ok = [ScriptedExpert()]
    task_ok = GroupTask(group=0, condition="c", seeds=(1000,), env_id=ENV_ID, env_kwargs={})
    (ep,) = run_batch([envs.make(ENV_ID)], ok[0], task_ok)
    assert ep.info["success"] and "failure_event" not in ep.info
    assert object_spec(eps[0].info["failure_event"]["item"])  # a catalogue object name


def test_uncertainty_breaks_failures_down_by_event_type_and_times_leads_to_the_event():
    from realgap.evaluation import uncertainty_run as R

    def ep(success, length, alarm_score, event=None):
        info = {"success": success, "termination_reason": "success" if success else "timeout", "length": length}
        if event:
            info["failure_event"] = {"type": event[0], "step": event[1], "item": "red block"}
        return {"info": info, "length": length, "failure_step": R._failure_step(info, length)}, alarm_score

    rows = [ep(True, 40, 0.1 * k) for k in range(6)]  # successes score 0.0..0.5
    rows += [ep(False, 100, 0.9, ("knocked_over", 30)) for _ in range(5)]  # each outscores every success
    rows += [ep(False, 100, 0.25, ("dropped", 60)), ep(False, 100, 0.05)]  # no event: a timeout at its end
    eps, scores = [r[0] for r in rows], np.array([r[1] for r in rows])
    alarms = [20 if s > 0.7 else None for s in scores]
    out = R._breakdown(eps, alarms, scores, min_class=5)
    assert set(out) == {"knocked_over", "dropped", "timeout"}
    assert out["knocked_over"]["caught"]["k"] == 5 and out["knocked_over"]["auroc_vs_successes"] == 1.0
    assert out["knocked_over"]["median_lead"] == 10.0  # event at 30, alarm at 20 (not 100 - 20)
    assert out["dropped"]["caught"]["k"] == 0 and out["dropped"]["auroc_vs_successes"] is None  # 1 < min_class
    assert out["timeout"]["median_failure_step"] == 100.0
