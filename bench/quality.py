"""Quality measures of a trained model on the synthetic set (known angles and templates).

Angle recovery
    The encoded angle has an arbitrary zero *per template*: every template has its own canonical
    orientation, which the model is free to choose. So the circular correlation
    (:func:`rrvae_nb.synthetic.circular_correlation`, blind to a common offset) is taken within
    each template's patterns and averaged with the pattern counts as weights. It is signed: a
    mirrored angle (the encoder turning the wrong way) scores -1.
Reconstruction error
    Mean squared error per pixel, in the data's units ([0, 1]), of the reconstruction (posterior
    mean latents decoded at the encoded pose) against the noisy held-out patterns, and against
    the noise-free ones (the templates rotated by the true angles). A perfect model reaches the
    noise variance in the first and 0 in the second.
Good model
    Angle recovery >= 0.95 and an error against the noise-free patterns below the noise
    variance of the data: the model's own error is smaller than the noise in the patterns.
"""

from __future__ import annotations

import numpy as np

from rrvae_nb.rotate import rotate_patterns
from rrvae_nb.synthetic import circular_correlation

__all__ = ["ANGLE_TARGET", "angle_recovery", "noise_free", "sse", "is_good"]

#: Angle recovery (circular correlation) that counts as "learned the angle".
ANGLE_TARGET = 0.95


def angle_recovery(encoded, true, label) -> float:
    """Circular correlation of encoded and true angles (rad), per template, count-weighted.

    Parameters
    ----------
    encoded, true : array-like, shape (N,)
        Encoded and true rotation angles in radians.
    label : array-like of int, shape (N,)
        Template of each pattern.

    Returns
    -------
    float
        In [-1, 1]; 1 when, within every template, the encoded angle is the true one plus a
        constant.
    """
    encoded = np.asarray(encoded, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    label = np.asarray(label)
    if not (encoded.shape == true.shape == label.shape) or encoded.ndim != 1 or encoded.size == 0:
        raise ValueError(
            "angle_recovery needs three non-empty 1-D arrays of the same length (encoded angles, "
            f"true angles, template labels); got shapes {encoded.shape}, {true.shape}, "
            f"{label.shape}."
        )
    total = 0.0
    for k in np.unique(label):
        sel = label == k
        total += sel.sum() * circular_correlation(encoded[sel], true[sel])
    return float(total / label.size)


def noise_free(templates, label, angle) -> np.ndarray:
    """The noise-free patterns: ``templates[label]`` turned by ``angle`` (rad), (N, H, W).

    :func:`rrvae_nb.synthetic.rotated_shapes` makes its patterns the same way (bicubic) before
    adding noise and rescaling; its returned templates are rescaled alike, and the rotation
    commutes with that affine rescaling (interpolation weights sum to 1).
    """
    return rotate_patterns(np.asarray(templates)[np.asarray(label)], np.asarray(angle), order=3)


def sse(a, b) -> float:
    """Sum of squared differences of two equally shaped arrays, accumulated in float64.

    The benchmark sums it over chunks of held-out patterns and divides by the number of pixels
    (a mean squared error per pixel) without holding the whole held-out set at once.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"sse needs two non-empty arrays of one shape; got {a.shape}, {b.shape}")
    d = a.astype(np.float64) - b
    return float(np.vdot(d, d))


def is_good(angle_r: float, mse_noise_free: float, noise_variance: float) -> bool:
    """The "good model" criterion of this benchmark (see the module docstring)."""
    return bool(angle_r >= ANGLE_TARGET and mse_noise_free < noise_variance)
