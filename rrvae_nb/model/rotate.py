"""Pose transforms of diffraction patterns: the one definition of "rotate by an angle".

Convention (used by the model, the tests and every chapter)
-----------------------------------------------------------
Patterns are arrays (..., H, W) = (..., ky, kx) shown with ``matplotlib.pyplot.imshow`` in its
default ``origin='upper'`` (row 0 at the top). A **positive angle turns the displayed image
counter-clockwise**: a bright spot to the right of the centre moves to the top for +pi/2,
exactly like ``numpy.rot90(pattern)``. Angles are in radians.

Internally every pixel has normalised coordinates ``(x, y)`` in [-1, 1] with ``x`` to the right
(along kx) and ``y`` **up** on screen (against ky), so that the rotation matrix has its textbook
form.
An image rendered at pose ``(angle, t)`` is the canonical image sampled at
``R(-angle) @ (p - t)``. Translations ``t`` are in the same normalised units (1 = half the pattern
width); :func:`translation_to_pixels` converts them to (dy, dx) pixels along (ky, kx).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "coordinate_grid",
    "pose_coordinates",
    "sample_at_pose",
    "rotate_patterns",
    "wrap_angle",
    "circ_diff",
    "to_polar",
    "translation_to_pixels",
]


def coordinate_grid(size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised pixel-centre coordinates of a square ``size`` x ``size`` pattern.

    Returns
    -------
    torch.Tensor
        Shape (size, size, 2) with ``[..., 0] = x`` (right, along kx) and ``[..., 1] = y`` (up,
        against ky), both from -1 to 1 at the outermost pixel centres.
    """
    lin = torch.linspace(-1.0, 1.0, size, device=device, dtype=dtype)
    y = -lin[:, None].expand(size, size)  # row 0 is at the top: y = +1
    x = lin[None, :].expand(size, size)
    return torch.stack([x, y], dim=-1)


def pose_coordinates(
    grid: torch.Tensor, angle: torch.Tensor, translation: torch.Tensor | None = None
) -> torch.Tensor:
    """Canonical-frame coordinates ``R(-angle) (p - t)`` of every pixel for a batch of poses.

    Parameters
    ----------
    grid : torch.Tensor
        (H, W, 2) pixel coordinates ``(x, y)`` from :func:`coordinate_grid`.
    angle : torch.Tensor
        (B,) rotation angles in radians (positive = counter-clockwise on screen).
    translation : torch.Tensor, optional
        (B, 2) translations ``(tx, ty)`` in normalised units (x right, y up).

    Returns
    -------
    torch.Tensor
        (B, H, W, 2) coordinates ``(x, y)`` at which the canonical image is sampled.
    """
    p = grid.unsqueeze(0)  # (1, H, W, 2)
    if translation is not None:
        p = p - translation[:, None, None, :]
    c = torch.cos(angle)[:, None, None]
    s = torch.sin(angle)[:, None, None]
    x, y = p[..., 0], p[..., 1]
    # R(-a) = [[cos a, sin a], [-sin a, cos a]]
    return torch.stack([c * x + s * y, -s * x + c * y], dim=-1)


def sample_at_pose(
    images: torch.Tensor,
    angle: torch.Tensor,
    translation: torch.Tensor | None = None,
    mode: str = "bilinear",
) -> torch.Tensor:
    """Render canonical images at the given poses by differentiable interpolation.

    Parameters
    ----------
    images : torch.Tensor
        (B, H, W) canonical images (pose 0), square.
    angle : torch.Tensor
        (B,) angles in radians, positive = counter-clockwise on screen.
    translation : torch.Tensor, optional
        (B, 2) normalised translations ``(tx, ty)``.
    mode : {"bilinear", "bicubic", "nearest"}
        Interpolation of :func:`torch.nn.functional.grid_sample`. Pixels that come from outside
        the canonical image take the value of its nearest border pixel.

    Returns
    -------
    torch.Tensor
        (B, H, W) rendered images.
    """
    # The pose as one affine map in grid_sample's coordinates (x right, y DOWN, [-1, 1] at the
    # outermost pixel centres with align_corners=True). With p = (gx, -gy) and t = (tx, ty) (y
    # up), R(-a)(p - t) turned back to (x, y down) is theta @ (gx, gy, 1) with theta below.
    # affine_grid writes the (B, H, W, 2) grid in one pass: building it from pose_coordinates
    # took several full-size temporaries per batch (a third of the default model's training
    # step, and most of its memory).
    c, s = torch.cos(angle), torch.sin(angle)
    if translation is None:
        shift_x = shift_y = torch.zeros_like(c)
    else:
        tx, ty = translation[:, 0], translation[:, 1]
        shift_x, shift_y = -(c * tx + s * ty), c * ty - s * tx
    theta = torch.stack(
        [torch.stack([c, -s, shift_x], dim=-1), torch.stack([s, c, shift_y], dim=-1)], dim=-2
    ).to(images.dtype)
    b, h, w = images.shape
    gs = F.affine_grid(theta, [b, 1, h, w], align_corners=True)
    out = F.grid_sample(
        images.unsqueeze(1), gs, mode=mode, padding_mode="border", align_corners=True
    )
    return out.squeeze(1)


def rotate_patterns(patterns, angle, order: int = 3):
    """Rotate patterns about their centre (counter-clockwise on screen for a positive angle).

    Parameters
    ----------
    patterns : numpy.ndarray or torch.Tensor
        (N, H, W) or (H, W) square patterns (ky, kx).
    angle : float or array-like
        Angle(s) in radians: a scalar or one per pattern, shape (N,).
    order : {0, 1, 3}
        Interpolation order: nearest, bilinear or bicubic.

    Returns
    -------
    Same type as ``patterns``, same shape. Areas rotated in from outside the frame take the
    border value. No gradient is kept: for differentiable rendering use
    :func:`sample_at_pose`.
    """
    mode = {0: "nearest", 1: "bilinear", 3: "bicubic"}.get(order)
    if mode is None:
        raise ValueError(f"order must be 0, 1 or 3; got {order!r}.")
    is_numpy = not isinstance(patterns, torch.Tensor)
    x = torch.as_tensor(np.asarray(patterns) if is_numpy else patterns)
    dtype_in = x.dtype
    x = x.to(torch.float64 if dtype_in == torch.float64 else torch.float32)
    single = x.ndim == 2
    if single:
        x = x[None]
    if x.ndim != 3 or x.shape[-1] != x.shape[-2]:
        raise ValueError(
            f"Expected square patterns (N, H, W) or (H, W); got shape {tuple(x.shape)}."
        )
    a = torch.as_tensor(np.asarray(angle, dtype=np.float64), dtype=x.dtype, device=x.device)
    a = a.expand(x.shape[0]) if a.ndim == 0 else a
    if a.shape != (x.shape[0],):
        raise ValueError(f"Need one angle or one per pattern ({x.shape[0]}); got {tuple(a.shape)}.")
    # in chunks: the sampling grid and the interpolation's temporaries are several times the
    # size of the patterns they rotate
    with torch.no_grad():
        out = torch.cat([sample_at_pose(xc, ac, mode=mode)
                         for xc, ac in zip(x.split(256), a.split(256), strict=True)])
    if single:
        out = out[0]
    if is_numpy:
        return out.numpy().astype(np.asarray(patterns).dtype, copy=False)
    return out.to(dtype_in)


def wrap_angle(angle, symmetry: int = 1):
    """Wrap angles (rad) into [-pi/n, pi/n) for n-fold symmetry (n = ``symmetry``)."""
    period = 2 * np.pi / symmetry
    if isinstance(angle, torch.Tensor):
        return torch.remainder(angle + period / 2, period) - period / 2
    return np.mod(np.asarray(angle) + period / 2, period) - period / 2


def circ_diff(a, b):
    """Difference ``a - b`` of angles on the circle, wrapped into [-pi, pi).

    Parameters
    ----------
    a, b : array_like
        Angles in radians, broadcastable against each other.

    Returns
    -------
    numpy.ndarray
        ``a - b`` in radians, in [-pi, pi): 350 deg - 10 deg gives -20 deg, not 340 deg.
    """
    return wrap_angle(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))


def to_polar(image, n_r: int = 16, n_phi: int = 128) -> np.ndarray:
    """Resample a square image on a polar grid about its centre (bilinear interpolation).

    Parameters
    ----------
    image : array_like
        (H, W) = (ky, kx) square image, shown with row 0 at the top (the module's convention).
    n_r : int
        Number of radii, spaced evenly from 1 px to ``(W - 1) / 2`` px.
    n_phi : int
        Number of azimuths, ``2 pi k / n_phi`` for k = 0 .. n_phi - 1, counter-clockwise on
        screen from +kx (to the right).

    Returns
    -------
    numpy.ndarray
        (n_r, n_phi) = (radius, azimuth) samples. Turning the image by ``alpha`` (as
        :func:`rotate_patterns` does) shifts the result along the azimuth axis by ``alpha``:
        ``to_polar(rotate_patterns(x, alpha))[:, j]`` is about ``to_polar(x)[:, j - alpha n_phi /
        2 pi]``.

    Raises
    ------
    ValueError
        If the image is not 2-D and square, or ``n_r``/``n_phi`` are not positive.
    """
    # scipy's map_coordinates interpolates at arbitrary points of a numpy image; the model's
    # own polar grid (networks._polar_grid) works on torch batches and fixed sizes instead.
    from scipy.ndimage import map_coordinates

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or img.shape[0] != img.shape[1]:
        raise ValueError(f"to_polar needs one square (H, W) image; got shape {img.shape}. "
                         "Pass the patterns one at a time.")
    if int(n_r) < 1 or int(n_phi) < 1:
        raise ValueError(f"n_r and n_phi must be positive; got {n_r!r} and {n_phi!r}.")
    half = (img.shape[-1] - 1) / 2
    r = np.linspace(1.0, half, int(n_r))[:, None]
    phi = 2 * np.pi * np.arange(int(n_phi))[None, :] / int(n_phi)
    # row index grows downwards, so "up on screen" (positive sin) is a smaller row
    return map_coordinates(img, [half - r * np.sin(phi), half + r * np.cos(phi)], order=1)


def translation_to_pixels(translation, size: int):
    """Convert normalised model translations ``(tx, ty)`` to pixel shifts ``(dy, dx)``.

    Parameters
    ----------
    translation : array-like
        (..., 2) normalised ``(tx, ty)`` with y up.
    size : int
        Pattern width in pixels.

    Returns
    -------
    numpy.ndarray
        (..., 2) shifts along (ky, kx) in pixels: ``dy`` positive downwards (increasing row).
    """
    t = np.asarray(translation, dtype=np.float64)
    half = (size - 1) / 2
    return np.stack([-t[..., 1] * half, t[..., 0] * half], axis=-1)
