"""Task families, instruction templates, parser and sampler (paper Appendix D.1, D.2).

PushTable (LanguageTable-like, Appendix D.1) has three families with varied wording:

* ``block2block``: "push the red moon to the blue cube", "slide ... next to ...", ...
  (the family the paper self-improves on);
* ``block2location``: "push the green star to the top left of the board", ...;
* ``separate``: "separate the red moon from the blue cube", ...

BananaTable (Appendix D.2) has one family, ``banana2location``:
"<push|move|slide|nudge> the banana to the <location> of the table", with the nine
locations the paper lists. Unknown instructions or families are refused with a
``ValueError`` that lists the valid choices.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# The eight LanguageTable blocks: four colours x four shapes, two blocks per colour.
BLOCKS: tuple[str, ...] = (
    "red moon",
    "red pentagon",
    "blue moon",
    "blue cube",
    "green cube",
    "green star",
    "yellow star",
    "yellow pentagon",
)
COLOURS: tuple[str, ...] = ("red", "blue", "green", "yellow")
SHAPES: tuple[str, ...] = ("cube", "moon", "star", "pentagon")

BLOCK2BLOCK = "block2block"
BLOCK2LOCATION = "block2location"
SEPARATE = "separate"
BANANA2LOCATION = "banana2location"
PUSHTABLE_FAMILIES: tuple[str, ...] = (BLOCK2BLOCK, BLOCK2LOCATION, SEPARATE)
BANANATABLE_FAMILIES: tuple[str, ...] = (BANANA2LOCATION,)

# Board locations as fractions of the reachable half-extent: x right, y up (image top).
LOCATIONS: dict[str, tuple[float, float]] = {
    "top left": (-1.0, 1.0),
    "top center": (0.0, 1.0),
    "top right": (1.0, 1.0),
    "left": (-1.0, 0.0),
    "center": (0.0, 0.0),
    "right": (1.0, 0.0),
    "bottom left": (-1.0, -1.0),
    "bottom": (0.0, -1.0),
    "bottom right": (1.0, -1.0),
}
"""The nine BananaTable locations of Appendix D.2 (also used by block2location)."""

BANANA_VERBS: tuple[str, ...] = ("push", "move", "slide", "nudge")

TEMPLATES: dict[str, tuple[str, ...]] = {
    BLOCK2BLOCK: (
        "push the {block} to the {target}",
        "move the {block} towards the {target}",
        "slide the {block} next to the {target}",
        "put the {block} next to the {target}",
        "push the {block} so that it touches the {target}",
        "move the {block} close to the {target}",
        "nudge the {block} over to the {target}",
    ),
    BLOCK2LOCATION: (
        "push the {block} to the {location} of the board",
        "move the {block} to the {location} of the board",
        "slide the {block} to the {location} of the board",
        "put the {block} in the {location} of the board",
    ),
    SEPARATE: (
        "separate the {block} from the {target}",
        "push the {block} away from the {target}",
        "move the {block} apart from the {target}",
        "pull the {block} and the {target} apart",
    ),
    BANANA2LOCATION: tuple(
        f"{v} the banana to the {{location}} of the table" for v in BANANA_VERBS
    ),
}


@dataclass(frozen=True)
class Task:
    """A parsed instruction: family plus the objects/location it refers to."""

    family: str
    instruction: str
    block: str | None = None
    target: str | None = None
    location: str | None = None


def normalize(text: str) -> str:
    """Lower-case, collapse whitespace, drop a trailing full stop."""
    return re.sub(r"\s+", " ", str(text).strip().lower()).rstrip(".").strip()


def _pattern(template: str) -> re.Pattern[str]:
    blocks = "|".join(re.escape(b) for b in BLOCKS)
    locs = "|".join(re.escape(k) for k in sorted(LOCATIONS, key=len, reverse=True))
    body = re.escape(template)
    body = body.replace(re.escape("{block}"), f"(?P<block>{blocks})")
    body = body.replace(re.escape("{target}"), f"(?P<target>{blocks})")
    body = body.replace(re.escape("{location}"), f"(?P<location>{locs})")
    return re.compile(f"^{body}$")


_PATTERNS: dict[str, list[re.Pattern[str]]] = {
    fam: [_pattern(t) for t in temps] for fam, temps in TEMPLATES.items()
}


def check_family(family: str, valid: Sequence[str]) -> str:
    """Return ``family`` if it is one of ``valid``, else raise ValueError listing them."""
    if family not in valid:
        raise ValueError(f"unknown task family {family!r}; valid families: {list(valid)}")
    return family


def examples(families: Sequence[str]) -> list[str]:
    """One example instruction per template of ``families`` (for error messages/docs)."""
    out = []
    for fam in families:
        for t in TEMPLATES[fam]:
            out.append(t.format(block=BLOCKS[0], target=BLOCKS[3], location="top left"))
    return out


def parse_instruction(text: str, families: Sequence[str]) -> Task:
    """Parse ``text`` into a ``Task`` of one of ``families``; ValueError if unknown."""
    norm = normalize(text)
    for fam in families:
        for pat in _PATTERNS[fam]:
            m = pat.match(norm)
            if m is None:
                continue
            groups = m.groupdict()
            block, target = groups.get("block"), groups.get("target")
            if block is not None and block == target:
                raise ValueError(f"instruction {text!r} names the same block twice")
            return Task(fam, norm, block=block, target=target, location=groups.get("location"))
    raise ValueError(
        f"unknown instruction {text!r} for families {list(families)}; valid forms are "
        f"the templates {[t for f in families for t in TEMPLATES[f]]} with blocks "
        f"{list(BLOCKS)} and locations {list(LOCATIONS)}"
    )


def sample_task(family: str, rng: np.random.Generator, blocks: Sequence[str] = BLOCKS) -> Task:
    """Sample an instruction of ``family`` with a random template and random objects."""
    template = TEMPLATES[family][int(rng.integers(len(TEMPLATES[family])))]
    block = target = location = None
    if family == BANANA2LOCATION:
        location = list(LOCATIONS)[int(rng.integers(len(LOCATIONS)))]
    else:
        i, j = rng.choice(len(blocks), size=2, replace=False)
        block = blocks[int(i)]
        if family == BLOCK2LOCATION:
            location = list(LOCATIONS)[int(rng.integers(len(LOCATIONS)))]
        else:
            target = blocks[int(j)]
    text = template.format(block=block, target=target, location=location)
    return Task(family, text, block=block, target=target, location=location)
