"""Input checks shared by the learning core: finite arrays of the expected shape.

Every public function that takes numbers from outside (datasets, messages, configs)
validates them here, so bad input fails loudly with a ValueError that names the argument.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _shape_matches(got: tuple[int, ...], want: Sequence[int | None]) -> bool:
    return len(got) == len(want) and all(
        w is None or w == g for w, g in zip(want, got, strict=True)
    )


def finite_array(
    value: object,
    name: str,
    *,
    ndim: int | None = None,
    shape: Sequence[int | None] | None = None,
    dtype: type | np.dtype = np.float64,
) -> np.ndarray:
    """Return ``value`` as an array, refusing NaN/inf and wrong shapes with a clear ValueError.

    ``shape`` entries that are ``None`` match any size.
    """
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be numeric, got {type(value).__name__}: {error}") from None
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {array.shape}")
    if shape is not None and not _shape_matches(array.shape, shape):
        pretty = tuple("*" if s is None else s for s in shape)
        raise ValueError(f"{name} must have shape {pretty}, got {array.shape}")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name} contains {bad} NaN/inf value(s)")
    return array


def integer_array(value: object, name: str, *, low: int, high: int) -> np.ndarray:
    """Return ``value`` as an int64 array with every entry in ``[low, high]``."""
    array = np.asarray(value)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        as_float = finite_array(array, name)
        if not np.all(as_float == np.round(as_float)):
            raise ValueError(f"{name} must hold integers, got {array.dtype} with fractions")
        array = as_float
    array = array.astype(np.int64)
    if array.size and (array.min() < low or array.max() > high):
        raise ValueError(
            f"{name} must lie in [{low}, {high}], got values in [{array.min()}, {array.max()}]"
        )
    return array
