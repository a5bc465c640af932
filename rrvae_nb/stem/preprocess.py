"""Preprocessing of 4D-STEM diffraction patterns for the rrVAE.

:func:`prepare` turns a 4D-STEM dataset into a stack of small, centred, normalised patterns
(N, H, W) float32 that a model can train on, and keeps what is needed to put per-pattern results
(latents, angles, COM) back onto the calibrated scan grid (:class:`Prepared`).

The steps, in the order :func:`prepare` applies them (each is also a public function):

1. **Centre** on the bright-field (BF) disk: :func:`bf_disk_centre` finds the disk in the mean
   pattern (threshold at a fraction of its maximum, centre of mass of the thresholded disk).
   Every pattern is then moved by the *same* amount so that this point lands on the centre of the
   output window. One shift for the whole scan, never one per pattern: per-pattern centring would
   erase the small displacements of each pattern's centre of mass (COM), the first moment of the
   intensity moved inside the disk, which carry the projected electric field.
2. **Crop** a square window around the centre (:func:`crop_centred`). Steps 1 and 2 are one
   resampling of a window whose centre is the disk centre.
3. **Bin** k x k blocks (:func:`bin_patterns`, sum or mean; keeps the Poisson statistics) *or*
   **resize** (:func:`resize_patterns`, bicubic like the paper's 256 -> 64).
4. Optional **intensity scaling** (:func:`scale_intensity`: ``'log'`` = log(1 + I), ``'sqrt'``, or a
   power).
5. **Subtract the mean pattern** of the reduced stack.
6. Optional **PCA denoising** (:func:`pca_denoise`): fit ``pca_components``, project every
   pattern onto the first ``pca_keep`` (:func:`pca_project`; the paper: 20 fitted, 13 kept).
7. **Normalise** the whole stack to [0, 1] (:func:`normalise`).

Steps 1-4 act on each pattern on its own, so they run batch by batch on numpy arrays and chunk by
chunk (``dask`` ``map_blocks``) on lazy hyperspy signals, whose raw cube is never loaded whole.
Steps 5-7 act on the reduced stack, which is small (4096 patterns of 64 x 64 are 64 MiB).

Conventions: 4D arrays are (scan y, scan x, ky, kx); stacks of patterns are (N, ky, kx) with N
running over scan x fastest (row-major, like ``array.reshape(-1, ky, kx)``). Pixel coordinates
are (row, column) = (ky, kx) with pixel centres at integers, so the centre of an H x W pattern is
((H - 1) / 2, (W - 1) / 2): the point about which a pixel grid (and the rrVAE's decoder grid)
rotates into itself.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage

from . import core
from ._checks import FLOAT32_MAX, complex_message, float32_range_message
from .signals import Calibration, make_signal, require_hyperspy

__all__ = [
    "Prepared",
    "prepare",
    "bf_disk_centre",
    "crop_centred",
    "bin_patterns",
    "resize_patterns",
    "scale_intensity",
    "pca_denoise",
    "pca_project",
    "noise_floor_keep",
    "normalise",
]

#: Target size in bytes of one batch of raw patterns in the numpy path: the core's one budget.
BATCH_BYTES = core.BLOCK_BYTES

#: Extra random directions used by the randomized PCA beyond the requested components (accuracy).
PCA_OVERSAMPLING = 10

#: Power iterations of the randomized PCA (accuracy on slowly decaying spectra).
PCA_POWER_ITERATIONS = 4


# ----------------------------------------------------------------------------------------------
# Small helpers


def _as_patterns(patterns, name: str = "patterns") -> np.ndarray:
    """Return ``patterns`` as a numpy array of shape (N, ky, kx) or (scan y, scan x, ky, kx)."""
    x = np.asarray(patterns)
    if x.ndim not in (3, 4):
        raise ValueError(
            f"{name} must have shape (N, ky, kx) or (scan y, scan x, ky, kx); got shape "
            f"{x.shape}. For a single pattern use pattern[None]; reshape other layouts first."
        )
    _check_dtype(x.dtype, name)
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {x.shape}); pass at least one non-empty pattern.")
    return x


def _check_dtype(dtype, name: str) -> None:
    if np.issubdtype(dtype, np.complexfloating):
        raise ValueError(complex_message(name))
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise ValueError(f"{name} has dtype {dtype}; pass a real numeric array.")


def _check_finite(x: np.ndarray, name: str) -> None:
    bad = np.count_nonzero(~np.isfinite(x))
    if bad:
        raise ValueError(
            f"{name} contains {bad} NaN or infinite values. Replace or mask them first, e.g. "
            "np.nan_to_num(data, nan=0.0, posinf=0.0), or drop the affected patterns."
        )


def _square_size(size, name: str) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"{name} must be a positive integer (pixels); got {size!r}.")
    return int(size)


# ----------------------------------------------------------------------------------------------
# Step 1: the bright-field disk


def bf_disk_centre(pattern, threshold: float = 0.5) -> tuple[float, float]:
    """Find the centre of the bright-field disk of a diffraction pattern.

    The pattern is median-filtered (3 x 3, so that isolated hot pixels cannot set the maximum),
    thresholded at ``threshold`` times its maximum, and the largest connected bright region is
    taken as the disk. The centre of mass of the thresholded disk is returned, with the threshold
    softened into a linear ramp: a pixel weighs 0 below ``threshold / 2`` of the maximum, 1 above
    ``1.5 threshold``, in proportion in between (pixels within 2 of the disk only). Bright
    interior pixels all weigh 1, so interference fringes inside the disk do not pull the centre;
    edge pixels count in proportion to their brightness, which gives sub-pixel precision (about
    0.01-0.07 px on synthetic disks of radius 6-11 px, where a hard 0/1 mask is limited to about
    0.15 px by the pixel grid).

    Parameters
    ----------
    pattern : array_like, shape (ky, kx)
        One pattern, usually the mean pattern of a scan (``data.mean(axis=(0, 1))``).
    threshold : float
        Fraction of the maximum (0 < threshold < 1) above which a pixel belongs to the disk.

    Returns
    -------
    (cy, cx) : tuple of float
        Disk centre in pixels, (row, column) = (ky, kx), pixel centres at integers.

    Raises
    ------
    ValueError
        If the pattern is not 2D, contains NaN/inf, has no positive intensity, or ``threshold``
        is outside (0, 1).
    """
    p = np.asarray(pattern, dtype=np.float64)
    if p.ndim != 2 or p.size == 0:
        raise ValueError(
            f"bf_disk_centre needs one 2D pattern (ky, kx); got shape {p.shape}. Pass the mean "
            "pattern, e.g. data.mean(axis=(0, 1))."
        )
    _check_finite(p, "pattern")
    if not 0.0 < threshold < 1.0:
        raise ValueError(
            f"threshold must lie between 0 and 1 (a fraction of the maximum); got {threshold}."
        )
    smooth = ndimage.median_filter(p, size=3, mode="nearest")
    peak = smooth.max()
    if not peak > 0:
        raise ValueError(
            "The pattern has no positive intensity, so there is no bright-field disk to find. "
            "Check that the data are intensities (counts) and not background-subtracted."
        )
    mask = smooth >= threshold * peak
    labels, n_regions = ndimage.label(mask)
    if n_regions > 1:
        areas = ndimage.sum_labels(mask, labels, index=np.arange(1, n_regions + 1))
        mask = labels == 1 + int(np.argmax(areas))
    near_disk = ndimage.binary_dilation(mask, iterations=2)
    weight = np.clip((smooth / peak - threshold / 2) / threshold, 0.0, 1.0) * near_disk
    cy, cx = ndimage.center_of_mass(weight)
    return float(cy), float(cx)


# ----------------------------------------------------------------------------------------------
# Step 2: centred window (centring + cropping)


def _window_origin(centre_px, window: tuple[int, int], shape: tuple[int, int], subpixel: bool):
    """Raw-pixel coordinates (ky, kx) of window pixel (0, 0)."""
    (h, w), (H, W) = window, shape
    if centre_px is None:
        # A plain crop never interpolates: the window starts on a whole pixel, (H - h) // 2.
        return float((H - h) // 2), float((W - w) // 2)
    cy, cx = core.pixel_pair(centre_px, "centre_px")
    core.check_on_camera(
        (cy, cx), (H, W), label=f"centre_px ({cy:.4g}, {cx:.4g})", subject="the centre",
        noun="patterns, so the window would hold little or nothing of them",
        fix="Pass the disk centre in pixels, e.g. bf_disk_centre(patterns.mean(axis=0)), not in "
            "mrad.",
    )
    oy, ox = cy - (h - 1) / 2, cx - (w - 1) / 2
    if not subpixel:
        oy, ox = float(math.floor(oy + 0.5)), float(math.floor(ox + 0.5))
    return oy, ox


def _take_window(x: np.ndarray, origin, window: tuple[int, int]) -> np.ndarray:
    """Resample window pixel (j, i) <- raw (oy + j, ox + i) of each pattern of x (n, H, W).

    Whole-pixel origins take the pixels as they are (a view when possible); fractional ones
    interpolate bilinearly. Raw pixels outside
    the pattern count as 0. Bilinear weights keep every value non-negative and conserve the total
    away from the edges, with no ringing at the sharp disk edge (a Fourier shift rings). The
    interpolation is written out as four shifted slices (the same numbers as
    ``scipy.ndimage.shift(order=1)`` on the window) so that only the window is touched, not the
    whole pattern, and nothing is interpolated along the pattern axis.
    """
    n, H, W = x.shape
    h, w = window
    oy, ox = origin
    iy, ix = math.floor(oy), math.floor(ox)
    ty, tx = np.float32(oy - iy), np.float32(ox - ix)
    need_h, need_w = h + (ty > 0), w + (tx > 0)
    y0, y1 = max(iy, 0), min(iy + need_h, H)
    x0, x1 = max(ix, 0), min(ix + need_w, W)
    if (y0, y1, x0, x1) == (iy, iy + need_h, ix, ix + need_w):
        sub = x[:, y0:y1, x0:x1].astype(np.float32, copy=False)  # a view when float32 already
    else:  # window reaches past the pattern edge: zero outside
        sub = np.zeros((n, need_h, need_w), dtype=np.float32)
        if y1 > y0 and x1 > x0:
            sub[:, y0 - iy : y1 - iy, x0 - ix : x1 - ix] = x[:, y0:y1, x0:x1]
    if ty == 0 and tx == 0:
        return sub
    one = np.float32(1)
    if ty == 0:
        return (one - tx) * sub[:, :, :w] + tx * sub[:, :, 1:]
    if tx == 0:
        return (one - ty) * sub[:, :h, :] + ty * sub[:, 1:, :]
    top = (one - tx) * sub[:, :h, :w] + tx * sub[:, :h, 1:]
    bottom = (one - tx) * sub[:, 1:, :w] + tx * sub[:, 1:, 1:]
    return (one - ty) * top + ty * bottom


def _window_shape(size, shape: tuple[int, int]) -> tuple[int, int]:
    H, W = shape
    if size is None:
        return H, W
    size = _square_size(size, "crop")
    if size > min(H, W):
        raise ValueError(
            f"crop={size} is larger than the patterns ({H} x {W} pixels). Choose crop <= "
            f"{min(H, W)}, or leave crop=None to keep the whole pattern."
        )
    return size, size


def crop_centred(patterns, size: int | None = None, centre_px=None, *, subpixel: bool = True):
    """Cut a square window centred on a point of each pattern (centring and cropping in one).

    Parameters
    ----------
    patterns : array_like, shape (N, ky, kx) or (scan y, scan x, ky, kx)
        Diffraction patterns.
    size : int, optional
        Side of the window in pixels; None keeps the pattern size (the patterns are only moved).
    centre_px : (float, float), optional
        Point (ky, kx) in pixels that becomes the window centre ((size - 1) / 2, (size - 1) / 2),
        e.g. from :func:`bf_disk_centre`; it must lie on the patterns. None: a plain crop about
        the pattern centre, starting at pixel (H - size) // 2 (whole pixels, no interpolation).
    subpixel : bool
        True: a fractional centre is met exactly by bilinear interpolation. False: the window
        starts on the nearest whole pixel (no interpolation; the centre is then off by up to half
        a pixel per axis).

    Returns
    -------
    numpy.ndarray, float32
        Shape (N, size, size) or (scan y, scan x, size, size). Parts of the window outside the
        pattern are 0.

    Raises
    ------
    ValueError
        On wrong dimensionality, empty input, a window larger than the patterns, or a centre
        outside the patterns (0 <= ky <= H - 1, 0 <= kx <= W - 1).
    """
    x = _as_patterns(patterns)
    lead, (H, W) = x.shape[:-2], x.shape[-2:]
    window = _window_shape(size, (H, W))
    origin = _window_origin(centre_px, window, (H, W), subpixel)
    out = _take_window(x.reshape(-1, H, W), origin, window)
    if np.may_share_memory(out, x):
        out = out.copy()
    return out.reshape(lead + window)


# ----------------------------------------------------------------------------------------------
# Step 3: binning or resizing


def bin_patterns(patterns, factor: int, *, reduce: str = "sum") -> np.ndarray:
    """Bin k x k blocks of diffraction pixels.

    Parameters
    ----------
    patterns : array_like, shape (N, ky, kx) or (scan y, scan x, ky, kx)
        Diffraction patterns.
    factor : int
        Block side k; must divide both pattern sides.
    reduce : {'sum', 'mean'}
        'sum' keeps counts (Poisson statistics, total dose); 'mean' keeps intensity per pixel.

    Returns
    -------
    numpy.ndarray, float32
        Shape (..., ky // k, kx // k). The diffraction pixel grows by k (k_step_mrad * k).

    Raises
    ------
    ValueError
        If ``factor`` does not divide the pattern size (crop to a multiple first), or on bad
        input shape or ``reduce``.
    """
    x = _as_patterns(patterns)
    factor = _square_size(factor, "bin_factor")
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce must be 'sum' or 'mean'; got {reduce!r}.")
    lead, (H, W) = x.shape[:-2], x.shape[-2:]
    if H % factor or W % factor:
        raise ValueError(
            f"bin_factor={factor} does not divide the pattern size {H} x {W}. Crop to a multiple "
            f"first (crop={(min(H, W) // factor) * factor}) or resize instead (size=...)."
        )
    blocks = x.reshape(-1, H // factor, factor, W // factor, factor).astype(np.float32, copy=False)
    out = blocks.sum(axis=(2, 4)) if reduce == "sum" else blocks.mean(axis=(2, 4))
    return out.reshape(lead + (H // factor, W // factor))


@functools.lru_cache(maxsize=16)
def _resize_matrix(n_in: int, n_out: int, order: int) -> np.ndarray:
    """Matrix R (n_out, n_in) with R @ v == scipy.ndimage.zoom(v, n_out / n_in, ...) for 1D v."""
    eye = np.eye(n_in)
    columns = [
        ndimage.zoom(eye[i], n_out / n_in, order=order, mode="reflect", grid_mode=True)
        for i in range(n_in)
    ]
    matrix = np.stack(columns, axis=1)
    if matrix.shape != (n_out, n_in):  # pragma: no cover - guards scipy's rounding of the size
        raise RuntimeError(f"zoom gave {matrix.shape[0]} samples instead of {n_out}.")
    matrix = matrix.astype(np.float32)
    matrix.setflags(write=False)
    return matrix


def resize_patterns(patterns, size: int, *, order: int = 3, clip: bool = True) -> np.ndarray:
    """Resize square patterns to size x size by spline interpolation (order 3 = bicubic).

    Uses scipy's spline ``zoom`` with pixel edges aligned (``grid_mode=True``, like image
    resizing in skimage/OpenCV): output pixel J sits at input coordinate (J + 0.5) f - 0.5 with
    f = ky / size. Downsizing samples the spline without anti-aliasing, as the paper's bicubic
    resize did; :func:`bin_patterns` is the noise-averaging alternative. Because spline zoom is
    separable and linear, the 1D zoom is turned into a small matrix once and applied to all
    patterns as two matrix products (much faster than zooming pattern by pattern; each pattern is
    still treated alone, so batches and chunks do not change the result beyond float rounding).

    Parameters
    ----------
    patterns : array_like, shape (N, ky, kx) or (scan y, scan x, ky, kx)
        Square diffraction patterns (ky == kx).
    size : int
        Output side in pixels.
    order : int
        Spline order, 0-5 (3: bicubic, 1: bilinear).
    clip : bool
        Clip each output pattern to the range of its input pattern: cubic splines overshoot next
        to the sharp disk edge and could otherwise turn counts negative.

    Returns
    -------
    numpy.ndarray, float32
        Shape (..., size, size). The diffraction pixel grows by ky / size.

    Raises
    ------
    ValueError
        On non-square patterns, bad size/order, or bad input shape.
    """
    x = _as_patterns(patterns)
    size = _square_size(size, "size")
    if isinstance(order, bool) or order not in range(6):
        raise ValueError(f"order must be an integer spline order 0-5; got {order!r}.")
    lead, (H, W) = x.shape[:-2], x.shape[-2:]
    if H != W:
        raise ValueError(
            f"resize_patterns needs square patterns; got {H} x {W}. Crop to a square first "
            f"(crop_centred(patterns, {min(H, W)}))."
        )
    flat = x.reshape(-1, H, W).astype(np.float32, copy=False)
    n = len(flat)
    matrix = _resize_matrix(H, size, order)
    # Two plain 2D matrix products (one BLAS call each; numpy's stacked matmul is ~10x slower):
    # along kx for all rows of all patterns, then along ky for all columns of all patterns.
    along_kx = (flat.reshape(n * H, W) @ matrix.T).reshape(n, H, size)
    columns = along_kx.transpose(1, 0, 2).reshape(H, n * size)
    out = (matrix @ columns).reshape(size, n, size).transpose(1, 0, 2)
    if clip:
        lo = flat.min(axis=(1, 2), keepdims=True)
        hi = flat.max(axis=(1, 2), keepdims=True)
        out = np.clip(out, lo, hi)
    return out.reshape(lead + (size, size))


# ----------------------------------------------------------------------------------------------
# Step 4: intensity scaling


def _check_scale(scale) -> None:
    if scale is None or scale in ("log", "sqrt"):
        return
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise ValueError(f"scale must be None, 'log', 'sqrt' or a positive power; got {scale!r}.")
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"A power scale must be a positive finite number; got {scale!r}.")


def scale_intensity(patterns, scale) -> np.ndarray:
    """Compress the dynamic range of diffraction intensities.

    Parameters
    ----------
    patterns : array_like
        Non-negative intensities (counts), any shape.
    scale : {'log', 'sqrt'} or float
        'log': log(1 + I) (defined at zero counts, about I for weak pixels, log I for bright
        ones); 'sqrt': I ** 0.5 (the variance-stabilising transform of Poisson counts); a float
        p > 0: I ** p.

    Returns
    -------
    numpy.ndarray, float32

    Raises
    ------
    ValueError
        If ``scale`` is not one of the above, or the intensities are negative or not finite.
    """
    _check_scale(scale)
    x = np.asarray(patterns, dtype=np.float32)
    if scale is None:
        return x
    _check_finite(x, "patterns")
    if x.size and x.min() < 0:
        raise ValueError(
            f"{scale!r} scaling needs non-negative intensities; the minimum is {x.min():.4g}. "
            "Remove a dark/background level that went below zero, e.g. np.clip(data, 0, None), "
            "or use scale=None."
        )
    if scale == "log":
        return np.log1p(x)
    if scale == "sqrt":
        return np.sqrt(x)
    return np.power(x, np.float32(scale))


# ----------------------------------------------------------------------------------------------
# Steps 6-7: PCA and normalisation (on the reduced stack)


def pca_denoise(patterns, n_components: int, keep: int | None = None, *, seed: int = 0):
    """Denoise patterns by keeping their leading principal components.

    Each pattern is a vector of P = ky * kx pixels. The stack is centred on its mean pattern, its
    ``n_components`` leading principal components are estimated, and the patterns are rebuilt from
    the first ``keep`` of them plus the mean. The paper fitted 20 components and kept 13.

    The components come from ``torch.pca_lowrank`` (randomized SVD, Halko et al. 2011) with
    ``n_components + 10`` random directions and 4 power iterations, seeded. Why: its cost grows
    like N x P x components, so it stays well under a second at N = P = 4096 on two cores
    (measured 0.6 s), and it scales to unbinned patterns; a full SVD of that matrix took 40 s, an
    exact top-20 eigendecomposition of the P x P covariance 1.1 s but needs P^2 memory (17 GB for
    256 x 256 patterns). Its reconstruction error matched the exact one within 0.5 % in that test.
    torch is already a dependency of the package.

    Parameters
    ----------
    patterns : array_like, shape (N, ky, kx) or (scan y, scan x, ky, kx)
        Patterns; they need not be mean-subtracted (the mean is removed and added back).
    n_components : int
        Number of principal components to estimate (1 <= n_components <= min(N, P)).
    keep : int, optional
        Number of leading components used to rebuild the patterns (default: all estimated).
    seed : int
        Seed of the random projections (results are reproducible).

    Returns
    -------
    denoised : numpy.ndarray, float32
        Same shape as ``patterns``.
    explained_variance_ratio : numpy.ndarray, shape (n_components,)
        Fraction of the total variance carried by each estimated component.

    Raises
    ------
    ValueError
        On bad component counts, NaN/inf, or a stack without any variance.
    """
    x = _as_patterns(patterns)
    lead, (H, W) = x.shape[:-2], x.shape[-2:]
    X = x.reshape(-1, H * W).astype(np.float32)
    N, P = X.shape
    n_components = _square_size(n_components, "pca_components")
    keep = n_components if keep is None else _square_size(keep, "pca_keep")
    if n_components > min(N, P):
        raise ValueError(
            f"pca_components={n_components} exceeds min(patterns, pixels) = {min(N, P)}; "
            "choose fewer components."
        )
    if keep > n_components:
        raise ValueError(f"pca_keep={keep} must not exceed pca_components={n_components}.")
    _check_finite(X, "patterns")
    mean, Xc, U, S, V, ratio = _pca_fit(X, n_components, seed)
    rebuilt = (U[:, :keep] * S[:keep]) @ V[:, :keep].T
    denoised = rebuilt.numpy() + mean
    return denoised.astype(np.float32).reshape(lead + (H, W)), ratio


def _pca_fit(X: np.ndarray, n_components: int, seed: int):
    """Randomized PCA of X (N, P) float32: (mean (P,), centred X, U, S, V (torch), ratio)."""
    N, P = X.shape
    mean = X.mean(axis=0, dtype=np.float64).astype(np.float32)
    Xc = X - mean
    total = float(np.einsum("ij,ij->", Xc, Xc, dtype=np.float64))
    if total == 0.0:
        raise ValueError("All patterns are identical, so PCA has nothing to find; drop pca_*.")

    import torch  # core dependency; imported here to keep `import rrvae_nb.preprocess` light

    q = min(n_components + PCA_OVERSAMPLING, N, P)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        U, S, V = torch.pca_lowrank(
            torch.from_numpy(Xc), q=q, center=False, niter=PCA_POWER_ITERATIONS
        )
    ratio = (S[:n_components].double() ** 2).numpy() / total
    return mean, Xc, U, S, V, ratio


def pca_project(patterns, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Project patterns onto principal components: ``(x - mean) C^T C + mean`` per pattern.

    This is how :func:`prepare` applies PCA denoising, to the patterns it fitted the components
    on and, through :class:`rrvae_nb.recipe.Recipe`, to new patterns the same way.

    Parameters
    ----------
    patterns : array_like, shape (N, ky, kx)
        Patterns, with P = ky * kx pixels each.
    mean : numpy.ndarray, shape (P,)
        The mean pattern the components were fitted about (flattened, row-major).
    components : numpy.ndarray, shape (keep, P)
        Orthonormal principal directions (rows).

    Returns
    -------
    numpy.ndarray, float32, same shape as ``patterns``
    """
    x = np.asarray(patterns, dtype=np.float32)
    lead, (H, W) = x.shape[:-2], x.shape[-2:]
    mean = np.asarray(mean, dtype=np.float32).reshape(-1)
    components = np.asarray(components, dtype=np.float32)
    if mean.shape != (H * W,) or components.ndim != 2 or components.shape[1] != H * W:
        raise ValueError(
            f"PCA basis of shapes mean {mean.shape}, components {components.shape} does not fit "
            f"patterns of {H} x {W} = {H * W} pixels."
        )
    Xc = x.reshape(-1, H * W) - mean
    rebuilt = (Xc @ components.T) @ components + mean
    return rebuilt.astype(np.float32, copy=False).reshape(lead + (H, W))


def noise_floor_keep(ratio, factor: float = 1.5, tail: int = 10) -> tuple[int, float]:
    """How many principal components stand above the noise floor.

    Shot noise spreads evenly over all directions of pattern space, so the trailing components'
    shares of the variance level off. The *noise floor* is the median share of the last ``tail``
    components; the components whose share exceeds ``factor`` times it are kept.

    Parameters
    ----------
    ratio : array_like
        (n_components,) shares of the variance, from :func:`pca_denoise`.
    factor : float
        How far above the floor a kept component must be.
    tail : int
        How many trailing components set the floor (at most half of them).

    Returns
    -------
    keep : int
        Components above ``factor`` x floor (at least 1).
    floor : float
        The noise floor (a share of the variance).
    """
    ratio = np.asarray(ratio, dtype=float).ravel()
    if ratio.size < 2 or not np.isfinite(ratio).all():
        raise ValueError(
            f"ratio must hold at least two finite variance shares; got {ratio.size} value(s). "
            "Fit more components with pca_denoise."
        )
    tail = max(1, min(int(tail), ratio.size // 2))
    floor = float(np.median(ratio[-tail:]))
    return max(1, int(np.sum(ratio > factor * floor))), floor


def normalise(patterns, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Map a whole stack linearly to [0, 1] (one range for all patterns, as the paper did).

    Parameters
    ----------
    patterns : array_like
        Any shape.
    value_range : (lo, hi), optional
        Values sent to 0 and 1. Default: the minimum and maximum of the stack. Pass the range of
        another stack to normalise new data the same way (values may then leave [0, 1]).

    Returns
    -------
    numpy.ndarray, float32
        (patterns - lo) / (hi - lo).

    Raises
    ------
    ValueError
        On NaN/inf, empty input, or hi <= lo (a constant stack carries no information).
    """
    x = np.asarray(patterns, dtype=np.float32)
    if x.size == 0:
        raise ValueError("Cannot normalise an empty stack.")
    _check_finite(x, "patterns")
    lo, hi = (x.min(), x.max()) if value_range is None else value_range
    return _to_unit_range(x, float(lo), float(hi))


#: prepare()'s flag ``normalise`` shadows the function inside prepare(); it calls it by this name.
_normalise_stack = normalise


# ----------------------------------------------------------------------------------------------
# The pipeline


@dataclass(frozen=True)
class _SquareGrid:
    """Resampling of rectangular diffraction pixels onto square ones (the finer step).

    The axis with the coarser step gets ``n_out`` pixels of the finer step; output pixel j lies
    at raw (fractional) index ``j * step / coarse_step`` and is interpolated linearly between its
    two raw neighbours, times ``step / coarse_step`` so that each pattern's total is kept.
    """

    axis: int               # 1 = ky, 2 = kx (axes of an (n, ky, kx) stack)
    ratio: float            # coarse step / fine step (> 1)
    n_out: int

    @classmethod
    def of(cls, steps: tuple[float, float], shape: tuple[int, int]) -> _SquareGrid:
        coarse = 0 if steps[0] > steps[1] else 1
        ratio = max(steps) / min(steps)
        n_out = int(math.floor((shape[coarse] - 1) * ratio + 1e-9)) + 1
        return cls(axis=1 + coarse, ratio=ratio, n_out=n_out)

    def out_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        return (self.n_out, shape[1]) if self.axis == 1 else (shape[0], self.n_out)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Resample (n, H, W) raw patterns to float32 on square pixels."""
        pos = np.arange(self.n_out) / self.ratio
        n = x.shape[self.axis]
        i0 = np.minimum(np.floor(pos).astype(int), n - 1)
        i1 = np.minimum(i0 + 1, n - 1)
        t = (pos - i0).astype(np.float32)
        shape = [1, 1, 1]
        shape[self.axis] = self.n_out
        t = t.reshape(shape)
        x = np.asarray(x, dtype=np.float32)
        a, b = np.take(x, i0, axis=self.axis), np.take(x, i1, axis=self.axis)
        return ((1 - t) * a + t * b) * np.float32(1 / self.ratio)


@dataclass(frozen=True)
class _PatternSteps:
    """Per-pattern part of the pipeline (steps 1-4): picklable, so it can run on dask workers."""

    shape: tuple[int, int]
    origin: tuple[float, float]
    window: tuple[int, int]
    bin_factor: int | None
    bin_reduce: str
    size: int | None
    scale: object
    square: _SquareGrid | None = None

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Reduce raw patterns (n, H, W) to (n, h, w) float32."""
        if self.square is not None:
            x = self.square.apply(x)
        out = _take_window(x, self.origin, self.window)
        if self.bin_factor is not None and self.bin_factor > 1:
            out = bin_patterns(out, self.bin_factor, reduce=self.bin_reduce)
        elif self.size is not None:
            out = resize_patterns(out, self.size)
        if self.scale is not None:
            out = scale_intensity(out, self.scale)
        return out.astype(np.float32, copy=False)

    @property
    def out_shape(self) -> tuple[int, int]:
        if self.bin_factor is not None:
            return self.window[0] // self.bin_factor, self.window[1] // self.bin_factor
        if self.size is not None:
            return self.size, self.size
        return self.window

    @property
    def k_step_px(self) -> float:
        """Size of one output pixel in raw pixels."""
        if self.bin_factor is not None:
            return float(self.bin_factor)
        if self.size is not None:
            return self.window[0] / self.size
        return 1.0


def _reduce_block(block: np.ndarray, steps: _PatternSteps) -> np.ndarray:
    """Per-pattern kernel: a (..., H, W) block -> (..., h, w) float32.

    Bad counts (NaN, negative values under an intensity scale) give NaN patterns here instead of
    an error, so that :func:`_check_stats`, which sees the whole scan, names them.
    """
    lead = block.shape[:-2]
    try:
        with np.errstate(over="ignore"):  # values beyond float32 are refused by _check_stats
            out = steps.apply(block.reshape((-1,) + steps.shape))
    except ValueError:
        out = np.full((int(np.prod(lead, dtype=np.int64)),) + steps.out_shape, np.nan,
                      dtype=np.float32)
    return out.reshape(lead + steps.out_shape)


#: Per-pattern statistics of the raw counts, the columns of :func:`_pattern_stats`.
_STATS = ("nonfinite", "nonzero", "minimum", "beyond_float32", "largest_beyond")


def _pattern_stats(block: np.ndarray) -> np.ndarray:
    """(..., H, W) raw patterns -> (..., 5) float64 statistics, columns as in ``_STATS``."""
    lead = block.shape[:-2]
    flat = np.asarray(block).reshape((-1, block.shape[-2] * block.shape[-1]))
    out = np.zeros((len(flat), len(_STATS)))
    if len(flat):
        out[:, 0] = np.count_nonzero(~np.isfinite(flat), axis=1)
        out[:, 1] = flat.any(axis=1)
        out[:, 2] = flat.min(axis=1)
        if np.issubdtype(flat.dtype, np.floating) and flat.dtype.itemsize > 4:
            a = np.abs(flat)
            big = (a > FLOAT32_MAX) & np.isfinite(a)
            out[:, 3] = np.count_nonzero(big, axis=1)
            out[:, 4] = np.where(big, a, 0).max(axis=1)
    return out.reshape(lead + (len(_STATS),))


def _check_stats(stats: np.ndarray, scale) -> None:
    """Raise for bad raw counts, from the (..., 5) statistics of :func:`_pattern_stats`."""
    s = np.asarray(stats).reshape(-1, len(_STATS))
    _raise_on_bad_counts(int(s[:, 0].sum()), np.flatnonzero(s[:, 1] == 0), s[:, 2].min(),
                         scale, (int(s[:, 3].sum()), float(s[:, 4].max())))


def _beyond_float32(batch) -> tuple[int, float]:
    """Count and largest magnitude of finite values beyond the float32 range (wide floats)."""
    if not (np.issubdtype(batch.dtype, np.floating) and batch.dtype.itemsize > 4):
        return 0, 0.0
    a = np.abs(batch)
    big = (a > FLOAT32_MAX) & np.isfinite(a)
    count = int(np.count_nonzero(big))
    return count, (float(a[big].max()) if count else 0.0)


def _raise_on_bad_counts(nonfinite: int, zero_index: np.ndarray, minimum, scale,
                         beyond: tuple[int, float] = (0, 0.0)) -> None:
    if nonfinite:
        raise ValueError(
            f"The data contain {nonfinite} NaN or infinite values. Replace or mask them first "
            "(e.g. np.nan_to_num(data, nan=0.0, posinf=0.0)) or drop the affected scan positions."
        )
    if beyond[0]:
        raise ValueError(float32_range_message("data", *beyond))
    if len(zero_index):
        shown = ", ".join(str(int(i)) for i in zero_index[:5])
        more = " ..." if len(zero_index) > 5 else ""
        raise ValueError(
            f"{len(zero_index)} patterns are all zero (flat indices {shown}{more}): detector "
            "dropouts or a blanked beam. Replace them (e.g. by the mean of their neighbours) or "
            "crop the scan to exclude them."
        )
    if scale is not None and minimum < 0:
        raise ValueError(
            f"{scale!r} scaling needs non-negative counts; the data go down to "
            f"{float(minimum):.4g}. Clip (np.clip(data, 0, None)) or remove the dark level "
            "first, or use scale=None."
        )


def _unpack(data, calibration, scan_shape):
    """Return (array, calibration, scan_shape, from_signal) from a signal or an array."""
    array, calibration = core.as_data(data, calibration)
    from_signal = hasattr(data, "axes_manager")
    if array.ndim == 4:
        grid = tuple(int(n) for n in array.shape[:2])
        if scan_shape is not None and not from_signal and tuple(scan_shape) != grid:
            raise ValueError(f"scan_shape={scan_shape} contradicts the data's scan grid {grid}.")
        return array, calibration, grid, from_signal
    if array.ndim == 3:
        if scan_shape is not None:
            scan_shape = tuple(int(n) for n in scan_shape)
            if len(scan_shape) != 2 or scan_shape[0] * scan_shape[1] != array.shape[0]:
                raise ValueError(
                    f"scan_shape={scan_shape} does not hold the {array.shape[0]} patterns; give "
                    "(scan y, scan x) with scan y * scan x == N."
                )
        return array, calibration, scan_shape, False
    raise ValueError(
        f"Expected 4D-STEM data of shape (scan y, scan x, ky, kx) or patterns (N, ky, kx); got "
        f"shape {array.shape}. Reshape your data to one of these layouts."
    )


@dataclass(eq=False)
class Prepared:
    """Preprocessed patterns and what is needed to map results back onto the scan.

    Attributes
    ----------
    patterns : numpy.ndarray, float32, shape (N, H, W)
        The preprocessed patterns, N = scan y * scan x in row-major order (scan x fastest).
    scan_shape : (int, int) or None
        (scan y, scan x); None for a bare stack given without ``scan_shape``.
    calibration : Calibration or None
        Calibration of the *reduced* patterns: ``k_step_mrad`` grows with binning/resizing and
        ``k_offset_mrad`` is the angle of reduced pixel (0, 0); scan axes as in the input. None
        for numpy input given without a calibration (everything is then in pixels).
    mean_pattern : numpy.ndarray, float32, shape (H, W)
        Mean of the reduced (and intensity-scaled) patterns; subtracted when
        ``steps['subtract_mean']``.
    centre_px : (float, float) or None
        BF disk centre (ky, kx) in raw pixels, found in the raw mean pattern; None without
        centring.
    k_origin_px : (float, float)
        Raw-pixel coordinates (ky, kx) of the centre of reduced pixel (0, 0).
    k_step_px : float
        Side of one reduced pixel in raw pixels (the bin factor, or ky / size after a resize).
        Reduced pixel (j, i) is centred on raw pixel k_origin_px + (j, i) * k_step_px.
    steps : dict
        Record of the parameters and of numbers found on the way (value range, PCA variance).
    pca_basis : (numpy.ndarray, numpy.ndarray) or None
        With PCA denoising: the mean (P,) and the kept components (keep, P), P = H * W, that
        every pattern was projected with (:func:`pca_project`); kept so that new patterns can be
        treated the same way (:class:`rrvae_nb.recipe.Recipe`).
    """

    patterns: np.ndarray
    scan_shape: tuple[int, int] | None
    calibration: Calibration | None
    mean_pattern: np.ndarray
    centre_px: tuple[float, float] | None
    k_origin_px: tuple[float, float]
    k_step_px: float
    steps: dict = field(default_factory=dict)
    pca_basis: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def _checked(self, values) -> np.ndarray:
        v = np.asarray(values)
        if v.ndim == 0 or v.shape[0] != len(self.patterns):
            raise ValueError(
                f"Expected one value (or row) per pattern, first axis {len(self.patterns)}; got "
                f"shape {v.shape}."
            )
        if self.scan_shape is None:
            raise ValueError(
                "These patterns came without a scan grid. Pass scan_shape=(scan y, scan x) to "
                "prepare(), or give 4D data (scan y, scan x, ky, kx)."
            )
        return v

    def to_map(self, values) -> np.ndarray:
        """Reshape per-pattern values (N,) or (N, C, ...) to (scan y, scan x[, C, ...]).

        Raises
        ------
        ValueError
            If the first axis is not N or the scan grid is unknown.
        """
        v = self._checked(values)
        return v.reshape(tuple(self.scan_shape) + v.shape[1:])

    def to_signal(self, values, title: str = ""):
        """Wrap per-pattern values as a calibrated hyperspy signal on the scan grid.

        Parameters
        ----------
        values : array_like
            (N,): a map, returned as ``Signal2D`` (scan y, scan x) with navigation dimension 0;
            (N, C): C values per position (e.g. latents), ``Signal1D`` with navigation (y, x)
            and a signal axis ``channel``; (N, H, W) with (H, W) the pattern shape (e.g.
            reconstructions): a 4D ``Signal2D`` with the reduced diffraction calibration (mrad).
        title : str
            Stored in ``metadata.General.title``.

        Raises
        ------
        ValueError
            If the shape fits none of the above, or there is no calibration or scan grid.
        """
        v = self._checked(values)
        cal = self.calibration
        if cal is None:
            raise ValueError(
                "No calibration: pass calibration=Calibration(...) to prepare() (or a calibrated "
                "signal), or use to_map() for arrays in pixels."
            )
        hs = require_hyperspy()
        ny, nx = self.scan_shape

        def scan_axis(i, n, navigate):
            return dict(name="yx"[i], size=n, scale=cal.scan_steps_nm[i],
                        offset=cal.scan_offset_nm[i], units="nm", navigate=navigate)

        if v.ndim == 1:
            axes = [scan_axis(0, ny, False), scan_axis(1, nx, False)]
            sig = hs.signals.Signal2D(self.to_map(v), axes=axes)
        elif v.ndim == 2:
            axes = [scan_axis(0, ny, True), scan_axis(1, nx, True),
                    dict(name="channel", size=v.shape[1], scale=1.0, offset=0.0, navigate=False)]
            sig = hs.signals.Signal1D(self.to_map(v), axes=axes)
        elif v.ndim == 3 and v.shape[1:] == self.patterns.shape[1:]:
            sig = make_signal(self.to_map(v), cal)
        else:
            raise ValueError(
                f"values of shape {v.shape} fit neither a map (N,), per-position vectors (N, C) "
                f"nor patterns (N, {self.patterns.shape[1]}, {self.patterns.shape[2]})."
            )
        sig.metadata.General.title = title
        return sig


def prepare(
    data,
    *,
    centre: bool = True,
    threshold: float = 0.5,
    subpixel: bool = True,
    crop: int | None = None,
    bin_factor: int | None = None,
    bin_reduce: str = "sum",
    size: int | None = None,
    scale=None,
    subtract_mean: bool = True,
    pca_components: int | None = None,
    pca_keep: int | None = None,
    normalise: bool = True,
    calibration: Calibration | None = None,
    scan_shape: tuple[int, int] | None = None,
    seed: int = 0,
    progress: bool = True,
    compute: bool = True,
    square_pixels: str = "refuse",
) -> Prepared:
    """Preprocess 4D-STEM data into (N, H, W) float32 patterns for the rrVAE.

    Steps, in order (see the module docstring): centre on the BF disk, crop, bin or resize,
    scale intensities, subtract the mean pattern, PCA-denoise, normalise to [0, 1]. The paper's
    recipes: simulated data ``prepare(sig, crop=78)``; experimental data
    ``prepare(sig, centre=False, size=64, pca_components=20, pca_keep=13)``.

    Parameters
    ----------
    data : hyperspy Signal2D (eager or lazy), numpy or dask array
        A 4D-STEM signal (scan y, scan x | ky, kx) with calibrated axes, an array
        (scan y, scan x, ky, kx), or a stack (N, ky, kx). Lazy signals and dask arrays are read
        chunk by chunk (chunks along the scan axes are kept; the pattern axes are merged).
    centre : bool
        Move the BF disk centre of the mean pattern to the centre of the output window (one shift
        for all patterns). Costs one extra pass over the raw data.
    threshold : float
        Fraction of the mean pattern's maximum that outlines the BF disk (see
        :func:`bf_disk_centre`).
    subpixel : bool
        Centre exactly by bilinear interpolation (True) or to the nearest whole pixel without
        interpolation (False). See :func:`crop_centred`.
    crop : int, optional
        Side of the square window kept, in raw pixels. Required for non-square patterns. Where
        the centred window reaches past the pattern edge, the missing pixels are 0.
    bin_factor : int, optional
        Bin k x k blocks; must divide the window side (choose ``crop`` accordingly).
    bin_reduce : {'sum', 'mean'}
        How blocks are binned.
    size : int, optional
        Resize the window to size x size (bicubic); exclusive with ``bin_factor``.
    scale : None, 'log', 'sqrt' or float
        Intensity scaling (see :func:`scale_intensity`); needs non-negative data.
    subtract_mean : bool
        Subtract the mean reduced pattern.
    pca_components, pca_keep : int, optional
        PCA denoising: estimate ``pca_components`` components, rebuild from the first
        ``pca_keep`` (default: all). None: no PCA.
    normalise : bool
        Map the whole stack to [0, 1].
    calibration : Calibration, optional
        For numpy/dask input only: the raw data's calibration. Signals carry their own.
    scan_shape : (int, int), optional
        For (N, ky, kx) input: the scan grid, needed by :meth:`Prepared.to_map`.
    seed : int
        Seed of the randomized PCA.
    progress : bool
        Show tqdm progress bars for the passes over the raw data.
    compute : bool
        For lazy input only: ``False`` keeps the preprocessed patterns a dask array (N, H, W),
        so that data larger than memory stay on disk; the mean pattern and the normalisation
        range are computed in streaming passes. PCA needs the patterns in memory and is refused
        then (denoise a sample instead). Use :mod:`rrvae_nb.stream` to train and encode.
    square_pixels : {"refuse", "resample"}
        What to do with rectangular diffraction pixels (a calibration whose ky and kx steps
        differ): ``"refuse"`` (default) raises a ValueError that names this option;
        ``"resample"`` first interpolates every raw pattern linearly onto square pixels of the
        finer step (the coarser axis gets more pixels; values are scaled by fine / coarse step
        so that each pattern's total is kept; steps that differ by more than a factor of 4 are
        refused as a wrong calibration). Centring, cropping, ``centre_px``,
        ``k_origin_px`` and ``k_step_px`` then refer to the resampled pixels; the calibration
        is square. Ignored for square pixels and for arrays without a calibration.

    Returns
    -------
    Prepared

    Raises
    ------
    ValueError
        On wrong dimensionality, empty input, rectangular diffraction pixels without
        ``square_pixels="resample"``, values beyond the float32 range (|x| > 3.4e38),
        non-square patterns without ``crop``, a crop
        larger than the patterns, a bin factor that does not divide the window, both
        ``bin_factor`` and ``size``, NaN/inf values, all-zero patterns, negative counts with
        ``scale``, an uncalibrated signal, or bad PCA component counts.
    """
    options = dict(locals())  # prepare's keywords, checked into a plan
    plan = _plan(options.pop("data"), **options)
    reduced, stats, centre_px, steps = _reduce(plan)
    return _finish(plan, reduced, stats, centre_px, steps)


@dataclass(frozen=True, eq=False)
class _Plan:
    """What :func:`prepare` will do, checked before any pass over the data."""

    array: object                   # numpy or dask (..., H, W) raw data
    calibration: Calibration | None  # on square pixels
    grid: tuple[int, int] | None    # scan shape
    steps: _PatternSteps            # per-pattern steps (origin set by _reduce)
    record: dict                    # the parameters, for Prepared.steps
    centre: bool
    threshold: float
    subpixel: bool
    square_shape: tuple[int, int]   # pattern shape on square pixels
    scale: object
    subtract_mean: bool
    pca_components: int | None
    pca_keep: int | None
    normalise: bool
    seed: int
    progress: bool
    compute: bool

    @property
    def n_patterns(self) -> int:
        return int(np.prod(self.array.shape[:-2], dtype=np.int64))


def _plan(data, *, centre, threshold, subpixel, crop, bin_factor, bin_reduce, size, scale,
          subtract_mean, pca_components, pca_keep, normalise, calibration, scan_shape, seed,
          progress, compute, square_pixels) -> _Plan:
    """Step 1 of :func:`prepare`: check the data and every setting, raise before any pass."""
    array, cal, grid, from_signal = _unpack(data, calibration, scan_shape)
    _check_dtype(array.dtype, "data")
    if array.size == 0:
        raise ValueError(f"The data are empty (shape {array.shape}); nothing to preprocess.")
    H, W = (int(n) for n in array.shape[-2:])
    square_from = None if cal is None else cal.k_steps_mrad
    square, cal = _square_pixels(square_pixels, cal, (H, W))
    Hs, Ws = (H, W) if square is None else square.out_shape((H, W))  # on square pixels
    if Hs != Ws and crop is None:
        raise ValueError(
            f"The patterns are not square ({Hs} x {Ws} pixels); the rotation-invariant model "
            f"needs square patterns. Pass crop=<side> (at most {min(Hs, Ws)}) to cut a square "
            "window."
        )
    window = _window_shape(crop, (Hs, Ws))
    bin_factor, size = _check_reduction(bin_factor, bin_reduce, size, window)
    _check_scale(scale)
    steps = _PatternSteps(shape=(H, W), origin=(0.0, 0.0), window=window, bin_factor=bin_factor,
                          bin_reduce=bin_reduce, size=size, scale=scale, square=square)
    n_patterns = int(np.prod(array.shape[:-2], dtype=np.int64))
    pca_components = _check_pca(pca_components, pca_keep, n_patterns, steps.out_shape)
    lazy = core.is_dask(array)
    if lazy and not compute and pca_components is not None:
        raise ValueError(
            "PCA needs the patterns in memory: use compute=True, or denoise a sample "
            "(rrvae_nb.stream.sample_patterns + pca_denoise)."
        )
    record = dict(
        input_shape=tuple(int(n) for n in array.shape), input_lazy=lazy,
        input_signal=from_signal, centre=centre, threshold=threshold, subpixel=subpixel,
        window_origin_px=None, crop=crop, bin_factor=bin_factor,
        bin_reduce=bin_reduce if bin_factor is not None else None, size=size, scale=scale,
        subtract_mean=subtract_mean, pca_components=pca_components, pca_keep=pca_keep,
        normalise=normalise,
    )
    if square is not None:
        record["square_pixels"] = dict(
            resampled=True, from_k_steps_mrad=tuple(square_from), k_step_mrad=cal.k_step_mrad,
            shape=(Hs, Ws),
        )
    return _Plan(
        array=array, calibration=cal, grid=grid, steps=steps, record=record, centre=centre,
        threshold=threshold, subpixel=subpixel, square_shape=(Hs, Ws), scale=scale,
        subtract_mean=subtract_mean, pca_components=pca_components, pca_keep=pca_keep,
        normalise=normalise, seed=seed, progress=progress, compute=compute or not lazy,
    )


def _check_reduction(bin_factor, bin_reduce, size, window):
    """Checked (bin_factor, size): binning that divides the window, or a resize, not both."""
    if bin_factor is not None and size is not None:
        raise ValueError("Give either bin_factor= or size= (resize), not both.")
    if bin_factor is not None:
        bin_factor = _square_size(bin_factor, "bin_factor")
        if bin_reduce not in ("sum", "mean"):
            raise ValueError(f"bin_reduce must be 'sum' or 'mean'; got {bin_reduce!r}.")
        if window[0] % bin_factor:
            raise ValueError(
                f"bin_factor={bin_factor} does not divide the {window[0]}-pixel window. Choose "
                f"crop as a multiple of {bin_factor} (e.g. "
                f"crop={(window[0] // bin_factor) * bin_factor}) or resize with size= instead."
            )
    if size is not None:
        size = _square_size(size, "size")
    return bin_factor, size


def _check_pca(pca_components, pca_keep, n_patterns, out_shape):
    """Checked number of PCA components (None: no PCA)."""
    if pca_keep is not None and pca_components is None:
        raise ValueError("pca_keep needs pca_components (the number of components to estimate).")
    if pca_components is None:
        return None
    pca_components = _square_size(pca_components, "pca_components")
    h, w = out_shape
    if pca_components > min(n_patterns, h * w):
        raise ValueError(
            f"pca_components={pca_components} exceeds min(patterns, pixels per reduced "
            f"pattern) = {min(n_patterns, h * w)}; choose fewer components."
        )
    if pca_keep is not None and _square_size(pca_keep, "pca_keep") > pca_components:
        raise ValueError(f"pca_keep={pca_keep} must not exceed pca_components={pca_components}.")
    return pca_components


def _reduce(plan: _Plan):
    """Step 2 of :func:`prepare`: the passes over the raw data (numpy or dask, one code path).

    Pass 1 (only when centring) reads the mean raw pattern and finds the BF disk in it; pass 2
    reduces every pattern (centre, crop, bin/resize, scale) and gathers the statistics of the
    raw counts that :func:`_check_stats` checks. Lazy data stay lazy when ``compute=False``.

    Returns (reduced (..., h, w), statistics (..., 5), centre_px, the steps with their origin).
    """
    centre_px = _disk_centre(plan) if plan.centre else None
    origin = _window_origin(centre_px, plan.steps.window, plan.square_shape, plan.subpixel)
    steps = replace(plan.steps, origin=origin)
    reduced, stats = core.map_patterns(
        plan.array,
        core.PerPattern(_reduce_block, steps.out_shape, np.float32, dict(steps=steps)),
        core.PerPattern(_pattern_stats, (len(_STATS),), np.float64),
        desc="reducing patterns", progress=plan.progress, compute_result=plan.compute,
    )
    return reduced, stats, centre_px, steps


def _disk_centre(plan: _Plan) -> tuple[float, float]:
    """BF disk centre (ky, kx) of the mean raw pattern, on square pixels."""
    mean = core.mean_pattern(plan.array, progress=plan.progress)
    square = plan.steps.square
    try:
        if square is not None:
            mean = square.apply(mean[None].astype(np.float32))[0]
        return bf_disk_centre(mean, plan.threshold)
    except ValueError:  # bad counts spoil the mean: name them rather than the mean
        (stats,) = core.map_patterns(
            plan.array, core.PerPattern(_pattern_stats, (len(_STATS),), np.float64),
            desc="checking the data", progress=plan.progress,
        )
        _check_stats(stats, plan.scale)
        raise


def _finish(plan: _Plan, reduced, stats, centre_px, steps: _PatternSteps) -> Prepared:
    """Step 3 of :func:`prepare`: check the counts; mean, PCA and normalisation of the stack.

    numpy and dask stacks take the same steps; a lazy stack (``compute=False``) costs two
    streaming passes (statistics with the mean pattern, then the value range).
    """
    h, w = steps.out_shape
    reduced = reduced.reshape(plan.n_patterns, h, w)
    record = dict(plan.record, window_origin_px=steps.origin)
    if not plan.compute:
        record["computed"] = False
    stats, mean = core.compute(stats, reduced.mean(axis=0, dtype=np.float64),
                               desc="mean pattern", progress=plan.progress)
    _check_stats(stats, plan.scale)
    mean_pattern = np.asarray(mean).astype(np.float32)
    out = reduced - mean_pattern if plan.subtract_mean else reduced
    pca_basis = None
    if plan.pca_components is not None:
        out, ratio, pca_basis = _pca_step(out, plan.pca_components, plan.pca_keep, plan.seed)
        record["pca_explained_variance_ratio"] = [float(r) for r in ratio]
        record["seed"] = plan.seed
    if plan.normalise:
        lo, hi = (float(v) for v in core.compute(out.min(), out.max(), desc="value range",
                                                 progress=plan.progress))
        out = _to_unit_range(out, lo, hi)
        record["value_range"] = (lo, hi)
    if not core.is_dask(out):
        out = np.ascontiguousarray(out, dtype=np.float32)
    step_px, k_origin, cal_out = _reduced_calibration(steps, plan.calibration)
    return Prepared(patterns=out, scan_shape=plan.grid, calibration=cal_out,
                    mean_pattern=mean_pattern, centre_px=centre_px, k_origin_px=k_origin,
                    k_step_px=step_px, steps=record, pca_basis=pca_basis)


def _pca_step(out: np.ndarray, n_components: int, keep: int | None, seed: int):
    """prepare's PCA: fit (as :func:`pca_denoise`), then project every pattern onto the kept
    components with :func:`pca_project`, the operation a new pattern gets from the recipe
    (``rrvae_nb.recipe``). (pca_denoise's U S V^T rebuild differs from this projection by the
    randomized SVD's small error, so new patterns could not be treated exactly alike.)"""
    x = np.asarray(out, dtype=np.float32)
    n, h, w = x.shape
    _check_finite(x, "patterns")
    keep = n_components if keep is None else keep
    mean, _, _, _, V, ratio = _pca_fit(x.reshape(n, h * w), n_components, seed)
    components = np.ascontiguousarray(V[:, :keep].T.numpy(), dtype=np.float32)
    return pca_project(x, mean, components), ratio, (mean, components)


def _to_unit_range(x, lo: float, hi: float):
    """(x - lo) / (hi - lo) in float32, for numpy and dask stacks alike (as :func:`normalise`)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(
            f"The preprocessed patterns contain NaN or infinite values (range [{lo}, {hi}]), "
            "e.g. binned sums beyond the float32 range. Scale the data down first."
        )
    lo32, hi32 = np.float32(lo), np.float32(hi)
    if not hi32 > lo32:
        raise ValueError(
            f"Cannot normalise: the value range [{lo32:.4g}, {hi32:.4g}] is empty (all values "
            "equal). Check that the patterns differ; with subtract_mean=True a stack of "
            "identical patterns becomes all zeros."
        )
    return (x - lo32) / (hi32 - lo32)


SQUARE_PIXEL_CHOICES = ("refuse", "resample")
#: Largest ratio of the two diffraction steps that ``square_pixels="resample"`` accepts.
MAX_RESAMPLE_RATIO = 4.0


def _square_pixels(choice, cal, shape):
    """(_SquareGrid or None, calibration on square pixels) for prepare's ``square_pixels``."""
    if choice not in SQUARE_PIXEL_CHOICES:
        raise ValueError(
            f"square_pixels must be one of {SQUARE_PIXEL_CHOICES}; got {choice!r}."
        )
    if cal is None or cal.square_k:
        return None, cal
    ky, kx = cal.k_steps_mrad
    if choice == "refuse":
        raise ValueError(
            f"The diffraction pixels are not square ({ky:.6g} mrad along ky, {kx:.6g} mrad "
            "along kx), but the rotation-invariant model needs square pixels. Pass "
            "square_pixels='resample' to prepare() to interpolate the patterns onto square "
            f"pixels of {min(ky, kx):.6g} mrad, or fix the calibration if it is wrong."
        )
    ratio = max(ky, kx) / min(ky, kx)
    if ratio > MAX_RESAMPLE_RATIO:
        raise ValueError(
            f"square_pixels='resample': the diffraction steps differ by a factor of {ratio:.3g} "
            f"({ky:.6g} mrad along ky, {kx:.6g} mrad along kx), more than the "
            f"{MAX_RESAMPLE_RATIO:g} of any real camera binning; resampling would stretch the "
            "patterns that much. Check the calibration (the k_step_mrad of the file or signal)."
        )
    square = _SquareGrid.of((ky, kx), shape)
    fine = min(ky, kx)
    return square, replace(cal, k_steps_mrad=(fine, fine))


def _reduced_calibration(steps: _PatternSteps, cal):
    """Pixel step, first-pixel position (raw px) and Calibration of the reduced patterns."""
    step_px, origin = steps.k_step_px, steps.origin
    k_origin = (origin[0] + (step_px - 1) / 2, origin[1] + (step_px - 1) / 2)
    cal_out = None
    if cal is not None:
        sy, sx = cal.k_steps_mrad  # square here: prepare resampled or refused other pixels
        cal_out = replace(
            cal,
            k_steps_mrad=(sy * step_px, sx * step_px),
            k_offset_mrad=(cal.k_offset_mrad[0] + k_origin[0] * sy,
                           cal.k_offset_mrad[1] + k_origin[1] * sx),
        )
    return step_px, k_origin, cal_out
