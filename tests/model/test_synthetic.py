import numpy as np
import pytest

from rrvae_nb.rotate import rotate_patterns
from rrvae_nb.synthetic import circular_correlation, make_templates, rotated_shapes


def test_patterns_are_rotated_templates():
    d = rotated_shapes(50, 24, n_templates=2, noise=0.0, seed=3)
    assert d.patterns.shape == (50, 24, 24) and d.patterns.dtype == np.float32
    assert d.patterns.min() == 0.0 and d.patterns.max() == pytest.approx(1.0)
    back = rotate_patterns(d.patterns, -d.angle)
    inner = np.hypot(*(np.mgrid[:24, :24] - 11.5)) < 8
    err = np.abs(back - d.templates[d.label])[:, inner].max()
    assert err < 0.06


def test_templates_symmetry():
    t = make_templates(3, 24, symmetry=4, seed=2)
    inner = np.hypot(*(np.mgrid[:24, :24] - 11.5)) < 10
    assert np.abs(rotate_patterns(t, np.pi / 2) - t)[:, inner].max() < 0.05
    asym = make_templates(3, 24, symmetry=1, seed=2)
    for a in (np.pi / 2, np.pi, 2 * np.pi / 3):
        assert np.abs(rotate_patterns(asym, a) - asym)[:, inner].max(axis=1).min() > 0.2


def test_circular_correlation():
    rng = np.random.default_rng(0)
    a = rng.uniform(-np.pi, np.pi, 500)
    assert circular_correlation(a, a + 2.0) == pytest.approx(1.0)
    assert circular_correlation(a, 1.0 - a) == pytest.approx(-1.0)
    assert abs(circular_correlation(a, rng.uniform(-np.pi, np.pi, 500))) < 0.15
    noisy = a + rng.normal(0, 0.3, 500)
    assert 0.8 < circular_correlation(a, noisy) < 1.0
