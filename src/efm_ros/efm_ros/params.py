"""Declared, described parameters (STYLE.md: ParameterDescriptor with description, ranges,
read-only for paths and shapes; changes validated in an on-set callback)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.node import Node
from rclpy.parameter import Parameter

Validator = Callable[[Any], str | None]


class Parameters:
    """Declares a node's parameters and validates every later change.

    ``declare`` returns the value in force (from YAML / overrides, else the default).
    Each parameter may carry a validator returning an error string or None; a change that
    fails is refused with that reason (``ros2 param set`` shows it).
    """

    def __init__(self, node: Node) -> None:
        self._node = node
        self._validators: dict[str, Validator] = {}
        self._on_change: dict[str, Callable[[Any], None]] = {}
        node.add_on_set_parameters_callback(self._on_set)

    def declare(
        self,
        name: str,
        default: Any,
        description: str,
        *,
        read_only: bool = False,
        min_value: float | None = None,
        max_value: float | None = None,
        choices: tuple[str, ...] | None = None,
        validator: Validator | None = None,
        on_change: Callable[[Any], None] | None = None,
    ) -> Any:
        descriptor = ParameterDescriptor(description=description, read_only=read_only)
        if min_value is not None or max_value is not None:
            lo = -1e308 if min_value is None else min_value
            hi = 1e308 if max_value is None else max_value
            if isinstance(default, bool) or not isinstance(default, (int, float)):
                raise TypeError(f"{name}: ranges need a numeric default")
            if isinstance(default, int):
                descriptor.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi))]
            else:
                descriptor.floating_point_range = [
                    FloatingPointRange(from_value=float(lo), to_value=float(hi))
                ]
        if choices:
            descriptor.additional_constraints = f"one of {list(choices)}"

        def check(value: Any) -> str | None:
            if choices and value not in choices:
                return f"{name} must be one of {list(choices)}, got {value!r}"
            if min_value is not None and value < min_value:
                return f"{name} must be >= {min_value}, got {value}"
            if max_value is not None and value > max_value:
                return f"{name} must be <= {max_value}, got {value}"
            return validator(value) if validator else None

        self._validators[name] = check
        value = self._node.declare_parameter(name, default, descriptor).value
        problem = check(value)
        if problem:
            raise ValueError(f"parameter {problem}")
        if on_change:  # only for later changes: the caller uses the returned value now
            self._on_change[name] = on_change
        return value

    def _on_set(self, params: list[Parameter]) -> SetParametersResult:
        for param in params:
            check = self._validators.get(param.name)
            problem = check(param.value) if check else None
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        for param in params:
            if param.name in self._on_change:
                self._on_change[param.name](param.value)
        return SetParametersResult(successful=True)
