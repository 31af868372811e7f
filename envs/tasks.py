"""The task family "place <object> in <receptacle>": item pools, sampling, instructions.

Sampling draws only from ``seeding.stream(episode_seed, "task")``; the layout slots are fixed
(``scene.OBJECT_SLOTS`` / ``RECEPTACLE_SLOTS``) so pose jitter belongs to the ``placement`` DR axis.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from realgap.envs.catalogue import OBJECT_NAMES, OBJECTS, RECEPTACLE_NAMES, RECEPTACLES
from realgap.envs.scene import OBJECT_SLOTS, RECEPTACLE_SLOTS
from realgap.errors import RealgapError
from realgap.seeding import stream

N_OBJECTS = 3  # present per episode (target + distractors), fewer if the pool is smaller
N_RECEPTACLES = 2


@dataclass(frozen=True)
class Task:
    target_object: str
    target_receptacle: str
    objects: tuple[str, ...]  # present objects, objects[i] stands in object_slots[i]
    receptacles: tuple[str, ...]
    object_slots: tuple[int, ...]
    receptacle_slots: tuple[int, ...]

    @property
    def instruction(self) -> str:
        return instruction(self.target_object, self.target_receptacle)

    def to_dict(self) -> dict:
        return {"instruction": self.instruction, **asdict(self)}


def instruction(object_name: str, receptacle_name: str) -> str:
    return f"place the {object_name} in the {receptacle_name}"


def parse_instruction(text: str) -> tuple[str, str]:
    """(object name, receptacle name) from an instruction; RealgapError if it names no catalogue items."""
    for obj in OBJECT_NAMES:
        for rec in RECEPTACLE_NAMES:
            if text.strip() == instruction(obj, rec):
                return obj, rec
    raise RealgapError(f"instruction: {text!r} does not name a catalogue object and receptacle")


def item_pool(field: str, requested, catalogue, allow_held_out: bool) -> tuple[str, ...]:
    """Validated names for one pool: the requested ones, or every training (non-held-out) item."""
    names = [spec.name for spec in catalogue]
    if requested is None:
        return tuple(s.name for s in catalogue if allow_held_out or not s.held_out)
    if isinstance(requested, str):
        requested = [requested]
    requested = list(requested)
    if not requested:
        raise RealgapError(f"{field}: empty list; name at least one of {names}")
    for name in requested:
        if name not in names:
            raise RealgapError(f"{field}: unknown {field[:-1]} {name!r}; known: {', '.join(names)}")
        if catalogue[names.index(name)].held_out and not allow_held_out:
            raise RealgapError(f"{field}: {name!r} is held out of training tasks; pass allow_held_out=True")
    if len(set(requested)) != len(requested):
        raise RealgapError(f"{field}: duplicate names in {requested}")
    return tuple(requested)


def object_pool(requested, allow_held_out: bool) -> tuple[str, ...]:
    return item_pool("objects", requested, OBJECTS, allow_held_out)


def receptacle_pool(requested, allow_held_out: bool) -> tuple[str, ...]:
    return item_pool("receptacles", requested, RECEPTACLES, allow_held_out)


def sample_task(episode_seed: int, objects: tuple[str, ...], receptacles: tuple[str, ...]) -> Task:
    """Which items are present, in which slots, and which pair the instruction names."""
    rng = stream(episode_seed, "task")
    n_obj, n_rec = min(N_OBJECTS, len(objects)), min(N_RECEPTACLES, len(receptacles))
    present_obj = [objects[i] for i in rng.permutation(len(objects))[:n_obj]]
    present_rec = [receptacles[i] for i in rng.permutation(len(receptacles))[:n_rec]]
    obj_slots = sorted(int(i) for i in rng.permutation(len(OBJECT_SLOTS))[:n_obj])
    rec_slots = sorted(int(i) for i in rng.permutation(len(RECEPTACLE_SLOTS))[:n_rec])
    target_obj = present_obj[int(rng.integers(n_obj))]
    target_rec = present_rec[int(rng.integers(n_rec))]
    return Task(target_obj, target_rec, tuple(present_obj), tuple(present_rec), tuple(obj_slots), tuple(rec_slots))
