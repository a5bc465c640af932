import numpy as np
import pytest
import torch

from rrvae_nb.rotate import (
    coordinate_grid,
    pose_coordinates,
    rotate_patterns,
    sample_at_pose,
    translation_to_pixels,
    wrap_angle,
)


def spot(size=21, row=10, col=16, width=1.2):
    yy, xx = np.mgrid[:size, :size]
    return np.exp(-((yy - row) ** 2 + (xx - col) ** 2) / (2 * width**2)).astype(np.float32)


def centroid(img):
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    return np.array([(yy * img).sum(), (xx * img).sum()]) / img.sum()


def test_positive_angle_turns_counter_clockwise_on_screen():
    img = spot()  # right of the centre (row 10, col 16 of 21)
    out = rotate_patterns(img, np.pi / 2, order=1)
    r, c = centroid(out)
    assert r == pytest.approx(4.0, abs=0.05) and c == pytest.approx(10.0, abs=0.05)  # now on top
    np.testing.assert_allclose(out, np.rot90(img), atol=1e-5)


def test_rotation_round_trip_and_composition(rng):
    img = spot(33, 12, 22, 2.5) + spot(33, 20, 9, 3.0)
    # two bicubic interpolations of spots 2.5 px wide cost about 3 % of the peak
    back = rotate_patterns(rotate_patterns(img, 0.7), -0.7)
    inner = np.hypot(*(np.mgrid[:33, :33] - 16)) < 12
    assert np.abs(back - img)[inner].max() < 0.04
    twice = rotate_patterns(rotate_patterns(img, 0.3), 0.4)
    once = rotate_patterns(img, 0.7)
    assert np.abs(twice - once)[inner].max() < 0.04
    assert np.abs(once - img)[inner].max() > 0.5  # and the rotation did move things


def test_rotation_moves_a_spot_along_a_circle():
    img = spot(41, 20, 32, 1.5)  # radius 12 px, azimuth 0
    for angle in np.linspace(-3, 3, 7):
        r, c = centroid(rotate_patterns(img, angle))
        assert c - 20 == pytest.approx(12 * np.cos(angle), abs=0.2)
        assert 20 - r == pytest.approx(12 * np.sin(angle), abs=0.2)  # y up = -row


def test_per_pattern_angles_and_types():
    imgs = np.stack([spot(), spot()])
    out = rotate_patterns(imgs, [0.0, np.pi / 2], order=1)
    np.testing.assert_allclose(out[0], imgs[0], atol=1e-6)
    np.testing.assert_allclose(out[1], np.rot90(imgs[1]), atol=1e-5)
    t = rotate_patterns(torch.from_numpy(imgs), np.pi / 2, order=1)
    assert isinstance(t, torch.Tensor)
    with pytest.raises(ValueError, match="square"):
        rotate_patterns(np.zeros((2, 4, 5)), 0.1)
    with pytest.raises(ValueError, match="one per pattern"):
        rotate_patterns(imgs, [0.1, 0.2, 0.3])


def test_translation_convention():
    img = torch.from_numpy(spot(21, 10, 10))[None]
    half = 10.0
    # (tx, ty) = (+3 px right, +2 px up) in normalised units
    t = torch.tensor([[3 / half, 2 / half]])
    moved = sample_at_pose(img, torch.zeros(1), t)[0].numpy()
    np.testing.assert_allclose(centroid(moved), [8.0, 13.0], atol=0.05)
    np.testing.assert_allclose(translation_to_pixels(t.numpy(), 21), [[-2.0, 3.0]], atol=1e-6)


def test_grid_and_wrap():
    g = coordinate_grid(5)
    assert g[0, 0].tolist() == [-1.0, 1.0] and g[4, 4].tolist() == [1.0, -1.0]
    a = np.linspace(-10, 10, 101)
    for n in (1, 3, 6):
        w = wrap_angle(a, n)
        assert np.all(w >= -np.pi / n) and np.all(w < np.pi / n)
        np.testing.assert_allclose(np.exp(1j * n * w), np.exp(1j * n * a), atol=1e-9)


def test_rendering_samples_the_canonical_image_where_pose_coordinates_say(rng):
    # The image decoder (sample_at_pose) and the spatial decoder (pose_coordinates) must agree
    # on where a pixel at pose (angle, t) looks in the canonical frame, rotation and
    # translation together, and the angle must get a gradient through the rendering.
    size = 17
    img = torch.from_numpy(spot(size, 5, 11, 2.0) + 0.5 * spot(size, 12, 6, 1.5))
    imgs = img.expand(3, size, size).contiguous()
    angle = torch.tensor([0.4, -2.1, 3.0], requires_grad=True)
    t = torch.tensor([[0.1, -0.2], [0.0, 0.3], [-0.25, 0.05]])
    out = sample_at_pose(imgs, angle, t)
    q = pose_coordinates(coordinate_grid(size), angle.detach(), t)
    gs = torch.stack([q[..., 0], -q[..., 1]], dim=-1)  # grid_sample's y points down
    ref = torch.nn.functional.grid_sample(
        imgs[:, None], gs, padding_mode="border", align_corners=True)[:, 0]
    np.testing.assert_allclose(out.detach().numpy(), ref.numpy(), atol=1e-5)
    (out * torch.from_numpy(rng.normal(size=(3, size, size)).astype(np.float32))).sum().backward()
    assert torch.all(angle.grad.abs() > 1e-4)


# ---------------------------------------------------------------- circ_diff and to_polar
def test_circ_diff_takes_the_short_way_round():
    from rrvae_nb.rotate import circ_diff

    d = circ_diff(np.radians([350.0, 10.0, 180.0]), np.radians([10.0, 350.0, 0.0]))
    np.testing.assert_allclose(np.degrees(d), [-20.0, 20.0, -180.0], atol=1e-9)
    assert np.all(d >= -np.pi) and np.all(d < np.pi)


def test_to_polar_turns_a_rotation_into_a_shift_along_the_azimuth():
    from rrvae_nb.rotate import to_polar

    size, n_phi = 33, 72
    img = spot(size=size, row=16, col=26, width=1.5)       # a spot to the right of the centre
    polar = to_polar(img, n_r=16, n_phi=n_phi)
    assert polar.shape == (16, n_phi)
    # the spot sits at azimuth 0 (+kx) at radius 10 px
    assert np.argmax(polar.max(0)) == 0
    # a spot above the centre is at +90 deg: azimuths run counter-clockwise on screen
    up = to_polar(spot(size=size, row=6, col=16, width=1.5), n_phi=n_phi)
    assert np.argmax(up.max(0)) == n_phi // 4
    # turning by 50 deg shifts the profile by 10 of the 72 azimuth steps (a broad spot, so that
    # the two interpolations differ little)
    broad = spot(size=size, row=16, col=24, width=3.0)
    turned = to_polar(rotate_patterns(broad, np.radians(50), order=1), n_phi=n_phi)
    np.testing.assert_allclose(turned, np.roll(to_polar(broad, n_phi=n_phi), 10, axis=1), atol=0.05)
    assert np.abs(turned - to_polar(broad, n_phi=n_phi)).max() > 0.5   # ...and it did move


def test_to_polar_refuses_a_stack_with_a_clear_message():
    from rrvae_nb.rotate import to_polar

    with pytest.raises(ValueError, match="one at a time"):
        to_polar(np.zeros((2, 8, 8)))
