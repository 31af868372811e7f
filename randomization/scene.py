"""What the env tells the randomizer about the scene of one episode.

The env builds a ``SceneInfo`` (static facts once for ``Randomizer.bind``, the per-episode layout
for every ``Randomizer.reset_state``). All names are MuJoCo names in the compiled model.

Contract for the env:
- ``object_bodies``: bodies with a free joint that are *present* this episode (absent catalogue
  entries are parked by the env and must not be listed).
- ``receptacle_bodies``: present static receptacles, direct children of ``<worldbody>``; the env lays
  them out by writing ``model.body_pos`` / ``model.body_quat`` **after** ``reset_model`` (which
  restores every field the randomizer touched) and **before** ``reset_state``.
- ``receptacle_inner_half_extents[name] = (hx, hy)``: usable inner floor, in the receptacle frame.
- ``receptacle_floor_z[name]``: world z of the inner floor surface.
- ``table_bounds = (xmin, xmax, ymin, ymax)``: randomized xy positions stay inside; ``table_z``
  is the table top height (an object's rest height above it is kept when it is pre-placed).
- ``object_joints``: optional body -> free-joint name; when empty the body's first free joint is used.
- ``cameras`` / ``lights`` / ``geoms``: optional allow-lists; when non-empty an axis only touches
  names that are both listed here and matched by its config regex.
- ``presence_rows``: observation keys laid out as rows ``[present, ...]`` -> row width (realgap's
  ``{"object_state": 6}``); the sensing axis never adds noise to the flag or to absent rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SceneInfo:
    object_bodies: tuple[str, ...] = ()
    receptacle_bodies: tuple[str, ...] = ()
    target_object: str | None = None
    target_receptacle: str | None = None
    receptacle_inner_half_extents: dict[str, tuple[float, float]] = field(default_factory=dict)
    receptacle_floor_z: dict[str, float] = field(default_factory=dict)
    table_bounds: tuple[float, float, float, float] | None = None
    table_z: float = 0.0
    object_joints: dict[str, str] = field(default_factory=dict)
    cameras: tuple[str, ...] = ()
    lights: tuple[str, ...] = ()
    geoms: tuple[str, ...] = ()
    presence_rows: dict[str, int] = field(default_factory=dict)

    @property
    def distractors(self) -> tuple[str, ...]:
        return tuple(b for b in self.object_bodies if b != self.target_object)

    @property
    def other_receptacles(self) -> tuple[str, ...]:
        return tuple(r for r in self.receptacle_bodies if r != self.target_receptacle)
