"""The task family "place <object> in <receptacle>": item pools, sampling, instructions.

Sampling draws only from ``seeding.stream(episode_seed, "task")``; the layout slots are fixed
(``scene.OBJECT_SLOTS`` / ``RECEPTACLE_SLOTS``) so pose jitter belongs to the ``placement`` DR axis.

A *task variant* (``TaskVariant``, the env's ``task_variant`` kwarg) edits a sampled task in a seeded,
deterministic way for grounding tests: pin the target receptacle to a slot (the memorized location
L0), swap a novel or training receptacle in at L0 or move it to a free slot L1, name another present
receptacle (counterfactual instruction), or word the instruction differently.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import asdict, dataclass, field

from realgap.envs.catalogue import OBJECT_NAMES, OBJECTS, RECEPTACLE_NAMES, RECEPTACLES, object_spec, receptacle_spec
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
    phrasing: str | None = None  # the instruction worded otherwise than the template (task variants)
    grounding: dict | None = field(default=None, compare=False)  # a variant's L0 / L1 bookkeeping

    @property
    def instruction(self) -> str:
        return self.phrasing or instruction(self.target_object, self.target_receptacle)

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("phrasing", "grounding"):  # plain tasks keep their plain info
            if d[key] is None:
                del d[key]
        return {"instruction": self.instruction, **d}


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


# ------------------------------------------------------------------ task variants (grounding tests)
SWAP_PLACES = ("in_place", "move")
INSTRUCT = ("target", "other")
TRAINING = "training"  # swap.item: a training receptacle absent from the sampled scene
_PLACEHOLDERS = ("object", "receptacle", "object_colour", "object_shape", "receptacle_colour", "receptacle_shape")
_CHARSET = set(string.ascii_lowercase + " ")
_MAX_INSTRUCTION = 96  # the env's instruction space


def _slot_distance(a: int, b: int) -> float:
    return math.dist(RECEPTACLE_SLOTS[a], RECEPTACLE_SLOTS[b])


@dataclass(frozen=True)
class TaskVariant:
    """A seeded edit of a sampled task. Build it with ``TaskVariant.from_spec`` (validates)."""

    name: str = "variant"
    target_slot: int | None = None  # pin the target receptacle here (L0); None = where the sampler put it
    swap_item: str | None = None  # a receptacle name or TRAINING; None = no swap
    swap_place: str = "move"  # in_place: at L0 | move: to a free slot L1
    keep_trained: bool = False  # move: the trained target stays at L0 as a distractor
    min_distance: float = 0.15  # move: L1 at least this far (m) from L0
    swap_object: str | None = None  # an object name or TRAINING: takes the named object's place and name
    instruct: str = "target"  # other: name another present receptacle (counterfactual)
    phrasing: str | None = None  # template with {object}, {receptacle}, {object_shape}, ...
    synonyms: tuple[tuple[str, str], ...] = ()  # whole-word replacements applied to the worded instruction

    @classmethod
    def from_spec(cls, spec, allow_held_out: bool, field_name: str = "task_variant") -> "TaskVariant | None":
        """Validate a plain dict (the env kwarg); RealgapError with one line naming the field."""
        if spec is None:
            return None
        if isinstance(spec, TaskVariant):
            return spec
        if not isinstance(spec, dict):
            raise RealgapError(f"{field_name}: expected a mapping, got {spec!r}")
        known = {"name", "target_slot", "swap", "swap_object", "instruct", "phrasing", "synonyms"}
        if set(spec) - known:
            raise RealgapError(f"{field_name}: unknown key(s) {sorted(set(spec) - known)} (allowed: {', '.join(sorted(known))})")
        kw: dict = {"name": str(spec.get("name") or "variant")}
        slot = spec.get("target_slot")
        if slot is not None:
            if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < len(RECEPTACLE_SLOTS):
                raise RealgapError(f"{field_name}.target_slot: expected a receptacle slot 0..{len(RECEPTACLE_SLOTS) - 1} or null, got {slot!r}")
            kw["target_slot"] = slot
        swap = spec.get("swap")
        if swap is not None:
            if not isinstance(swap, dict):
                raise RealgapError(f"{field_name}.swap: expected a mapping, got {swap!r}")
            allowed = {"item", "place", "keep_trained", "min_distance"}
            if set(swap) - allowed:
                raise RealgapError(f"{field_name}.swap: unknown key(s) {sorted(set(swap) - allowed)} (allowed: {', '.join(sorted(allowed))})")
            item = swap.get("item")
            if item != TRAINING:
                if item in OBJECT_NAMES:
                    raise RealgapError(f"{field_name}.swap.item: {item!r} is an object; swaps take a receptacle "
                                       f"(one of {', '.join(RECEPTACLE_NAMES)}) or '{TRAINING}'")
                if item not in RECEPTACLE_NAMES:
                    raise RealgapError(f"{field_name}.swap.item: unknown receptacle {item!r}; known: "
                                       f"{', '.join(RECEPTACLE_NAMES)} or '{TRAINING}'")
                if receptacle_spec(item).held_out and not allow_held_out:
                    raise RealgapError(f"{field_name}.swap.item: {item!r} is held out of training tasks; only "
                                       "`realgap grounding` asks for it (allow_held_out=True)")
            place = swap.get("place", "move")
            if place not in SWAP_PLACES:
                raise RealgapError(f"{field_name}.swap.place: expected one of {SWAP_PLACES}, got {place!r}")
            dist = swap.get("min_distance", 0.15)
            if isinstance(dist, bool) or not isinstance(dist, (int, float)) or dist < 0:
                raise RealgapError(f"{field_name}.swap.min_distance: expected metres >= 0, got {dist!r}")
            kw.update(swap_item=item, swap_place=place, keep_trained=bool(swap.get("keep_trained", False)),
                      min_distance=float(dist))
        obj = spec.get("swap_object")
        if obj is not None:
            if obj != TRAINING and obj not in OBJECT_NAMES:
                raise RealgapError(f"{field_name}.swap_object: unknown object {obj!r}; known: {', '.join(OBJECT_NAMES)} or '{TRAINING}'")
            if obj != TRAINING and object_spec(obj).held_out and not allow_held_out:
                raise RealgapError(f"{field_name}.swap_object: {obj!r} is held out of training tasks; only "
                                   "`realgap grounding` asks for it (allow_held_out=True)")
            kw["swap_object"] = obj
        instruct = spec.get("instruct", "target")
        if instruct not in INSTRUCT:
            raise RealgapError(f"{field_name}.instruct: expected one of {INSTRUCT}, got {instruct!r}")
        kw["instruct"] = instruct
        phrasing = spec.get("phrasing")
        if phrasing is not None:
            if not isinstance(phrasing, str) or not phrasing.strip():
                raise RealgapError(f"{field_name}.phrasing: expected a template string, got {phrasing!r}")
            names = {n for _, n, _, _ in string.Formatter().parse(phrasing) if n is not None}
            if names - set(_PLACEHOLDERS):
                raise RealgapError(f"{field_name}.phrasing: unknown placeholder(s) {sorted(names - set(_PLACEHOLDERS))} "
                                   f"(allowed: {', '.join('{' + p + '}' for p in _PLACEHOLDERS)})")
            kw["phrasing"] = phrasing
        synonyms = spec.get("synonyms") or {}
        if not isinstance(synonyms, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in synonyms.items()):
            raise RealgapError(f"{field_name}.synonyms: expected a mapping of word -> word, got {synonyms!r}")
        kw["synonyms"] = tuple(sorted(synonyms.items()))
        variant = cls(**kw)
        variant.word(OBJECT_NAMES[0], RECEPTACLE_NAMES[0], field_name)  # the template must give a valid text
        return variant

    def word(self, obj: str, rec: str, field_name: str = "task_variant") -> str | None:
        """The instruction text for (object, receptacle), or None for the canonical template."""
        if self.phrasing is None and not self.synonyms:
            return None
        o, r = object_spec(obj), receptacle_spec(rec)
        text = (self.phrasing or "place the {object} in the {receptacle}").format(
            object=obj, receptacle=rec, object_colour=o.colour, object_shape=o.shape,
            receptacle_colour=r.colour, receptacle_shape=r.shape)
        for a, b in self.synonyms:
            text = re.sub(rf"\b{re.escape(a)}\b", b, text)
        text = " ".join(text.lower().split())
        if not text or set(text) - _CHARSET or len(text) > _MAX_INSTRUCTION:
            raise RealgapError(f"{field_name}.phrasing: {text!r} must be 1..{_MAX_INSTRUCTION} lowercase letters and spaces")
        return text

    def apply(self, task: Task, episode_seed: int) -> Task:
        """The edited task; RealgapError if this seed's scene cannot hold the variant."""
        rng = stream(episode_seed, "task_variant")
        where = f"task_variant {self.name!r}, seed {episode_seed}"
        recs, slots = list(task.receptacles), list(task.receptacle_slots)
        ti = recs.index(task.target_receptacle)
        if self.target_slot is not None and slots[ti] != self.target_slot:
            if self.target_slot in slots:  # the other receptacle makes room
                slots[slots.index(self.target_slot)] = slots[ti]
            slots[ti] = self.target_slot
        l0, trained, instructed, l1 = slots[ti], task.target_receptacle, task.target_receptacle, None
        if self.swap_item is not None:
            item = self.swap_item
            if item == TRAINING:
                absent = [r.name for r in RECEPTACLES if not r.held_out and r.name not in recs]
                if not absent:
                    raise RealgapError(f"{where}: no training receptacle is absent from the scene to swap in")
                item = absent[int(rng.integers(len(absent)))]
            elif item in recs:
                raise RealgapError(f"{where}: cannot be built: {item!r} is already in the scene")
            if self.swap_place == "in_place":
                recs[ti] = item
            else:
                free = [s for s in range(len(RECEPTACLE_SLOTS)) if s not in slots]
                far = [s for s in free if _slot_distance(l0, s) >= self.min_distance - 1e-9]
                if not far:
                    seen = ", ".join(f"slot {s} at {_slot_distance(l0, s):.2f} m" for s in free) or "none"
                    raise RealgapError(f"{where}: cannot be built: no free receptacle slot at >= {self.min_distance:.2f} m "
                                       f"from L0 (slot {l0}); free: {seen}")
                l1 = far[int(rng.integers(len(far)))]
                if self.keep_trained:
                    recs.append(item)
                    slots.append(l1)
                else:
                    recs[ti], slots[ti] = item, l1
            instructed = item
        objs, target_obj = list(task.objects), task.target_object
        if self.swap_object is not None:  # the new object stands where the named one stood
            new = self.swap_object
            if new == TRAINING:
                absent = [o.name for o in OBJECTS if not o.held_out and o.name not in objs]
                if not absent:
                    raise RealgapError(f"{where}: no training object is absent from the scene to swap in")
                new = absent[int(rng.integers(len(absent)))]
            elif new in objs:
                raise RealgapError(f"{where}: cannot be built: {new!r} is already in the scene")
            objs[objs.index(target_obj)], target_obj = new, new
        if self.instruct == "other":
            others = [r for r in recs if r != instructed]
            if not others:
                raise RealgapError(f"{where}: cannot be built: no other receptacle in the scene to name")
            instructed = others[int(rng.integers(len(others)))]
        meta = {
            "variant": self.name, "trained_target": trained, "instructed": instructed, "trained_object": task.target_object,
            "memorized_slot": l0, "memorized_xy": list(RECEPTACLE_SLOTS[l0]),
            "new_slot": l1, "new_xy": list(RECEPTACLE_SLOTS[l1]) if l1 is not None else None,
        }
        return Task(target_obj, instructed, tuple(objs), tuple(recs), task.object_slots, tuple(slots),
                    phrasing=self.word(target_obj, instructed, where), grounding=meta)


def make_task(episode_seed: int, objects: tuple[str, ...], receptacles: tuple[str, ...],
              variant: TaskVariant | None = None) -> Task:
    """The episode's task: sampled from the pools, then edited by ``variant`` if one is given."""
    task = sample_task(episode_seed, objects, receptacles)
    return variant.apply(task, episode_seed) if variant is not None else task
