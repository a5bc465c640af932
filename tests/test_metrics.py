"""Tests of rrvae_nb.metrics and of the scan geometry of rrvae_nb.signals.Calibration."""

from __future__ import annotations

import numpy as np
import pytest

from rrvae_nb import metrics
from rrvae_nb.metrics import NearestSite, cos_toward, knn_rarity, nearest_site, roc_auc
from rrvae_nb.signals import Calibration

CAL = Calibration(scan_step_nm=0.025, k_step_mrad=2.0, scan_offset_nm=(-0.3, 0.1))
SHAPE = (12, 17)  # (scan y, scan x)


def brute_force_auc(score, positive):
    """P(positive > negative) + 0.5 P(tie) over every (positive, negative) pair."""
    pos = np.ravel(score)[np.ravel(positive)][:, None]
    neg = np.ravel(score)[~np.ravel(positive)][None, :]
    return np.mean(pos > neg) + 0.5 * np.mean(pos == neg)


# ---------------------------------------------------------------- Calibration scan geometry


def test_scan_positions_are_offset_plus_index_times_step():
    pos = CAL.scan_positions_nm(SHAPE)
    assert pos.shape == (*SHAPE, 2)
    iy, ix = 5, 11
    assert pos[iy, ix, 0] == pytest.approx(-0.3 + iy * 0.025)
    assert pos[iy, ix, 1] == pytest.approx(0.1 + ix * 0.025)
    # y grows down the rows only, x along the columns only, by one step
    np.testing.assert_allclose(np.diff(pos[..., 0], axis=0), 0.025)
    np.testing.assert_allclose(np.diff(pos[..., 0], axis=1), 0.0)
    np.testing.assert_allclose(np.diff(pos[..., 1], axis=1), 0.025)
    np.testing.assert_allclose(np.diff(pos[..., 1], axis=0), 0.0)


def test_scan_index_inverts_scan_positions(rng):
    pos = CAL.scan_positions_nm(SHAPE).reshape(-1, 2)
    # any point less than half a step from a probe position belongs to it
    jitter = rng.uniform(-0.49, 0.49, pos.shape) * CAL.scan_step_nm
    index, inside = CAL.scan_index(pos + jitter, SHAPE)
    expected = np.stack(np.unravel_index(np.arange(pos.shape[0]), SHAPE), axis=1)
    np.testing.assert_array_equal(index, expected)
    assert index.dtype.kind == "i" and inside.all()


def test_scan_index_clips_points_outside_and_says_so():
    y0, x0 = CAL.scan_offset_nm
    points = [[y0 - 1.0, x0 + 3 * CAL.scan_step_nm],            # above the scan
              [y0 + 100.0, x0 + 100.0],                         # beyond the far corner
              [y0 + 2 * CAL.scan_step_nm, x0 + 4 * CAL.scan_step_nm]]
    index, inside = CAL.scan_index(points, SHAPE)
    np.testing.assert_array_equal(index, [[0, 3], [SHAPE[0] - 1, SHAPE[1] - 1], [2, 4]])
    np.testing.assert_array_equal(inside, [False, False, True])
    # one point (2,) gives one row
    one, one_inside = CAL.scan_index(points[2], SHAPE)
    np.testing.assert_array_equal(one, [[2, 4]])
    np.testing.assert_array_equal(one_inside, [True])


@pytest.mark.parametrize("shape", [(0, 4), (3,), (3, 4, 5), (2.5, 4), "ab", None])
def test_scan_geometry_rejects_a_bad_shape(shape):
    with pytest.raises(ValueError, match="shape"):
        CAL.scan_positions_nm(shape)
    with pytest.raises(ValueError, match="shape"):
        CAL.scan_index([0.0, 0.0], shape)


def test_scan_index_rejects_bad_positions():
    with pytest.raises(ValueError, match=r"\(M, 2\) or \(2,\)"):
        CAL.scan_index(np.zeros((4, 3)), SHAPE)
    with pytest.raises(ValueError, match="NaN or inf"):
        CAL.scan_index([[0.0, np.nan]], SHAPE)


# ---------------------------------------------------------------- roc_auc


def test_auc_is_one_for_separated_scores_and_zero_when_inverted():
    positive = np.array([False, True, False, True, True, False])
    score = np.where(positive, 10.0, 1.0) + np.arange(6) * 0.01
    assert roc_auc(score, positive) == 1.0
    assert roc_auc(-score, positive) == 0.0


def test_auc_of_all_tied_scores_is_one_half():
    positive = np.arange(10) % 3 == 0
    assert roc_auc(np.full(10, 4.2), positive) == 0.5


def test_auc_equals_the_pairwise_probability_with_ties(rng):
    score = rng.integers(0, 6, size=(9, 11)).astype(float)  # many ties
    positive = rng.random((9, 11)) < 0.3
    assert roc_auc(score, positive) == pytest.approx(brute_force_auc(score, positive), abs=1e-12)
    # a map and its flattened copy score the same
    assert roc_auc(score, positive) == roc_auc(score.ravel(), positive.ravel())


def test_auc_is_invariant_to_monotone_transforms_and_flips_with_the_labels(rng):
    score = rng.normal(size=200)
    positive = score + rng.normal(size=200) > 0.5
    auc = roc_auc(score, positive)
    assert 0.6 < auc < 1.0
    assert roc_auc(np.exp(3 * score) + 7, positive) == pytest.approx(auc, abs=1e-12)
    assert roc_auc(score, ~positive) == pytest.approx(1 - auc, abs=1e-12)
    # labels as 0/1 integers mean the same
    assert roc_auc(score, positive.astype(int)) == auc


def test_auc_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        roc_auc(np.zeros(5), np.ones(4, bool))
    with pytest.raises(ValueError, match="both classes; got 0 positive"):
        roc_auc(np.arange(4.0), np.zeros(4, bool))
    with pytest.raises(ValueError, match="both classes; got 4 positive and 0 negative"):
        roc_auc(np.arange(4.0), np.ones(4, bool))
    with pytest.raises(ValueError, match=r"1 NaN or inf .*np.isfinite"):
        roc_auc([1.0, np.nan, 2.0], [True, False, False])
    with pytest.raises(ValueError, match="boolean labels"):
        roc_auc([1.0, 2.0, 3.0], [0, 2, 1])


# ---------------------------------------------------------------- nearest_site


def test_nearest_site_matches_brute_force_and_points_at_the_site(rng):
    sites = rng.uniform([-0.4, 0.0], [0.05, 0.55], size=(23, 2))
    near = nearest_site(CAL, SHAPE, sites)
    assert isinstance(near, NearestSite)
    probes = CAL.scan_positions_nm(SHAPE)
    all_d = np.linalg.norm(probes[:, :, None, :] - sites[None, None], axis=-1)  # brute force
    np.testing.assert_allclose(near.distance_nm, all_d.min(-1), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(near.index, all_d.argmin(-1))
    # walking the distance along the direction lands on the site
    landed = probes + near.distance_nm[..., None] * near.direction
    np.testing.assert_allclose(landed, sites[near.index], atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(near.direction, axis=-1), 1.0, rtol=1e-12)


def test_nearest_site_on_a_site_has_zero_distance_and_direction():
    site = CAL.scan_positions_nm(SHAPE)[4, 6]           # exactly on a probe position, as (2,)
    near = nearest_site(CAL, SHAPE, site)
    assert near.distance_nm[4, 6] == 0.0
    np.testing.assert_array_equal(near.direction[4, 6], [0.0, 0.0])
    assert np.all(near.index == 0)
    # one step to the right of it, the site lies in -x
    np.testing.assert_allclose(near.direction[4, 7], [0.0, -1.0], atol=1e-12)
    assert near.distance_nm[4, 7] == pytest.approx(CAL.scan_step_nm)


def test_nearest_site_rejects_bad_sites():
    for empty in (np.zeros((0, 2)), []):
        with pytest.raises(ValueError, match="sites_nm is empty"):
            nearest_site(CAL, SHAPE, empty)
    with pytest.raises(ValueError, match=r"\(M, 2\) or \(2,\)"):
        nearest_site(CAL, SHAPE, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="NaN or inf"):
        nearest_site(CAL, SHAPE, [[0.1, np.inf]])
    with pytest.raises(ValueError, match="shape"):
        nearest_site(CAL, (4, -1), [[0.1, 0.2]])


# ---------------------------------------------------------------- cos_toward


def attracting_field(probes, atoms, sigma_nm=0.03):
    """COM-like field grad V of Gaussian atoms V = sum exp(-r^2 / 2 sigma^2): points at them."""
    field = np.zeros(probes.shape)
    for atom in atoms:
        offset = atom - probes
        r2 = (offset**2).sum(-1, keepdims=True)
        field += offset / sigma_nm**2 * np.exp(-r2 / (2 * sigma_nm**2))
    return field


def test_a_field_pointing_at_one_atom_has_cosine_one_everywhere_off_site():
    probes = CAL.scan_positions_nm(SHAPE)
    atom = probes[5, 8]                                  # on a probe position
    near = nearest_site(CAL, SHAPE, atom)
    field = attracting_field(probes, [atom], sigma_nm=0.2)
    cos = cos_toward(field, near.direction)
    off = near.distance_nm > 0
    np.testing.assert_allclose(cos[off], 1.0, atol=1e-12)
    np.testing.assert_allclose(cos_toward(-field, near.direction)[off], -1.0, atol=1e-12)
    assert cos[5, 8] == 0.0                              # on the atom: no direction, no NaN


def test_a_field_of_several_atoms_points_at_the_nearest_one_near_it():
    probes = CAL.scan_positions_nm(SHAPE)
    atoms = np.array([[-0.25, 0.2], [-0.2, 0.45], [-0.08, 0.3]])
    near = nearest_site(CAL, SHAPE, atoms)
    cos = cos_toward(attracting_field(probes, atoms), near.direction)
    ring = (near.distance_nm > 0.01) & (near.distance_nm < 0.05)
    assert ring.sum() > 20
    assert cos[ring].min() > 0.99
    assert cos_toward(-attracting_field(probes, atoms), near.direction)[ring].max() < -0.99


def test_cos_toward_angles_zero_vectors_and_broadcasting():
    v = np.array([[0.0, 2.0], [3.0, 3.0], [0.0, 0.0], [-1.0, 0.0]])
    # one direction for all vectors, not of unit length: it is normalised
    cos = cos_toward(v, [0.0, 5.0])
    np.testing.assert_allclose(cos, [1.0, np.sqrt(0.5), 0.0, 0.0], atol=1e-12)
    assert np.isfinite(cos_toward(np.zeros((3, 4, 2)), np.zeros((3, 4, 2)))).all()


def test_cos_toward_rejects_bad_input():
    with pytest.raises(ValueError, match="vector_yx must have its"):
        cos_toward(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="direction_yx must have its"):
        cos_toward(np.zeros((4, 2)), 1.0)
    with pytest.raises(ValueError, match="vector_yx contains NaN"):
        cos_toward([[np.nan, 1.0]], [[0.0, 1.0]])
    with pytest.raises(ValueError, match="do not broadcast"):
        cos_toward(np.zeros((4, 2)), np.zeros((3, 2)))


# ---------------------------------------------------------------- knn_rarity


def test_rarity_ranks_an_isolated_outlier_first(rng):
    z = rng.normal(size=(300, 2))
    z[137] = [0.5, 9.0]                                  # alone, far out along z2
    rarity = knn_rarity(z, k=10)
    assert rarity.shape == (300,)
    assert np.argmax(rarity) == 137
    assert rarity[137] > 2 * np.sort(rarity)[-2]


def test_rarity_equals_brute_force_and_ignores_per_latent_affine_rescaling(rng):
    z = rng.normal(size=(60, 3)) * [1.0, 5.0, 0.2]
    k = 7
    med = np.median(z, axis=0)
    u = (z - med) / (1.4826 * np.median(np.abs(z - med), axis=0))
    d = np.linalg.norm(u[:, None] - u[None], axis=-1)
    np.fill_diagonal(d, np.inf)                          # the point itself does not count
    expected = np.sort(d, axis=1)[:, k - 1]
    rarity = knn_rarity(z, k=k)
    np.testing.assert_allclose(rarity, expected, rtol=1e-10)
    rescaled = z * [3.0, -0.01, 250.0] + [10.0, -4.0, 0.5]
    np.testing.assert_allclose(knn_rarity(rescaled, k=k), rarity, rtol=1e-9)


def test_rarity_counts_duplicates_as_neighbours(rng):
    z = rng.normal(size=(20, 2))
    z[3] = z[4]                                          # two identical points
    rarity = knn_rarity(z, k=1)
    assert rarity[3] == 0.0 and rarity[4] == 0.0
    assert np.all(np.delete(rarity, [3, 4]) > 0)


def test_rarity_rejects_bad_input(rng):
    z = rng.normal(size=(10, 2))
    with pytest.raises(ValueError, match="k must be an integer from 1 to N - 1 = 9"):
        knn_rarity(z, k=10)
    for bad_k in (0, 2.5, True):
        with pytest.raises(ValueError, match="k must be an integer"):
            knn_rarity(z, k=bad_k)
    with pytest.raises(ValueError, match=r"\(N, L\) latents"):
        knn_rarity(z[:, 0])
    with pytest.raises(ValueError, match="NaN or inf"):
        knn_rarity(np.where(np.arange(20).reshape(10, 2) == 5, np.nan, z), k=3)
    flat = z.copy()
    flat[:6, 1] = 1.0                                    # more than half equal: MAD = 0
    with pytest.raises(ValueError, match=r"latent\(s\) \[1\] have zero median"):
        knn_rarity(flat, k=3)


def test_rectangular_scan_steps_give_true_distances():
    """Per-axis scan steps (a Calibration used to hold one step for both axes)."""
    cal = Calibration(scan_step_nm=(0.1, 0.2), k_step_mrad=1.0, scan_offset_nm=(1.0, -1.0))
    pos = cal.scan_positions_nm((3, 4))
    assert pos[2, 3] == pytest.approx((1.2, -0.4))
    index, inside = cal.scan_index([[1.2, -0.4], [1.04, -0.89]], (3, 4))
    assert index.tolist() == [[2, 3], [0, 1]] and inside.all()
    near = nearest_site(cal, (3, 4), [[1.1, -0.6]])
    assert near.distance_nm[1, 2] == pytest.approx(0.0, abs=1e-12)
    assert near.distance_nm[1, 3] == pytest.approx(0.2)   # one step in x: 0.2 nm, not 0.1
    assert near.distance_nm[2, 2] == pytest.approx(0.1)


def test_angle_agreement_is_one_for_an_offset_and_small_for_unrelated_angles():
    rng = np.random.default_rng(0)
    a = rng.uniform(-np.pi, np.pi, 2000)  # spread over the whole circle, like COM directions
    assert metrics.angle_agreement(a, a + 2.0) == pytest.approx(1.0)
    assert metrics.angle_agreement(a, rng.uniform(-np.pi, np.pi, a.size)) < 0.06
    assert metrics.angle_agreement(a, 1.0 - a) < 0.06          # a mirror image is not agreement
    assert metrics.angle_agreement(a, -(1.0 - a)) == pytest.approx(1.0)  # ... unless mirrored back
    noisy = a + 0.3 + rng.normal(0, 0.1, a.size)                # ~6 degrees of noise
    assert metrics.angle_agreement(a, noisy) == pytest.approx(np.exp(-0.1**2 / 2), abs=0.01)
    # n-fold angles: differences by multiples of 2 pi / n are the same angle
    assert metrics.angle_agreement(a, a + rng.integers(0, 3, a.size) * 2 * np.pi / 3,
                                   symmetry=3) == pytest.approx(1.0)
    assert metrics.angle_agreement(a, a + rng.integers(0, 3, a.size) * 2 * np.pi / 3) < 0.1


def test_angle_agreement_where_the_correlation_coefficient_fails():
    """Angles spread evenly over the circle (as a lattice's symmetry spreads the COM directions
    around a column) that agree to about 3 degrees: the circular correlation coefficient
    measures each set from its own mean direction, undefined here, and comes out anywhere in
    [-1, 1]; the agreement stays near 1."""
    from rrvae_nb.synthetic import circular_correlation

    a = np.linspace(-np.pi, np.pi, 400, endpoint=False)
    coefficients = []
    for seed in range(20):
        b = a + 1.0 + np.random.default_rng(seed).normal(0, 0.05, a.size)
        coefficients.append(circular_correlation(a, b))
        assert metrics.angle_agreement(a, b) > 0.99
    assert min(coefficients) < 0.5, coefficients   # the coefficient is unreliable here


def test_angle_agreement_weights_and_bad_input():
    a = np.array([0.0, 0.0, 0.0, 0.0])
    b = np.array([0.0, 0.0, np.pi, 0.0])
    assert metrics.angle_agreement(a, b) == pytest.approx(0.5)
    assert metrics.angle_agreement(a, b, weights=[1, 1, 0, 1]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one shape"):
        metrics.angle_agreement(a, b[:3])
    with pytest.raises(ValueError, match="NaN"):
        metrics.angle_agreement(a, np.array([0.0, np.nan, 0.0, 0.0]))
    with pytest.raises(ValueError, match="non-negative"):
        metrics.angle_agreement(a, b, weights=[1, -1, 0, 1])
    with pytest.raises(ValueError, match="no angles"):
        metrics.angle_agreement([], [])


# ---------------------------------------------------------------- chapter 1's measures
def test_resultant_is_one_for_equal_angles_and_small_for_an_even_spread():
    from rrvae_nb.metrics import resultant

    assert resultant(np.full(10, 2.0)) == pytest.approx(1.0)
    assert resultant(2 * np.pi * np.arange(12) / 12) == pytest.approx(0.0, abs=1e-12)
    # a normal spread of width s has resultant exp(-s^2 / 2)
    rng = np.random.default_rng(0)
    assert resultant(rng.normal(0.3, 0.5, 200_000)) == pytest.approx(np.exp(-0.125), abs=5e-3)
    with pytest.raises(ValueError, match="no angles"):
        resultant([])


class _PoseModel:
    """Encodes the direction of a pattern's centre of mass (equivariant) or a constant."""

    def __init__(self, equivariant):
        self.equivariant = equivariant

    def encode(self, x):
        from types import SimpleNamespace

        x = np.asarray(x, dtype=float)
        h = x.shape[-1]
        yy, xx = np.mgrid[:h, :h] - (h - 1) / 2
        w = x.sum((1, 2))
        dx, dy = (x * xx).sum((1, 2)) / w, -(x * yy).sum((1, 2)) / w
        angle = np.arctan2(dy, dx) if self.equivariant else np.zeros(len(x))
        z = np.stack([w, np.hypot(dx, dy)], 1) / 100
        return SimpleNamespace(angle=angle, z=z)


def test_angle_tracking_separates_an_equivariant_encoder_from_a_blind_one():
    from rrvae_nb.metrics import angle_tracking

    yy, xx = np.mgrid[:33, :33]
    spots = np.stack([np.exp(-((yy - 16) ** 2 + (xx - c) ** 2) / 4.0) for c in (22, 26, 28)])
    turns = np.radians([30, 90, -120, 180])
    err, move = angle_tracking(_PoseModel(True), spots, turns)
    assert err < 1.0 and move < 0.01
    err_blind, _ = angle_tracking(_PoseModel(False), spots, turns)
    # the blind model's error is |turn| wrapped: median of 30, 90, 120, 180 deg
    assert err_blind == pytest.approx(105.0, abs=1.0)
    with pytest.raises(ValueError, match="no turns"):
        angle_tracking(_PoseModel(True), spots, [])


def test_pca_finds_the_planted_directions_and_counts_them():
    from rrvae_nb.metrics import n_components, pca

    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.normal(size=(16, 2)))[0].T.reshape(2, 4, 4)   # two orthonormal images
    weights = rng.normal(size=(500, 2)) * [3.0, 1.0]
    x = 5.0 + np.einsum("nk,khw->nhw", weights, basis)
    frac, comps = pca(x)
    assert frac[:2].sum() == pytest.approx(1.0) and frac[0] == pytest.approx(0.9, abs=0.03)
    assert abs(np.sum(comps[0] * basis[0])) == pytest.approx(1.0, abs=1e-3)   # up to sign
    assert n_components(frac, 0.8) == 1 and n_components(frac, 0.95) == 2
    # copies of one pattern: no variance, no component
    flat_frac, _ = pca(np.repeat(x[:1], 3, 0))
    assert n_components(flat_frac) == 0
    with pytest.raises(ValueError, match="stack"):
        pca(x[0])
    with pytest.raises(ValueError, match="target"):
        n_components(frac, 1.5)


# ---------------------------------------------------------------- latent_features
def test_latent_features_find_what_is_rare_only_in_the_pair_of_content_and_angle():
    from rrvae_nb.metrics import latent_features
    from rrvae_nb.model import Encoding

    rng = np.random.default_rng(0)
    n = 1000
    kind = rng.integers(0, 2, n)                   # two kinds of site, equally common
    angle = np.where(kind == 0, 0.0, np.pi) + rng.normal(0, 0.2, n)   # each points its own way
    rare = np.zeros(n, bool)
    rare[:8] = True
    angle[rare] = np.where(kind[rare] == 0, np.pi, 0.0) + rng.normal(0, 0.2, 8)  # the other way
    z = np.c_[kind + rng.normal(0, 0.05, n), rng.normal(0, 1, n)]
    enc = Encoding(angle=angle, angle_std=np.ones(n), z=z, z_std=np.ones_like(z))
    both = roc_auc(knn_rarity(latent_features(enc), k=5), rare)
    content = roc_auc(knn_rarity(z, k=5), rare)
    pose = roc_auc(knn_rarity(latent_features(enc)[:, 2:], k=5), rare)
    # each kind and each direction is common; only the pair is rare: fails if the angle is not
    # put beside the content latents
    assert both > 0.95 and content < 0.75 and pose < 0.75, (both, content, pose)


def test_latent_features_put_the_angle_on_the_circle_of_its_symmetry():
    from rrvae_nb.metrics import latent_features
    from rrvae_nb.model import Encoding

    edge = np.pi / 3 - 1e-3                         # 3-fold: -pi/3 and pi/3 are one pose
    enc = Encoding(angle=np.array([edge, -edge]), angle_std=np.ones(2), z=np.zeros((2, 1)),
                   z_std=np.ones((2, 1)))
    f = latent_features(enc, symmetry=3)
    assert f.shape == (2, 3)
    assert np.abs(f[0] - f[1]).max() < 1e-2, f      # neighbours, not opposite ends
    with pytest.raises(ValueError, match="symmetry"):
        latent_features(enc, symmetry=0)
    with pytest.raises(ValueError, match="encoding.z"):
        latent_features(Encoding(angle=np.zeros(3), angle_std=np.ones(3), z=np.zeros((2, 1)),
                                 z_std=np.ones((2, 1))))
