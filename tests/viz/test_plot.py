"""Tests of rrvae_nb.plot: calibrated axes, angle colour scales, what is drawn where, bad input.

No pixel comparisons: each test reads back the artists (image extents, data, colour limits, tick
labels, arrow vectors) and checks them against the calibration and the inputs.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib import colors
from matplotlib.figure import Figure

from rrvae_nb import RrVAE
from rrvae_nb import plot as P
from rrvae_nb.com import COMMaps
from rrvae_nb.model import Encoding
from rrvae_nb.preprocess import Prepared
from rrvae_nb.signals import Calibration

CAL = Calibration(scan_step_nm=0.1, k_step_mrad=2.0, scan_offset_nm=(1.0, 2.0),
                  k_offset_mrad=(-4.0, -6.0))


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def make_prepared(ny=4, nx=6, size=8, seed=0, calibration=CAL):
    rng = np.random.default_rng(seed)
    patterns = rng.random((ny * nx, size, size)).astype(np.float32)
    return Prepared(patterns=patterns, scan_shape=(ny, nx), calibration=calibration,
                    mean_pattern=patterns.mean(0), centre_px=None,
                    k_origin_px=(0.0, 0.0), k_step_px=1.0)


@pytest.fixture(scope="module")
def model():
    return RrVAE((8, 8), 2, encoder_hidden=(16,), decoder_hidden=(16,), seed=0)


def images_of(ax):
    return ax.get_images()


# ------------------------------------------------------------------------------- show_patterns


def test_show_patterns_axes_are_in_mrad_from_the_calibration():
    x = np.random.default_rng(0).random((3, 5, 7))
    fig = P.show_patterns(x, calibration=CAL, ncols=2, titles=["a", "b", "c"])
    assert isinstance(fig, Figure)
    drawn = [ax for ax in fig.axes if ax.get_images()]
    assert len(drawn) == 3
    # pixel (0, 0) centred on k_offset = (-4, -6) mrad; 2 mrad pixels; 7 columns, 5 rows
    for ax in drawn:
        assert ax.get_images()[0].get_extent() == pytest.approx([-7.0, 7.0, 5.0, -5.0])
    assert [ax.get_title() for ax in drawn] == ["a", "b", "c"]
    assert drawn[0].get_images()[0].get_array()[0, 6] == pytest.approx(x[0, 0, 6])
    assert any("mrad" in ax.get_xlabel() for ax in drawn)
    # 3 patterns in 2 columns: 2 rows, the 4th cell is hidden
    assert len(fig.axes) == 4 and not fig.axes[3].axison


def test_show_patterns_scales_and_shared_colour_range():
    x = np.stack([np.linspace(0, 1, 36).reshape(6, 6), 10 * np.linspace(0, 1, 36).reshape(6, 6)])
    fig = P.show_patterns(x, scale="sqrt")
    norms = [ax.get_images()[0].norm for ax in fig.axes]
    assert all(isinstance(n, colors.PowerNorm) for n in norms)
    assert [n.vmax for n in norms] == pytest.approx([1.0, 10.0])  # each panel its own range
    fig = P.show_patterns(x, scale="log", same_scale=True)
    norms = [ax.get_images()[0].norm for ax in fig.axes]
    assert all(isinstance(n, colors.SymLogNorm) for n in norms)
    assert [n.vmax for n in norms] == pytest.approx([10.0, 10.0])
    # sqrt: a quarter of the peak intensity sits half-way up the colour scale
    assert norms[0].vmin == 0.0
    assert P.show_patterns(x[:1], scale="sqrt").axes[0].get_images()[0].norm(0.25) == (
        pytest.approx(0.5))


@pytest.mark.parametrize(
    "bad, match",
    [(np.zeros(5), "shape"), (np.full((2, 4, 4), np.nan), "NaN"), (np.zeros((0, 4, 4)), "empty")],
)
def test_show_patterns_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        P.show_patterns(bad)


def test_show_patterns_rejects_bad_scale_and_titles():
    x = np.ones((2, 4, 4))
    with pytest.raises(ValueError, match="scale"):
        P.show_patterns(x, scale="cubic")
    with pytest.raises(ValueError, match="titles"):
        P.show_patterns(x, titles=["only one"])


# ------------------------------------------------------------------------------------ scan_map


def test_scan_map_extent_is_the_scan_range_in_nm_with_y_down():
    values = np.arange(24.0).reshape(4, 6)
    ax = P.scan_map(values, calibration=CAL, title="t", label="counts")
    (im,) = ax.get_images()
    # probe (i, j) at (1.0 + 0.1 i, 2.0 + 0.1 j) nm: pixel edges half a step outside
    assert im.get_extent() == pytest.approx([1.95, 2.55, 1.35, 0.95])
    width = im.get_extent()[1] - im.get_extent()[0]
    assert width == pytest.approx(6 * CAL.scan_step_nm)
    assert ax.get_ylim() == pytest.approx((1.35, 0.95))  # y increases downwards
    assert np.array_equal(im.get_array(), values)  # row 0 at the top, no flips
    assert ax.get_xlabel() == "x (nm)" and ax.get_ylabel() == "y (nm)"
    assert im.colorbar is not None and im.colorbar.ax.get_ylabel() == "counts"


def test_scan_map_flat_values_go_on_the_prepared_scan_grid():
    prep = make_prepared()
    ax = P.scan_map(np.arange(24.0), prepared=prep)
    (im,) = ax.get_images()
    assert im.get_array()[1, 2] == 1 * 6 + 2  # row-major, scan x fastest
    assert im.get_extent() == pytest.approx([1.95, 2.55, 1.35, 0.95])
    ax = P.scan_map(np.ones((4, 6)))
    assert ax.get_images()[0].get_extent() == pytest.approx([-0.5, 5.5, 3.5, -0.5])
    assert "scan px" in ax.get_xlabel()


@pytest.mark.parametrize("n", [1, 3, 6])
def test_cyclic_map_spans_one_period_in_degrees(n):
    angles = np.array([[0.1, 2 * math.pi / n + 0.1], [-0.2, 0.0]])  # 2nd equals the 1st mod 2pi/n
    ax = P.scan_map(angles, calibration=CAL, cyclic=True, symmetry=n)
    (im,) = ax.get_images()
    assert im.get_clim() == pytest.approx((-math.pi / n, math.pi / n))
    assert im.get_cmap().name == "twilight"
    assert im.get_array()[0, 1] == pytest.approx(0.1)
    cb = im.colorbar
    labels = [t.get_text() for t in cb.ax.get_yticklabels()]
    assert labels[0] == f"{-180 / n:.3g}°" and labels[-1] == f"{180 / n:.3g}°"
    assert cb.get_ticks() == pytest.approx(np.radians(np.linspace(-180 / n, 180 / n, 5)))


def test_scan_map_draws_atoms_and_defects_at_their_positions():
    atoms = np.array([[1.1, 2.2], [1.2, 2.4], [5.0, 5.0]])  # the last one lies outside the scan
    ax = P.scan_map(np.zeros((4, 6)), calibration=CAL, atoms=atoms,
                    defects=np.array([False, True, False]))
    limits = ax.get_xlim(), ax.get_ylim()
    assert limits == (pytest.approx((1.95, 2.55)), pytest.approx((1.35, 0.95)))
    offsets = [c.get_offsets() for c in ax.collections]
    # drawn as (x, y): plain atoms in white rings, the defect in red
    assert any(np.allclose(o, [[2.2, 1.1], [5.0, 5.0]]) for o in offsets)
    red = [c for c in ax.collections
           if np.allclose(c.get_edgecolor()[0], colors.to_rgba(P.DEFECT_COLOR))]
    assert len(red) == 1 and np.allclose(red[0].get_offsets(), [[2.4, 1.2]])
    # defects as positions
    ax = P.scan_map(np.zeros((4, 6)), calibration=CAL, defects=np.array([[1.3, 2.1]]))
    assert np.allclose(ax.collections[-1].get_offsets(), [[2.1, 1.3]])


def test_scan_map_rejects_bad_input():
    prep = make_prepared()
    with pytest.raises(ValueError, match="prepared"):
        P.scan_map(np.arange(24.0))
    with pytest.raises(ValueError, match="scan is"):
        P.scan_map(np.ones((3, 3)), prepared=prep)
    with pytest.raises(ValueError, match="shape"):
        P.scan_map(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="same length"):
        P.scan_map(np.ones((4, 6)), atoms=np.zeros((2, 2)), defects=np.array([True]))
    with pytest.raises(ValueError, match="symmetry"):
        P.scan_map(np.ones((4, 6)), cyclic=True, symmetry=0)
    with pytest.raises(ValueError, match="Calibration"):
        P.scan_map(np.ones((4, 6)), calibration=0.1)


# --------------------------------------------------------------------------------- latent_maps


def test_latent_maps_one_angle_panel_and_one_per_latent():
    prep = make_prepared()
    rng = np.random.default_rng(1)
    enc = Encoding(angle=rng.uniform(-0.5, 0.5, 24), angle_std=np.full(24, 0.1),
                   z=rng.normal(size=(24, 3)), z_std=np.full((24, 3), 0.1))
    fig = P.latent_maps(enc, prep, symmetry=6, title="graphene")
    assert isinstance(fig, Figure)
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 4
    angle_im = panels[0].get_images()[0]
    assert angle_im.get_clim() == pytest.approx((-math.pi / 6, math.pi / 6))
    assert np.allclose(angle_im.get_array(), prep.to_map(enc.angle))
    for i, ax in enumerate(panels[1:]):
        assert np.allclose(ax.get_images()[0].get_array(), prep.to_map(enc.z[:, i]))
        assert f"z{i + 1}" in ax.get_title()
        assert ax.get_images()[0].get_extent() == pytest.approx([1.95, 2.55, 1.35, 0.95])
    assert fig.get_suptitle() == "graphene"


# ----------------------------------------------------------------------------- manifold_mosaic


def test_manifold_mosaic_ticks_are_the_latent_values(model):
    n, extent = 5, 1.5
    ax = P.manifold_mosaic(model, n=n, extent=extent, angle=0.3)
    values = np.linspace(-extent, extent, n)
    assert ax.get_xticks() == pytest.approx(values)
    assert ax.get_yticks() == pytest.approx(values)
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"{v:.3g}" for v in values]
    (im,) = ax.get_images()
    half = extent + (values[1] - values[0]) / 2
    assert im.get_extent() == pytest.approx([-half, half, -half, half])
    # the top-left tile is z1 = -extent, z2 = +extent (z2 increases upwards)
    tiles = model.manifold(n=n, extent=extent, angle=0.3)
    mosaic = np.asarray(im.get_array())
    assert np.allclose(mosaic[:8, :8], tiles[0, 0])
    top_left = model.decode(np.array([-extent, extent]), angle=0.3)
    assert np.allclose(mosaic[:8, :8], top_left, atol=1e-6)
    assert "z1" in ax.get_xlabel() and "z2" in ax.get_ylabel()


def test_manifold_mosaic_one_latent_and_bad_n():
    one = RrVAE((8, 8), 1, encoder_hidden=(8,), decoder_hidden=(8,))
    ax = P.manifold_mosaic(one, n=4)
    assert ax.get_images()[0].get_array().shape == (8, 32)
    assert len(ax.get_yticks()) == 0
    with pytest.raises(ValueError, match="n must"):
        P.manifold_mosaic(one, n=1)


# ----------------------------------------------------------------------------- angle_histogram


def test_angle_histogram_counts_and_period():
    rng = np.random.default_rng(0)
    angles = 0.3 + 0.02 * rng.normal(size=500)
    ax = P.angle_histogram(angles, symmetry=6, bins=36, label="learned")
    assert ax.name == "polar"
    bars = ax.patches[:36]
    heights = np.array([b.get_height() for b in bars])
    assert heights.sum() == 500
    left = np.array([b.get_x() for b in bars])
    peak = left[heights.argmax()]
    assert peak <= 0.3 < peak + 2 * np.pi / 36
    # the period edges +-pi/6 are drawn as dashed radial lines
    edges = sorted(line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--")
    assert edges == pytest.approx([-math.pi / 6, math.pi / 6])
    # overlaying a second set adds bars but no second period marking
    P.angle_histogram(angles + 1.0, symmetry=6, bins=36, ax=ax, label="true")
    assert len([ln for ln in ax.lines if ln.get_linestyle() == "--"]) == 2


def test_angle_histogram_bad_input():
    _, ax = plt.subplots()
    with pytest.raises(ValueError, match="polar"):
        P.angle_histogram([0.1], ax=ax)
    with pytest.raises(ValueError, match="empty"):
        P.angle_histogram([])


# --------------------------------------------------------------------------------- com_vectors


def test_com_arrows_point_towards_the_atom_on_screen():
    # COM towards an atom at (y, x) = (1.25, 2.33) nm, in the scan frame of CAL
    ny, nx = 6, 8
    y = CAL.scan_offset_nm[0] + CAL.scan_step_nm * np.arange(ny)[:, None]
    x = CAL.scan_offset_nm[1] + CAL.scan_step_nm * np.arange(nx)[None, :]
    atom = np.array([1.25, 2.33])
    com = COMMaps(com_y=(atom[0] - y) * np.ones((1, nx)), com_x=(atom[1] - x) * np.ones((ny, 1)),
                  units="mrad")
    ax = P.com_vectors(com, calibration=CAL, atoms=atom[None])
    q = ax.collections[0]
    assert np.allclose(q.U, com.com_x.ravel()) and np.allclose(q.V, -com.com_y.ravel())
    assert np.allclose(q.get_offsets()[:, 0], np.broadcast_to(x, (ny, nx)).ravel())
    # on screen (display coordinates, y up) every arrow points at the atom
    ax.figure.canvas.draw()  # applies the equal aspect
    base = ax.transData.transform(q.get_offsets())
    target = ax.transData.transform(atom[::-1][None])
    to_atom = target - base
    arrow = np.stack([q.U, q.V], axis=1)
    keep = np.hypot(*arrow.T) > 1e-9
    cosine = np.sum(to_atom * arrow, 1)[keep] / (
        np.hypot(*to_atom[keep].T) * np.hypot(*arrow[keep].T))
    assert np.all(cosine > 0.999)
    assert ax.get_xlabel() == "x (nm)"
    # subsampling and the COM's own scan step
    com2 = COMMaps(com_y=com.com_y, com_x=com.com_x, units="mrad", scan_step_nm=0.2)
    ax = P.com_vectors(com2, step=2, color_by_angle=False)
    assert len(ax.collections[0].get_offsets()) == 3 * 4
    assert ax.collections[0].get_offsets()[1] == pytest.approx([0.4, 0.0])


def test_com_vectors_rejects_mismatched_maps():
    with pytest.raises(ValueError, match="same shape"):
        P.com_vectors(COMMaps(com_y=np.zeros((2, 3)), com_x=np.zeros((3, 2)), units="px"))


# ------------------------------------------------------------------- training / reconstructions


def test_training_curves_plot_the_history():
    history = {"train_loss": [5.0, 3.0, 2.0, 1.5], "val_loss": [5.5, 3.5, 2.5, 2.0],
               "kl_weight": [0.0, 0.5, 1.0, 1.0]}
    ax = P.training_curves(history)
    train, val = ax.get_lines()[:2]
    assert list(train.get_xdata()) == [1, 2, 3, 4]
    assert list(train.get_ydata()) == history["train_loss"]
    assert list(val.get_ydata()) == history["val_loss"]
    assert any("warm-up" in t.get_text() for t in ax.get_legend().get_texts())
    with pytest.raises(ValueError, match="train"):
        P.training_curves({"train_loss": []})


def test_reconstructions_rows_are_input_reconstruction_difference(model):
    prep = make_prepared(size=8)
    fig = P.reconstructions(model, prep, idx=[0, 5, 23])
    assert isinstance(fig, Figure)
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 9
    recon = model.reconstruct(prep.patterns[[0, 5, 23]])
    arr = [np.asarray(ax.get_images()[0].get_array()) for ax in panels]
    assert np.allclose(arr[1], prep.patterns[5])
    assert np.allclose(arr[4], recon[1], atol=1e-6)
    assert np.allclose(arr[8], prep.patterns[23] - recon[2], atol=1e-6)
    assert panels[0].get_title() == "#0"
    assert panels[0].get_images()[0].get_extent() == pytest.approx([-7.0, 9.0, 11.0, -5.0])
    assert len(P.reconstructions(model, prep.patterns, n=4).axes) == 12 + 2  # + colour bars
    with pytest.raises(ValueError, match="out of range"):
        P.reconstructions(model, prep, idx=[99])


def test_extents_of_rectangular_pixels_are_drawn_to_scale():
    rect = Calibration(scan_step_nm=(0.1, 0.3), k_step_mrad=(1.0, 2.0), scan_offset_nm=(1.0, 2.0),
                       k_offset_mrad=(-4.0, -6.0))
    assert P.scan_extent((5, 4), rect) == pytest.approx((1.85, 3.05, 1.45, 0.95))
    assert P.pattern_extent((9, 7), rect) == pytest.approx((-7.0, 7.0, 4.5, -4.5))
    com = COMMaps(com_y=np.ones((5, 4)), com_x=np.zeros((5, 4)), units="mrad",
                  scan_step_nm=(0.1, 0.3))
    ax = P.com_vectors(com)
    assert ax.get_xlim() == pytest.approx((-0.15, 1.05))
    plt.close(ax.figure)
