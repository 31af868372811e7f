"""Physics DR that contacts and the mass matrix can feel, and sensing noise that spares presence flags.

- a mass change recomputes the derived constants (subtree mass, invweight0) exactly as the compiler
  would for that mass, and restoring gives back the nominal ones bit for bit;
- friction modes: ``global`` one factor on every geom (so every contact scales by it), ``per_geom``
  independent factors, ``target_pairs`` the matched geoms and only the geoms that can touch them;
  ``contact_friction`` logs what MuJoCo's contacts actually use (max of the pair);
- observation noise never touches the ``present`` flag or an absent (all-zero) row.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from test_randomization import SCENE_XML, fresh, make_scene, only, snapshot  # noqa: E402

from realgap.randomization import Randomizer  # noqa: E402
from realgap.randomization.physics import DERIVED  # noqa: E402
from realgap.randomization.sensing import SensingChannel  # noqa: E402

CORE_DERIVED = ("body_subtreemass", "body_invweight0", "dof_invweight0")


def test_mass_change_recomputes_derived_constants_as_the_compiler_would():
    model, _ = fresh()
    red = model.body("obj_red").id
    dr = Randomizer(only("physics", bodies="obj_red", mass=[1.15, 1.15])).bind(model, make_scene())
    dr.reset_model(model, 3)
    assert model.body_mass[red] == pytest.approx(0.115)
    # The compiler's answer for a red block that really weighs 0.115 kg (a box's inertia scales with mass).
    heavy = mujoco.MjModel.from_xml_string(SCENE_XML.replace('rgba="1 0 0 1" mass=".1"', 'rgba="1 0 0 1" mass=".115"'))
    nominal = mujoco.MjModel.from_xml_string(SCENE_XML)
    for f in CORE_DERIVED:
        np.testing.assert_allclose(getattr(model, f), getattr(heavy, f), rtol=1e-9, err_msg=f)
        assert not np.allclose(getattr(model, f), getattr(nominal, f)), f"{f} stayed nominal"
    # Restoring gives the fresh model's derived fields back exactly (not recomputed, restored).
    dr.restore(model)
    for f in DERIVED:
        assert np.array_equal(getattr(model, f), getattr(nominal, f)), f


def test_nominal_mass_factor_leaves_every_field_identical_to_a_fresh_model():
    model, _ = fresh()
    before = snapshot(model)
    Randomizer(only("physics", mass=[1.0, 1.0], friction=[1.0, 1.0], damping=[1.0, 1.0], kp=[1.0, 1.0])
               ).bind(model, make_scene()).reset_model(model, 5)
    after = snapshot(model)
    assert all(np.array_equal(before[k], after[k], equal_nan=True) for k in before)


def test_global_friction_is_one_factor_and_every_contact_scales_by_it():
    model, _ = fresh()
    mu0 = model.geom_friction[:, 0].copy()
    params = Randomizer(only("physics", friction=[0.5, 0.9])).bind(model, make_scene()).reset_model(model, 8)["physics"]
    f = params["friction"]
    assert params["friction_mode"] == "global" and isinstance(f, float) and 0.5 <= f <= 0.9
    np.testing.assert_allclose(model.geom_friction[:, 0], mu0 * f)
    # The free bodies' contacts: against the most slippery / grippiest partner, both scaled by f.
    lo, hi = params["contact_friction"]["obj_red_geom"]
    assert set(params["contact_friction"]) == {"obj_red_geom", "geom4", "geom5"}  # the three free bodies' geoms
    assert lo == pytest.approx(f * 1.0) and hi == pytest.approx(f * 1.0)  # MuJoCo default friction 1 everywhere


def test_per_geom_friction_draws_a_factor_per_geom():
    model, _ = fresh()
    mu0 = model.geom_friction[:, 0].copy()
    params = Randomizer(only("physics", friction_mode="per_geom", friction=[0.5, 0.9])
                        ).bind(model, make_scene()).reset_model(model, 8)["physics"]
    ratios = model.geom_friction[:, 0] / mu0
    assert len(set(np.round(ratios, 12))) == model.ngeom  # all different
    assert set(params["friction"]) >= {"table", "obj_red_geom"}
    # The contact of the red block uses the larger of the pair: never below its own scaled value.
    lo, hi = params["contact_friction"]["obj_red_geom"]
    assert lo >= params["friction"]["obj_red_geom"] - 1e-12 and hi == pytest.approx(ratios.max())


def test_modes_share_the_stream_so_mass_draws_do_not_move():
    masses = []
    for mode in ("global", "per_geom", "target_pairs"):
        model, _ = fresh()
        cfg = only("physics", friction_mode=mode)
        masses.append(Randomizer(cfg).bind(model, make_scene()).reset_model(model, 12)["physics"]["mass"])
    assert masses[0] == masses[1] == masses[2]


PAIRS_XML = """
<mujoco>
  <worldbody>
    <geom name="table" type="plane" size="1 1 .1" friction="0.8 0.005 0.0001"/>
    <geom name="shelf" type="box" size=".1 .1 .1" pos="2 2 0" contype="2" conaffinity="2" friction="0.5 0.005 0.0001"/>
    <body name="pad" pos="0 0 .3"><joint type="slide" axis="0 0 1"/><geom name="pad" type="box" size=".02 .02 .02" friction="1.6 0.02 0.001"/></body>
    <body name="block" pos="0 0 .05"><freejoint/><geom name="block" type="box" size=".02 .02 .02"/></body>
  </worldbody>
</mujoco>
"""


def test_target_pairs_scales_the_target_and_only_what_can_touch_it():
    model = mujoco.MjModel.from_xml_string(PAIRS_XML)
    mu0 = model.geom_friction[:, 0].copy()
    params = Randomizer(only("physics", friction_mode="target_pairs", geoms="block", friction=[0.5, 0.5])
                        ).bind(model).reset_model(model, 1)["physics"]
    ids = {n: model.geom(n).id for n in ("table", "shelf", "pad", "block")}
    for name in ("table", "pad", "block"):  # the block and its possible partners
        assert model.geom_friction[ids[name], 0] == pytest.approx(0.5 * mu0[ids[name]])
    assert model.geom_friction[ids["shelf"], 0] == mu0[ids["shelf"]]  # contype 2 never meets the block
    # Every contact of the block now uses half its nominal (pair-max) friction: 0.5*1.0 on the table, 0.5*1.6 on the pad.
    assert params["contact_friction"]["block"] == pytest.approx([0.5, 0.8])


def test_per_geom_on_the_object_alone_barely_reaches_its_contacts():
    """Why global is the default: lowering only the block leaves every contact at the partner's value."""
    model = mujoco.MjModel.from_xml_string(PAIRS_XML)
    params = Randomizer(only("physics", friction_mode="per_geom", geoms="block", friction=[0.5, 0.5])
                        ).bind(model).reset_model(model, 1)["physics"]
    assert params["friction"] == {"block": 0.5}
    assert params["contact_friction"]["block"] == pytest.approx([0.8, 1.6])  # table and pad win the max


def test_bad_friction_mode_names_the_field():
    from realgap.errors import RealgapError

    with pytest.raises(RealgapError, match=r"randomization\.axes\.physics\.friction_mode: expected one of global"):
        Randomizer(only("physics", friction_mode="pairs"))


# --- sensing: presence rows -------------------------------------------------------------------------

def _rows(present: list[bool]) -> np.ndarray:
    rows = np.zeros((len(present), 6), np.float32)
    for k, p in enumerate(present):
        if p:
            rows[k] = (1.0, 0.4 + 0.01 * k, -0.1, 0.03, 1.0, 0.0)
    return rows.reshape(-1)


def test_noise_spares_presence_flags_and_absent_rows():
    cfg = {"obs_keys": "proprio|object_state", "obs_noise_std": 0.05, "action_noise_std": 0.0, "latency_steps": [0, 0]}
    present = [True, False, True, False]
    obs = {"proprio": np.zeros(8, np.float32), "object_state": _rows(present)}
    out = SensingChannel(4, cfg, presence_rows={"object_state": 6}).observe(obs)
    rows, clean = out["object_state"].reshape(-1, 6), obs["object_state"].reshape(-1, 6)
    assert np.array_equal(rows[:, 0], clean[:, 0])  # flags exact
    assert np.array_equal(rows[[1, 3]], np.zeros((2, 6)))  # absent rows exactly zero
    assert np.all(np.abs(rows[[0, 2], 1:] - clean[[0, 2], 1:]) > 0)  # present poses are noisy
    assert np.std(out["proprio"]) > 0.01  # other keys: noise everywhere, as before
    # The noise a present row gets does not depend on which other items are present.
    other = {"proprio": obs["proprio"], "object_state": _rows([True, True, True, True])}
    out2 = SensingChannel(4, cfg, presence_rows={"object_state": 6}).observe(other)
    assert np.array_equal(out2["object_state"].reshape(-1, 6)[[0, 2]], rows[[0, 2]])


def test_realgap_env_declares_its_presence_rows_and_absent_items_read_zero():
    import realgap.envs
    from test_randomization import load

    cfg = only("sensing", base="default", obs_noise_std=0.05)
    env = realgap.envs.make("realgap/PlaceInReceptacle-v0", randomization=cfg)
    try:
        obs, info = env.reset(seed=0)
        rows = np.asarray(obs["object_state"]).reshape(-1, 6)
        assert set(np.unique(rows[:, 0])) == {0.0, 1.0}
        assert np.all(rows[rows[:, 0] == 0] == 0.0)
        assert np.abs(rows[rows[:, 0] == 1, 1:4]).max() > 0
        assert load("default")["axes"]["sensing"]["obs_noise_std"] > 0  # the training default is noisy
    finally:
        env.close()
