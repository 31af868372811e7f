"""The catalogue: every graspable object and receptacle the scene can hold.

One entry per item, identified by ``"<colour> <shape>"`` (the words an instruction uses). Every
entry is compiled into the one MuJoCo model; items absent from an episode are parked off the table.
Entries marked ``held_out`` never appear in the training task distribution: they exist so a later
evaluation can ask for a novel object or receptacle (``allow_held_out=True``).

Sizes are in metres. Objects stand on the table with their centre at ``half_height``.
Receptacles are open-top containers with a floor and walls; ``inner`` is the free footprint inside
the walls (half extents for a box, radius for a round one) and ``height`` the rim height.
"""

from __future__ import annotations

from dataclasses import dataclass

RGBA = tuple[float, float, float, float]

COLOURS: dict[str, RGBA] = {
    "red": (0.85, 0.12, 0.12, 1.0),
    "blue": (0.15, 0.3, 0.9, 1.0),
    "orange": (0.95, 0.55, 0.1, 1.0),
    "purple": (0.55, 0.2, 0.75, 1.0),
    "green": (0.15, 0.7, 0.25, 1.0),
    "yellow": (0.95, 0.85, 0.15, 1.0),
    "grey": (0.55, 0.55, 0.58, 1.0),
    "pink": (0.95, 0.5, 0.7, 1.0),
    "white": (0.92, 0.92, 0.92, 1.0),
    "teal": (0.1, 0.6, 0.6, 1.0),
}


class _CatalogueItem:
    """What objects and receptacles share: a name made of colour and shape, and the colour's RGBA."""

    colour: str
    shape: str

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def colour_rgba(self) -> RGBA:
        return COLOURS[self.colour]


@dataclass(frozen=True)
class ObjectSpec(_CatalogueItem):
    colour: str
    shape: str  # "block" (cube) or "vial" (upright cylinder)
    size: tuple[float, ...]  # block: (half side,), vial: (radius, half height)
    mass: float = 0.05
    held_out: bool = False

    @property
    def half_height(self) -> float:
        return self.size[0] if self.shape == "block" else self.size[1]

    @property
    def half_width(self) -> float:
        """Half the width the gripper closes on."""
        return self.size[0]


@dataclass(frozen=True)
class ReceptacleSpec(_CatalogueItem):
    colour: str
    shape: str  # "rack", "crate", "tray" (box walls) or "bowl", "cup" (round walls)
    inner: tuple[float, ...]  # box: (half x, half y), round: (radius,)
    height: float  # rim height above the table
    wall: float = 0.006
    mass: float = 1.0
    held_out: bool = False

    @property
    def round(self) -> bool:
        return len(self.inner) == 1


OBJECTS: tuple[ObjectSpec, ...] = (
    ObjectSpec("red", "block", (0.02,)),
    ObjectSpec("blue", "block", (0.02,)),
    ObjectSpec("orange", "vial", (0.015, 0.035)),
    ObjectSpec("purple", "vial", (0.015, 0.035)),
    ObjectSpec("green", "vial", (0.015, 0.035), held_out=True),
    ObjectSpec("teal", "block", (0.02,), held_out=True),
)

RECEPTACLES: tuple[ReceptacleSpec, ...] = (
    ReceptacleSpec("yellow", "rack", (0.045, 0.045), height=0.05),
    ReceptacleSpec("grey", "bowl", (0.058,), height=0.03),
    ReceptacleSpec("pink", "tray", (0.062, 0.05), height=0.025),
    ReceptacleSpec("white", "crate", (0.05, 0.05), height=0.045),
    ReceptacleSpec("blue", "cup", (0.042,), height=0.06, held_out=True),
)

OBJECT_NAMES = tuple(o.name for o in OBJECTS)
RECEPTACLE_NAMES = tuple(r.name for r in RECEPTACLES)
ITEM_NAMES = OBJECT_NAMES + RECEPTACLE_NAMES  # row order of the object_state observation


def body_name(item_name: str) -> str:
    """MJCF body name of a catalogue item: ``"red block"`` -> ``"red_block"``."""
    return item_name.replace(" ", "_")


def object_spec(name: str) -> ObjectSpec:
    return OBJECTS[OBJECT_NAMES.index(name)]


def receptacle_spec(name: str) -> ReceptacleSpec:
    return RECEPTACLES[RECEPTACLE_NAMES.index(name)]
