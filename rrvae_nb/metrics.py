"""Scores against a ground truth, and the geometry they need: ROC AUC, nearest sites, rarity.

The chapters check the rrVAE and the centre of mass (COM) against known atom and defect positions
with these few tools, and a reader can use them on their own data:

* :func:`roc_auc` - how well a score map singles out labelled positions (1 perfect, 0.5 chance);
* :func:`nearest_site` - distance, index and direction from every probe position to the nearest
  of a set of sites (atoms, columns, a defect), in nm;
* :func:`cos_toward` - cosine between vectors (e.g. the COM) and directions (e.g. to an atom);
* :func:`angle_agreement` - how closely two sets of angles agree up to a common offset (e.g. the
  angle latent and the COM direction), 1 for a constant offset and near 0 for unrelated angles;
* :func:`resultant` - the mean resultant length of one set of angles (0 spread evenly, 1 equal);
* :func:`angle_tracking` - turn patterns and measure how the encoded angle and content follow;
* :func:`pca` and :func:`n_components` - principal components of patterns and how many explain a
  given share of the variance (the linear baseline of chapter 1);
* :func:`knn_rarity` - a label-free defect score: how far each encoding lies from its k-th
  nearest neighbour in robustly standardised latent space.

Maps are (scan y, scan x); vectors and directions carry their (y, x) components on the last axis,
y pointing down the scan (increasing row index), as :attr:`rrvae_nb.com.COMMaps.vector` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.spatial import cKDTree

from .stem.signals import Calibration, _points_nm

__all__ = ["roc_auc", "NearestSite", "nearest_site", "cos_toward", "angle_agreement",
           "resultant", "angle_tracking", "pca", "n_components", "knn_rarity"]

#: Factor that turns a median absolute deviation into a standard deviation for normal data.
MAD_TO_STD = 1.4826


def roc_auc(score, positive) -> float:
    """Area under the ROC curve of a score against boolean labels.

    The probability that a randomly chosen positive scores higher than a randomly chosen
    negative, ties counting one half: the Mann-Whitney U statistic divided by the number of
    (positive, negative) pairs. 1 is a perfect detector, 0.5 a coin toss, 0 a perfectly inverted
    one.

    Parameters
    ----------
    score : array_like
        Scores of any shape, e.g. a map (scan y, scan x); higher means "more likely positive".
    positive : array_like of bool
        Labels of the same shape as ``score`` (0/1 integers are accepted too).

    Returns
    -------
    float
        The AUC in [0, 1].

    Raises
    ------
    ValueError
        If the shapes differ, the labels are not boolean, a score is NaN/inf, or either class is
        empty.
    """
    score = np.asarray(score, dtype=float)
    positive = np.asarray(positive)
    if score.shape != positive.shape:
        raise ValueError(
            f"score {score.shape} and positive {positive.shape} must have the same shape: one "
            "label per score (select the same positions from both, e.g. score[mask], "
            "positive[mask])."
        )
    if positive.dtype != bool:
        if not np.isin(positive, (0, 1)).all():
            raise ValueError(
                "positive must be boolean labels (True = positive); got values other than 0 "
                "and 1. Build them with a comparison, e.g. distance_nm < 0.1."
            )
        positive = positive.astype(bool)
    if not np.isfinite(score).all():
        raise ValueError(
            f"score contains {np.count_nonzero(~np.isfinite(score))} NaN or inf value(s): drop "
            "those positions from both arrays first, e.g. valid = np.isfinite(score); "
            "roc_auc(score[valid], positive[valid])."
        )
    n_pos = int(np.count_nonzero(positive))
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"roc_auc needs both classes; got {n_pos} positive and {n_neg} negative label(s). "
            "Check the labels (e.g. a distance threshold that selects no position or all)."
        )
    # Mann-Whitney U from average ranks (ties count one half); exact for half-integer rank sums
    ranks = stats.rankdata(score.ravel())
    u = ranks[positive.ravel()].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


@dataclass(frozen=True, eq=False)
class NearestSite:
    """The nearest site of every probe position (see :func:`nearest_site`).

    Attributes
    ----------
    distance_nm : numpy.ndarray
        (scan y, scan x) float: distance to the nearest site, in nm.
    index : numpy.ndarray
        (scan y, scan x) int: row of ``sites_nm`` of that site.
    direction : numpy.ndarray
        (scan y, scan x, 2) float: unit vector (y, x) from the probe towards that site; (0, 0)
        where the probe sits exactly on it.
    """

    distance_nm: np.ndarray
    index: np.ndarray
    direction: np.ndarray


def nearest_site(calibration: Calibration, shape, sites_nm) -> NearestSite:
    """Distance, index and direction from every probe position to the nearest site.

    Parameters
    ----------
    calibration : Calibration
        The scan's calibration (step and offset in nm), e.g. from
        :func:`rrvae_nb.signals.calibration_of`.
    shape : (int, int)
        Scan shape (scan y, scan x).
    sites_nm : array_like
        (M, 2) or (2,) site positions (y, x) in nm, e.g. ``truth.positions_nm``.

    Returns
    -------
    NearestSite
        ``distance_nm`` and ``index`` (scan y, scan x), ``direction`` (scan y, scan x, 2).

    Raises
    ------
    ValueError
        If ``sites_nm`` is empty, not (M, 2) or (2,), or holds NaN/inf, or ``shape`` is bad.
    """
    sites = _points_nm(sites_nm, "sites_nm")
    probes = calibration.scan_positions_nm(shape)                 # (scan y, scan x, 2)
    _, index = cKDTree(sites).query(probes.reshape(-1, 2))
    index = index.reshape(probes.shape[:2])
    # the offset and its length are recomputed exactly here (the tree's distances are rounded
    # differently), so that distance_nm is np.hypot of the (y, x) difference
    offset = sites[index] - probes
    distance = np.hypot(offset[..., 0], offset[..., 1])
    direction = np.divide(offset, distance[..., None], out=np.zeros_like(offset),
                          where=distance[..., None] > 0)
    return NearestSite(distance_nm=distance, index=index, direction=direction)


def cos_toward(vector_yx, direction_yx) -> np.ndarray:
    """Cosine of the angle between vectors and directions, component by component.

    Parameters
    ----------
    vector_yx : array_like
        (..., 2) vectors with components (y, x), e.g. ``COMMaps.vector`` (scan y, scan x, 2).
    direction_yx : array_like
        (..., 2) directions (y, x), broadcastable against ``vector_yx``, e.g.
        ``NearestSite.direction``. Unit length is expected; others are normalised.

    Returns
    -------
    numpy.ndarray
        (...) cosines in [-1, 1]: +1 where the vector points along the direction, -1 where it
        points against it, and 0 where either the vector or the direction vanishes (never NaN).

    Raises
    ------
    ValueError
        If the last axis is not of length 2, the shapes do not broadcast, or a value is NaN/inf.
    """
    v = np.asarray(vector_yx, dtype=float)
    u = np.asarray(direction_yx, dtype=float)
    for name, a in (("vector_yx", v), ("direction_yx", u)):
        if a.ndim == 0 or a.shape[-1] != 2:
            raise ValueError(
                f"{name} must have its (y, x) components on a last axis of length 2; got shape "
                f"{a.shape}. Stack them, e.g. np.stack([y, x], axis=-1)."
            )
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or inf: mask or repair those positions first.")
    try:
        dot = (v * u).sum(-1)
    except ValueError as err:
        raise ValueError(
            f"vector_yx {v.shape} and direction_yx {u.shape} do not broadcast: give both the "
            "same leading (scan y, scan x) axes."
        ) from err
    norms = np.linalg.norm(v, axis=-1) * np.linalg.norm(u, axis=-1)
    return np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0)


def angle_agreement(a_rad, b_rad, *, symmetry: int = 1, weights=None) -> float:
    """How closely two sets of angles agree up to one common offset, in [0, 1].

    The mean resultant length of their difference, ``|sum w exp(i n (a - b))| / sum w`` with
    ``n = symmetry``: 1 when ``a - b`` is the same everywhere (the same directions, whatever
    zero each is measured from), about ``1 / sqrt(N)`` for N unrelated angles. Compare with
    ``b`` mirrored (``angle_agreement(a, -b)``) to test for a mirror-image relation.

    Use this, not :func:`rrvae_nb.synthetic.circular_correlation`, when the angles spread over
    the whole circle (the COM directions over a scan, rotations drawn uniformly): the
    correlation coefficient measures each set from its own mean direction, which is undefined
    for such angles, so it can come out anywhere in [-1, 1] for angles that agree to a few
    degrees (measured: -0.31 where this gives 0.99).

    Parameters
    ----------
    a_rad, b_rad : array_like
        Angles in radians, the same shape (any axes, e.g. (scan y, scan x)).
    symmetry : int
        n for angles defined modulo 2 pi / n (n-fold symmetric patterns).
    weights : array_like, optional
        Non-negative weights of the same shape, e.g. the COM magnitude, so that positions whose
        direction is ill-defined (a vanishing COM) count less. Default: equal weights.

    Returns
    -------
    float
        The agreement, 0 (unrelated) to 1 (equal up to an offset).

    Raises
    ------
    ValueError
        If the shapes differ, the input is empty, or a value is NaN/inf or a weight negative.
    """
    a = np.asarray(a_rad, dtype=float)
    b = np.asarray(b_rad, dtype=float)
    w = np.ones_like(a) if weights is None else np.asarray(weights, dtype=float)
    if a.shape != b.shape or w.shape != a.shape:
        raise ValueError(
            f"angles and weights must have one shape; got {a.shape}, {b.shape} and {w.shape}. "
            "Flatten or select the same positions in each."
        )
    if a.size == 0:
        raise ValueError("no angles given: select at least one position.")
    if not (np.isfinite(a).all() and np.isfinite(b).all() and np.isfinite(w).all()):
        raise ValueError("the angles or weights contain NaN or inf: mask those positions first.")
    if (w < 0).any() or not w.sum() > 0:
        raise ValueError("weights must be non-negative and not all zero.")
    n = int(symmetry)
    if n < 1:
        raise ValueError(f"symmetry must be a positive integer; got {symmetry!r}.")
    return float(np.abs(np.sum(w * np.exp(1j * n * (a - b)))) / np.sum(w))


def resultant(a_rad) -> float:
    """Mean resultant length ``|<exp(i a)>|`` of a set of angles, in [0, 1].

    Parameters
    ----------
    a_rad : array_like
        Angles in radians (any shape; all are pooled).

    Returns
    -------
    float
        0 for angles spread evenly over the circle (about ``1 / sqrt(N)`` for N random ones),
        1 when all are equal; ``exp(-s^2 / 2)`` for a normal spread of width ``s``.

    Raises
    ------
    ValueError
        If no angle is given or one is NaN/inf.
    """
    a = np.asarray(a_rad, dtype=float)
    if a.size == 0:
        raise ValueError("no angles given: pass at least one angle (rad).")
    if not np.isfinite(a).all():
        raise ValueError("the angles contain NaN or inf: mask those first.")
    return float(np.abs(np.mean(np.exp(1j * a))))


def angle_tracking(model, patterns, turns_rad) -> tuple[float, float]:
    """How well a model's encoding follows a turn of its input: angle error and content move.

    Every pattern is turned by each angle of ``turns_rad`` (:func:`rrvae_nb.rotate.rotate_patterns`,
    values clipped to [0, 1]) and encoded again. An equivariant model moves the encoded angle by
    the turn and leaves the content latents in place.

    Parameters
    ----------
    model : RrVAE
        A model with ``encode(patterns)`` returning ``.angle`` (N,) in rad and ``.z`` (N, d).
    patterns : array_like
        (N, ky, kx) square patterns, values in [0, 1].
    turns_rad : array_like
        The turns to apply, in radians (positive: counter-clockwise on screen).

    Returns
    -------
    median_error_deg : float
        Median over patterns and turns of ``|encoded change of angle - turn|`` on the circle,
        in degrees (about 90 for angles unrelated to the turn, 0 for an equivariant encoder).
    median_move : float
        Median Euclidean distance the content latents ``z`` move, in latent units.

    Raises
    ------
    ValueError
        If no turn is given.
    """
    from .model.rotate import circ_diff, rotate_patterns

    turns = np.atleast_1d(np.asarray(turns_rad, dtype=float))
    if turns.size == 0:
        raise ValueError("no turns given: pass at least one angle in radians.")
    patterns = np.asarray(patterns)
    base = model.encode(patterns)
    errors, moves = [], []
    for t in turns:
        enc = model.encode(np.clip(rotate_patterns(patterns, t), 0, 1))
        errors.append(np.abs(circ_diff(enc.angle - base.angle, t)))
        moves.append(np.linalg.norm(enc.z - base.z, axis=1))
    return (float(np.degrees(np.median(np.concatenate(errors)))),
            float(np.median(np.concatenate(moves))))


def pca(patterns) -> tuple[np.ndarray, np.ndarray]:
    """Principal components of a stack of patterns (an SVD of the centred pixels).

    Parameters
    ----------
    patterns : array_like
        (N, ky, kx) patterns; each is one sample, its pixels the variables.

    Returns
    -------
    fractions : numpy.ndarray
        (K,) share of the variance explained by each component, K = min(N, ky kx), in
        decreasing order, summing to 1 (all zero when the patterns do not vary).
    components : numpy.ndarray
        (K, ky, kx) the components (unit-norm images), in the same order.

    Raises
    ------
    ValueError
        If ``patterns`` is not a 3-D stack.
    """
    # numpy's SVD is all this needs; scikit-learn's PCA would add a dependency for the same call
    x = np.asarray(patterns)
    if x.ndim != 3:
        raise ValueError(f"pca needs a stack of patterns (N, ky, kx); got shape {x.shape}. "
                         "For one pattern pass x[None].")
    flat = x.reshape(len(x), -1).astype(np.float64)
    flat = flat - flat.mean(0)
    _, s, vt = np.linalg.svd(flat, full_matrices=False)
    var = s**2
    frac = var / var.sum() if var.sum() > 1e-20 else np.zeros_like(var)
    return frac, vt.reshape(-1, *x.shape[1:])


def n_components(fractions, target: float = 0.95) -> int:
    """The number of leading components that explain at least ``target`` of the variance.

    Parameters
    ----------
    fractions : array_like
        (K,) variance fractions in decreasing order, as :func:`pca` returns them.
    target : float
        Share of the variance to explain, in (0, 1].

    Returns
    -------
    int
        The smallest k with ``sum(fractions[:k]) >= target``; 0 when there is no variance.

    Raises
    ------
    ValueError
        If ``target`` is outside (0, 1].
    """
    if not 0 < target <= 1:
        raise ValueError(f"target must be a share of the variance in (0, 1]; got {target!r}.")
    frac = np.asarray(fractions, dtype=float)
    if frac.sum() == 0:
        return 0
    # a little slack so that round-off in the cumulative sum cannot ask for one more component
    return int(min(np.searchsorted(np.cumsum(frac), target - 1e-12) + 1, frac.size))


def knn_rarity(z, k: int = 20) -> np.ndarray:
    """Label-free rarity score: distance to the k-th nearest neighbour in latent space.

    Each latent is first standardised robustly (minus its median, divided by 1.4826 times its
    median absolute deviation, the standard deviation for normal data), so that every latent
    counts alike and a few outliers do not set the scale. Points with many look-alikes (every
    site of a perfect crystal recurs in every unit cell) get small scores; unique ones (around a
    single defect) get large scores. Choose ``k`` above the number of points expected to look
    alike by chance and below the number of equivalent sites of the common kind.

    Parameters
    ----------
    z : array_like
        (N, L) latents, one row per pattern (e.g. ``Encoding.z``).
    k : int
        Which neighbour, not counting the point itself (1 = the nearest other point).

    Returns
    -------
    numpy.ndarray
        (N,) float: distance to the k-th nearest other point, in robust standard deviations.

    Raises
    ------
    ValueError
        If ``z`` is not 2-D, holds NaN/inf, ``k`` is not in 1 .. N - 1, or a latent has zero
        median absolute deviation (more than half its values equal).
    """
    z = np.asarray(z, dtype=float)
    if z.ndim != 2:
        raise ValueError(
            f"z must be (N, L) latents, one row per pattern; got shape {z.shape}. For a map "
            "(scan y, scan x, L) pass z.reshape(-1, L); for one latent, z[:, None]."
        )
    if not np.isfinite(z).all():
        raise ValueError("z contains NaN or inf: drop or repair those rows first.")
    n = z.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < n:
        raise ValueError(
            f"k must be an integer from 1 to N - 1 = {n - 1} (neighbours other than the point "
            f"itself); got {k!r}. Use a smaller k or more points."
        )
    median = np.median(z, axis=0)
    spread = MAD_TO_STD * np.median(np.abs(z - median), axis=0)
    if np.any(spread == 0):
        bad = np.flatnonzero(spread == 0).tolist()
        raise ValueError(
            f"latent(s) {bad} have zero median absolute deviation (more than half the values "
            "are equal), so they cannot be standardised: drop them, e.g. z[:, keep]."
        )
    u = (z - median) / spread
    # k + 1 neighbours: the nearest of each point is the point itself (distance 0)
    distance, _ = cKDTree(u).query(u, k=k + 1)
    return distance[:, -1]


def latent_features(encoding, symmetry: int = 1) -> np.ndarray:
    """The model's whole description of each pattern: content latents and the pose on the circle.

    The content latents say what a pattern looks like once turned into its canonical frame; the
    angle says which way it was turned. A defect can be rare in neither alone but in the pair:
    around a vacancy, patterns of an ordinary look point the wrong way. Measured on simulated hBN
    (``tests/test_defaults.py``, 2 content latents, seeds 0-2, ``knn_rarity`` at k = 9): vacancy
    ROC AUC 0.81-0.89 from the content latents, 0.60-0.70 from the angle, 0.93-0.95 from both.
    The angle enters as (cos n*angle, sin n*angle), so that -pi/n and pi/n are neighbours.

    Parameters
    ----------
    encoding : Encoding
        Posterior summaries from ``RrVAE.encode`` (``z`` and ``angle`` in radians are used).
    symmetry : int
        The model's ``symmetry`` n: angles are defined modulo 2 pi / n.

    Returns
    -------
    numpy.ndarray
        (N, L + 2) float: the L content latents, then cos(n angle) and sin(n angle).

    Notes
    -----
    Rotated copies of one site no longer look alike here, so a rarity score on these features
    needs a ``k`` below the number of look-alikes of a raw pattern (about one per unit cell), as
    for PCA scores of the raw patterns, not the larger k that content latents alone allow.
    """
    if isinstance(symmetry, bool) or not isinstance(symmetry, (int, np.integer)) or symmetry < 1:
        raise ValueError(f"symmetry must be a positive integer (the model's n); got {symmetry!r}.")
    z = np.asarray(encoding.z, dtype=float)
    angle = np.asarray(encoding.angle, dtype=float)
    if z.ndim != 2 or angle.shape != z.shape[:1]:
        raise ValueError(
            f"encoding.z must be (N, L) and encoding.angle (N,); got {z.shape} and {angle.shape}. "
            "Pass the Encoding of a stack of patterns (RrVAE.encode), not of a map."
        )
    return np.column_stack([z, np.cos(symmetry * angle), np.sin(symmetry * angle)])
