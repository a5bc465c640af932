"""Input checks for pattern stacks: one clear error for each way input can be wrong."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["as_patterns"]

#: Largest finite float32 (about 3.4e38): the models compute in float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def complex_message(name: str) -> str:
    """The refusal of complex input (wave functions instead of intensities); one wording for
    :func:`as_patterns` and :func:`rrvae_nb.preprocess.prepare`."""
    return f"{name} is complex; pass intensities (e.g. abs(wave) ** 2), not wave functions."


def float32_range_message(name: str, count: int, largest: float) -> str:
    """The refusal of finite values that float32 cannot hold (they would become inf)."""
    return (
        f"{name} holds {count} value(s) beyond the float32 range (|x| > 3.4e38; largest "
        f"{largest:.3g}), which the float32 computation would turn into inf: rescale the data "
        "first (e.g. divide by data.max()), or check it for corrupt values."
    )


def _beyond_float32(x: torch.Tensor) -> tuple[int, float]:
    """Count and largest magnitude of the finite values of a float64 tensor beyond float32."""
    if x.dtype != torch.float64 or x.numel() == 0:
        return 0, 0.0
    count, largest = 0, 0.0
    for c in x.reshape(x.shape[0], -1).split(1024):  # chunks: no full-size temporaries
        a = c.abs()
        big = (a > FLOAT32_MAX) & torch.isfinite(a)
        n = int(big.sum())
        if n:
            count, largest = count + n, max(largest, float(a[big].max()))
    return count, largest


def as_patterns(
    patterns,
    shape: tuple[int, int] | None = None,
    *,
    unit_interval: bool = False,
    name: str = "patterns",
) -> torch.Tensor:
    """Check a stack of diffraction patterns and return it as a float32 CPU tensor.

    Parameters
    ----------
    patterns : numpy.ndarray or torch.Tensor
        (N, H, W) = (N, ky, kx).
    shape : (int, int), optional
        The (H, W) the model was built for.
    unit_interval : bool
        Require values in [0, 1] (Bernoulli likelihoods).

    Raises
    ------
    ValueError
        Wrong type (complex, non-numeric) or dimensionality, empty input, shape mismatch, NaN/inf,
        values beyond the float32 range, constant patterns, or values outside [0, 1] when
        ``unit_interval``; the message says how to fix it.
    """
    x = _as_tensor(patterns, name)
    _check_axes(x, shape, name)
    return _checked_values(x, unit_interval, name)


def _as_tensor(patterns, name: str) -> torch.Tensor:
    """A CPU tensor of ``patterns`` (numpy or torch), refusing complex and non-numeric input."""
    if isinstance(patterns, torch.Tensor):
        x = patterns.detach().to("cpu")
        if x.is_complex():
            raise ValueError(complex_message(name))
    else:
        try:
            arr = np.asarray(patterns)
        except Exception as err:  # noqa: BLE001 - any conversion failure is the user's input
            raise ValueError(f"{name} must be a numpy array or torch tensor: {err}") from err
        if np.issubdtype(arr.dtype, np.complexfloating):
            raise ValueError(complex_message(name))
        if arr.dtype.kind == "f" and arr.dtype.itemsize > 8:  # long double: torch has none
            arr = arr.astype(np.float64)
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(
                f"{name} must be a numeric array of shape (N, H, W); got dtype {arr.dtype}."
            )
        x = torch.from_numpy(np.ascontiguousarray(arr))
    return x


def _check_axes(x: torch.Tensor, shape, name: str) -> None:
    """(N, H, W) with N > 0, and (H, W) == ``shape`` when given."""
    if x.ndim != 3:
        hint = {
            2: "a single pattern: add a batch axis, e.g. patterns[None]",
            4: "a 4D-STEM cube (scan y, scan x, ky, kx): flatten the scan, e.g. "
            "data.reshape(-1, ky, kx), or use rrvae_nb.preprocess.prepare",
        }.get(x.ndim, "reshape it to (N, H, W)")
        raise ValueError(
            f"{name} must have 3 axes (N, H, W) = (patterns, ky, kx); got shape {tuple(x.shape)}"
            f" ({hint})."
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 patterns): pass at least one pattern.")
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(
            f"{name} have shape {tuple(x.shape[1:])} per pattern but the model was built for "
            f"{tuple(shape)}: crop, bin or resize them (rrvae_nb.preprocess) or build the model "
            f"with pattern_shape={tuple(x.shape[1:])}."
        )


def _checked_values(x: torch.Tensor, unit_interval: bool, name: str) -> torch.Tensor:
    """float32 ``x``, refusing values beyond float32, NaN/inf, constant patterns and, when
    ``unit_interval``, values outside [0, 1]."""
    count, largest = _beyond_float32(x)
    if count:
        raise ValueError(float32_range_message(name, count, largest))
    x = x.to(torch.float32)
    # checked in chunks: a full-size boolean mask would cost a quarter of the data's memory
    finite = torch.cat([torch.isfinite(c).flatten(1).all(1) for c in x.split(1024)])
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten()
        raise ValueError(
            f"{name} contain NaN or inf values in {bad.numel()} pattern(s) (first: index "
            f"{int(bad[0])}): remove or repair them (e.g. np.nan_to_num) before training."
        )
    flat = x.flatten(1)
    constant = (flat.amax(1) == flat.amin(1)).nonzero().flatten()
    if constant.numel():
        raise ValueError(
            f"{constant.numel()} of {x.shape[0]} {name} are constant (e.g. all zero; first: index "
            f"{int(constant[0])}): they carry no information. Drop them (e.g. dead scan positions)."
        )
    if unit_interval and (float(x.min()) < 0 or float(x.max()) > 1):
        raise ValueError(
            f"{name} range from {float(x.min()):.3g} to {float(x.max()):.3g}, but a Bernoulli "
            "likelihood needs values in [0, 1]: normalise them first "
            "(rrvae_nb.preprocess.normalise) or use likelihood='gaussian'."
        )
    return x


def whole_number(name: str, value, minimum: int = 0) -> int:
    """``value`` as an int >= ``minimum``, or a ValueError that names the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}; got {value!r}.")
    return int(value)


def positive_number(name: str, value, unit: str = "") -> float:
    """``value`` as a finite float > 0, or a ValueError that names the argument."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0{unit}; got {value!r}.")
    return float(value)
