"""Toy data with known ground truth: rotated copies of a few templates.

The rrVAE's promise is testable here exactly: every pattern is one of ``n_templates`` shapes
(its content) turned by a known angle (its pose). Used by the tests, the first chapter and the
benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .rotate import rotate_patterns

__all__ = ["RotatedShapes", "make_templates", "rotated_shapes", "circular_correlation"]


@dataclass
class RotatedShapes:
    """A toy data set.

    Attributes
    ----------
    patterns : (N, H, W) float32
        Rotated, noisy templates scaled to [0, 1].
    angle : (N,) float
        True rotation of each pattern, radians (counter-clockwise on screen).
    label : (N,) int
        Which template each pattern is.
    templates : (T, H, W) float32
        The unrotated templates (same scaling as ``patterns``, without noise).
    """

    patterns: np.ndarray
    angle: np.ndarray
    label: np.ndarray
    templates: np.ndarray


def make_templates(
    n_templates: int = 3,
    size: int = 32,
    symmetry: int = 1,
    blobs: int = 3,
    seed: int = 0,
) -> np.ndarray:
    """Smooth templates built from Gaussian blobs, with n-fold symmetry if asked.

    Each template is a sum of ``blobs`` Gaussian spots at random radii and azimuths (inside 70 % of
    the half width, widths 5-10 % of the size); with ``symmetry = n`` every spot is repeated at
    the n azimuths ``2 pi k / n``. For ``symmetry = 1`` the random layout makes every template
    asymmetric (its rotated copies are all different).

    Returns
    -------
    numpy.ndarray
        (n_templates, size, size) float32, maximum 1.
    """
    if n_templates < 1 or size < 4 or symmetry < 1 or blobs < 1:
        raise ValueError("need n_templates >= 1, size >= 4, symmetry >= 1 and blobs >= 1")
    rng = np.random.default_rng(seed)
    half = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size] - half
    out = np.zeros((n_templates, size, size))
    for t in range(n_templates):
        for _ in range(blobs):
            r = rng.uniform(0.15, 0.7) * half
            phi = rng.uniform(0, 2 * np.pi)
            width = rng.uniform(0.05, 0.10) * size
            amp = rng.uniform(0.4, 1.0)
            for k in range(symmetry):
                a = phi + 2 * np.pi * k / symmetry
                cx, cy = r * np.cos(a), -r * np.sin(a)  # y up on screen = -row
                out[t] += amp * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * width**2))
        out[t] /= out[t].max()
    return out.astype(np.float32)


def rotated_shapes(
    n: int = 1000,
    size: int = 32,
    n_templates: int = 3,
    symmetry: int = 1,
    noise: float = 0.02,
    max_angle: float = np.pi,
    seed: int = 0,
    templates: np.ndarray | None = None,
) -> RotatedShapes:
    """Draw ``n`` patterns: a random template turned by a random angle, plus Gaussian noise.

    Parameters
    ----------
    n : int
        Number of patterns.
    size : int
        Pattern width in pixels.
    n_templates, symmetry : int
        Passed to :func:`make_templates` (ignored when ``templates`` is given).
    noise : float
        Standard deviation of additive Gaussian noise (data units; the templates peak at 1).
    max_angle : float
        Angles are uniform in [-max_angle, max_angle) radians.
    seed : int
        Seed of templates, angles, labels and noise.
    templates : numpy.ndarray, optional
        (T, size, size) templates to use instead of random ones.

    Returns
    -------
    RotatedShapes
        Patterns clipped and scaled to [0, 1].
    """
    rng = np.random.default_rng(seed)
    if templates is None:
        templates = make_templates(n_templates, size, symmetry, seed=seed)
    templates = np.asarray(templates, dtype=np.float32)
    label = rng.integers(0, templates.shape[0], n)
    angle = rng.uniform(-max_angle, max_angle, n)
    x = rotate_patterns(templates[label], angle, order=3)
    x = x + noise * rng.standard_normal(x.shape).astype(np.float32)
    lo, hi = min(float(x.min()), 0.0), float(x.max())
    x = (x - lo) / (hi - lo)
    return RotatedShapes(
        patterns=x.astype(np.float32),
        angle=angle,
        label=label,
        templates=((templates - lo) / (hi - lo)).astype(np.float32),
    )


def circular_correlation(a, b) -> float:
    """Circular correlation coefficient (Jammalamadaka & Sarma 1988) of two angle samples (rad).

    1 when ``a - b`` is constant (the same angles up to an offset), -1 when ``a + b`` is
    constant (mirrored), about 0 for unrelated angles. Exact relations come out as +-1
    whatever the angles' spread. For nearly equal angles that spread over the whole circle
    (uniform rotations, COM directions over a scan), each set's mean direction is undefined and
    the coefficient can land anywhere in [-1, 1]: use
    :func:`rrvae_nb.metrics.angle_agreement` for those.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ma = np.angle(np.mean(np.exp(1j * a)))
    mb = np.angle(np.mean(np.exp(1j * b)))
    sa, sb = np.sin(a - ma), np.sin(b - mb)
    den = np.sqrt(np.sum(sa**2) * np.sum(sb**2))
    return float(np.sum(sa * sb) / den) if den > 0 else 0.0
