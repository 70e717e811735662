"""Instruction templates, parser and sampler (paper Appendix D.1, D.2)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from efm_sim import tasks


@settings(max_examples=200, deadline=None)
@given(
    family=st.sampled_from(tasks.PUSHTABLE_FAMILIES + tasks.BANANATABLE_FAMILIES),
    seed=st.integers(0, 2**32 - 1),
)
def test_sampled_instructions_parse_back(family: str, seed: int) -> None:
    task = tasks.sample_task(family, np.random.default_rng(seed))
    assert tasks.parse_instruction(task.instruction, [family]) == task
    # Case, spacing and a trailing full stop do not matter.
    messy = "  " + task.instruction.upper().replace(" ", "  ") + "."
    assert tasks.parse_instruction(messy, [family]) == task


def test_block2block_examples_from_the_issue() -> None:
    for text in (
        "push the red moon to the blue cube",
        "slide the yellow star next to the green cube",
        "move the blue moon towards the red pentagon",
    ):
        task = tasks.parse_instruction(text, tasks.PUSHTABLE_FAMILIES)
        assert task.family == tasks.BLOCK2BLOCK
    task = tasks.parse_instruction(
        "push the green star to the top left of the board", tasks.PUSHTABLE_FAMILIES
    )
    assert (task.family, task.block, task.location) == (
        tasks.BLOCK2LOCATION,
        "green star",
        "top left",
    )


def test_banana_instructions_follow_appendix_d2() -> None:
    assert set(tasks.LOCATIONS) == {
        "left",
        "top left",
        "top center",
        "top right",
        "right",
        "bottom right",
        "bottom",
        "bottom left",
        "center",
    }
    for verb in ("push", "move", "slide", "nudge"):
        task = tasks.parse_instruction(
            f"{verb} the banana to the bottom right of the table", tasks.BANANATABLE_FAMILIES
        )
        assert task.location == "bottom right"


def test_eight_languagetable_blocks() -> None:
    assert len(tasks.BLOCKS) == 8 == len(set(tasks.BLOCKS))
    for block in tasks.BLOCKS:
        colour, shape = block.split()
        assert colour in tasks.COLOURS and shape in tasks.SHAPES


@pytest.mark.parametrize(
    "text",
    [
        "push the purple moon to the blue cube",  # unknown colour
        "push the red cube to the blue cube",  # no red cube on the LanguageTable board
        "stack the red moon on the blue cube",  # unknown verb/template
        "push the banana to the left of the table",  # BananaTable wording, wrong env
        "",
    ],
)
def test_unknown_instructions_refused_with_choices(text: str) -> None:
    with pytest.raises(ValueError, match="valid forms") as err:
        tasks.parse_instruction(text, tasks.PUSHTABLE_FAMILIES)
    assert "red moon" in str(err.value) and "top left" in str(err.value)


def test_same_block_twice_refused() -> None:
    with pytest.raises(ValueError, match="same block"):
        tasks.parse_instruction("push the red moon to the red moon", tasks.PUSHTABLE_FAMILIES)


def test_unknown_family_refused() -> None:
    with pytest.raises(ValueError, match="valid families"):
        tasks.check_family("stacking", tasks.PUSHTABLE_FAMILIES)


def test_efm_sim_never_imports_ros_or_torch() -> None:
    import ast
    from pathlib import Path

    import efm_sim

    for path in Path(efm_sim.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in {"rclpy", "torch"}, f"{path.name} imports {name}"
