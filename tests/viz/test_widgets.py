"""Tests of rrvae_nb.widgets: the explorer reacts to position and decoder changes with the right
data, clicks select the nearest probe position, and the static figure has one column per position.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

ipywidgets = pytest.importorskip("ipywidgets")

from rrvae_nb import RrVAE  # noqa: E402
from rrvae_nb import widgets as W  # noqa: E402
from rrvae_nb.preprocess import Prepared  # noqa: E402
from rrvae_nb.signals import Calibration  # noqa: E402

CAL = Calibration(scan_step_nm=0.1, k_step_mrad=2.0, scan_offset_nm=(1.0, 2.0),
                  k_offset_mrad=(-7.0, -7.0))
NY, NX, SIZE = 4, 6, 8


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def model():
    return RrVAE((SIZE, SIZE), 2, encoder_hidden=(16,), decoder_hidden=(16,), seed=0)


@pytest.fixture(scope="module")
def prepared():
    rng = np.random.default_rng(0)
    patterns = rng.random((NY * NX, SIZE, SIZE)).astype(np.float32)
    return Prepared(patterns=patterns, scan_shape=(NY, NX), calibration=CAL,
                    mean_pattern=patterns.mean(0), centre_px=None, k_origin_px=(0.0, 0.0),
                    k_step_px=1.0)


@pytest.fixture(scope="module")
def encoding(model, prepared):
    return model.encode(prepared.patterns)


def shown_latents(ex) -> list[float]:
    """Numbers in the latent table: angle (deg), its std, z1, std, z2, std."""
    import re

    numbers = []
    for row in re.findall(r"<tr>(.*?)</tr>", ex.latents.value):
        _, value, std = re.findall(r"<td[^>]*>([^<]*)</td>", row)
        numbers += [float(re.search(r"[-+]?[\d.]+(e[-+]?\d+)?", c).group()) for c in (value, std)]
    return numbers


def test_explorer_position_change_updates_pattern_and_latents(model, prepared, encoding):
    ex = W.explorer(model, prepared, encoding=encoding, clickable=False)
    assert isinstance(ex, ipywidgets.Widget)
    assert len(ex.tabs.children) == 2
    assert isinstance(ex.map_view, ipywidgets.Image) and ex.map_view.value[:4] == b"\x89PNG"
    before_png = ex.pattern_image.value
    before_map = ex.map_view.value

    ex.iy.value, ex.ix.value = 1, 4  # what moving the sliders does
    i = 1 * NX + 4
    assert ex.index == i
    assert np.array_equal(ex.pattern, prepared.patterns[i])
    expected = model.decode(encoding.z[i], angle=float(encoding.angle[i]))
    assert np.allclose(ex.reconstruction, expected, atol=1e-6)
    angle, angle_std, z1, _, z2, _ = shown_latents(ex)
    assert angle == pytest.approx(math.degrees(encoding.angle[i]), abs=0.051)
    assert angle_std == pytest.approx(math.degrees(encoding.angle_std[i]), abs=0.051)
    assert z1 == pytest.approx(encoding.z[i, 0], abs=5.1e-4)
    assert z2 == pytest.approx(encoding.z[i, 1], abs=5.1e-4)
    assert "y = 1.1 nm, x = 2.4 nm" in ex.latents.value
    assert ex.pattern_image.value != before_png and ex.map_view.value != before_map
    # the marker sits on the selected probe position, in nm
    assert ex._marker.get_xdata()[0] == pytest.approx(2.4)
    assert ex._marker.get_ydata()[0] == pytest.approx(1.1)


def test_explorer_select_and_initial_position(model, prepared, encoding):
    ex = W.explorer(model, prepared, encoding=encoding, clickable=False, position=(3, 0))
    assert (ex.iy.value, ex.ix.value) == (3, 0)
    assert np.array_equal(ex.pattern, prepared.patterns[3 * NX])
    with pytest.raises(ValueError, match="outside"):
        ex.select(NY, 0)


def test_decoder_tab_renders_the_slider_latents_and_turns_with_the_angle(model, prepared,
                                                                          encoding):
    ex = W.explorer(model, prepared, encoding=encoding, clickable=False)
    png0 = ex.decoded_image.value
    ex.z_sliders[0].value = 1.0
    ex.z_sliders[1].value = -0.5
    at_zero = model.decode(np.array([1.0, -0.5]), angle=0.0)
    assert np.allclose(ex.decoded, at_zero, atol=1e-6)
    assert ex.decoded_image.value != png0
    ex.angle_slider.value = 90.0
    # +90 degrees turns the displayed pattern counter-clockwise: numpy's rot90
    assert np.allclose(ex.decoded, np.rot90(at_zero), atol=1e-4)
    ex.select(2, 5)
    ex.copy_position_latents()
    i = 2 * NX + 5
    assert [s.value for s in ex.z_sliders] == pytest.approx(encoding.z[i], abs=1e-6)
    assert ex.angle_slider.value == round(math.degrees(encoding.angle[i]))


def test_click_on_the_map_selects_the_nearest_position(model, prepared, encoding):
    pytest.importorskip("ipympl")
    from matplotlib.backend_bases import MouseEvent

    ex = W.explorer(model, prepared, encoding=encoding, clickable=True)
    assert ex.clickable
    canvas = ex.map_view
    canvas.draw()
    # a click 0.03 nm from probe (2, 3) at (y, x) = (1.2, 2.3) nm
    x, y = ex._map_ax.transData.transform((2.33, 1.18))
    MouseEvent("button_press_event", canvas, x, y, button=1)._process()
    assert (ex.iy.value, ex.ix.value) == (2, 3)
    assert np.array_equal(ex.pattern, prepared.patterns[2 * NX + 3])


def test_clickable_map_leaves_the_pyplot_backend_alone(model, prepared, encoding, monkeypatch):
    pytest.importorskip("ipympl")
    import sys

    import matplotlib

    for name in [m for m in sys.modules if m == "ipympl" or m.startswith("ipympl.")]:
        monkeypatch.delitem(sys.modules, name)  # so that importing ipympl runs its __init__ again
    before = matplotlib.get_backend()
    # what pyplot makes before the explorer (another test in this worker may have set it)
    canvas_before = type(plt.figure().canvas).__module__
    ex = W.explorer(model, prepared, encoding=encoding, clickable=True)
    assert ex.clickable and "ipympl" in type(ex.map_view).__module__
    assert matplotlib.get_backend() == before
    assert type(plt.figure().canvas).__module__ == canvas_before


def test_background_map_is_what_the_map_shows(model, prepared, encoding):
    ex = W.explorer(model, prepared, encoding=encoding, clickable=False,
                    background=encoding.z[:, 1])
    (im,) = ex._map_ax.get_images()
    assert np.allclose(im.get_array(), prepared.to_map(encoding.z[:, 1]))
    ex = W.explorer(model, prepared, encoding=encoding, clickable=False, symmetry=6)
    (im,) = ex._map_ax.get_images()  # default: the angle map over one period
    assert im.get_clim() == pytest.approx((-math.pi / 6, math.pi / 6))


def test_explorer_figure_one_column_per_position(model, prepared, encoding):
    positions = [(0, 1), (2, 3), (3, 5)]
    fig = W.explorer_figure(model, prepared, positions, encoding=encoding)
    assert isinstance(fig, Figure)
    panels = [ax for ax in fig.axes if ax.get_images()]
    map_ax, patterns = panels[0], panels[1:]
    assert len(patterns) == 2 * len(positions)
    columns = sorted({round(ax.get_position().x0, 3) for ax in patterns})
    assert len(columns) == len(positions)
    titles = [ax.get_title() for ax in patterns if ax.get_title()]
    assert titles == ["1: (0, 1)", "2: (2, 3)", "3: (3, 5)"]
    i = 2 * NX + 3
    assert np.array_equal(patterns[2].get_images()[0].get_array(), prepared.patterns[i])
    assert f"{math.degrees(encoding.angle[i]):+.1f}°" in patterns[3].get_xlabel()
    assert f"{encoding.z[i, 1]:+.3f}" in patterns[3].get_xlabel()
    marks = np.array([(ln.get_xdata()[0], ln.get_ydata()[0]) for ln in map_ax.get_lines()])
    assert np.allclose(marks, [(2.1, 1.0), (2.3, 1.2), (2.5, 1.3)])  # (x, y) in nm
    assert patterns[0].get_images()[0].get_extent() == pytest.approx([-8, 8, 8, -8])


def test_bad_input_is_refused(model, prepared, encoding):
    bare = Prepared(patterns=prepared.patterns, scan_shape=None, calibration=None,
                    mean_pattern=prepared.mean_pattern, centre_px=None,
                    k_origin_px=(0.0, 0.0), k_step_px=1.0)
    with pytest.raises(ValueError, match="scan_shape"):
        W.explorer(model, bare, clickable=False)
    other = RrVAE((6, 6), 2, encoder_hidden=(8,), decoder_hidden=(8,))
    with pytest.raises(ValueError, match="built for"):
        W.explorer_figure(other, prepared, [(0, 0)])
    with pytest.raises(ValueError, match="encoding"):
        W.explorer(model, prepared, encoding=model.encode(prepared.patterns[:5]),
                   clickable=False)
    with pytest.raises(ValueError, match="outside"):
        W.explorer_figure(model, prepared, [(0, NX)], encoding=encoding)
    with pytest.raises(ValueError, match="non-empty"):
        W.explorer_figure(model, prepared, [], encoding=encoding)


def test_explorer_class_at_module_level_and_map_fits_a_column(model, prepared, encoding):
    from rrvae_nb import _explorer

    assert W.Explorer is _explorer.Explorer
    ex = W.explorer(model, prepared, encoding=encoding, clickable=False)
    assert isinstance(ex, _explorer.Explorer)
    # the PNG map scales with its column, up to its own width (no fixed pixel width)
    assert ex.map_view.layout.width == "100%"
    assert ex.map_view.layout.max_width.endswith("px")
    assert int(ex.map_view.layout.max_width[:-2]) <= 400
    assert ex.tabs.children[0].layout.flex_flow == "row wrap"
    # the map has a title and a labelled colour bar, like plot.scan_map's static figure
    map_ax, colorbar_ax = ex._map_fig.axes
    assert map_ax.get_title().startswith("angle latent")
    assert colorbar_ax.get_ylabel() == "angle (°)"
    bg = W.explorer(model, prepared, encoding=encoding, clickable=False,
                    background=np.arange(NY * NX, dtype=float), map_title="dark field",
                    map_label="counts")
    map_ax, colorbar_ax = bg._map_fig.axes
    assert map_ax.get_title() == "dark field" and colorbar_ax.get_ylabel() == "counts"
    fig = W.explorer_figure(model, prepared, [(0, 0)], encoding=encoding,
                            background=np.arange(NY * NX, dtype=float))
    assert fig.axes[0].get_title() == W.BACKGROUND_TITLE
