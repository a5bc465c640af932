"""The encoders' symmetry properties, for every weight setting (networks.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rrvae_nb as rr
from rrvae_nb.metrics import angle_agreement
from rrvae_nb.networks import EquivariantEncoder
from rrvae_nb.rotate import rotate_patterns
from rrvae_nb.synthetic import make_templates, rotated_shapes

SIZE = 32


def circ_diff(a, b, period=2 * np.pi):
    """Signed difference a - b wrapped to [-period/2, period/2)."""
    return np.mod(np.asarray(a) - np.asarray(b) + period / 2, period) - period / 2


def _disk_patterns(n=24, seed=0):
    """Rotated shapes inside the inscribed circle, so that no corner leaves the frame."""
    data = rotated_shapes(n, SIZE, n_templates=3, seed=seed)
    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    return (data.patterns * (np.hypot(yy, xx) < SIZE / 2 - 2)).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("theta_deg", [17.0, 90.0, 143.0, -61.0])
def test_learned_pose_turns_with_the_input_for_any_weights(seed, theta_deg):
    """Rotating the input by any angle (not only multiples of 90 degrees) shifts the learned
    pose by that angle, for random weights: equivariance is built in, not learned."""
    torch.manual_seed(seed)
    enc = EquivariantEncoder(SIZE, 7, (32,), symmetry=1)
    with torch.no_grad():  # weights far from their initial values, still equivariant
        for p in enc.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x = _disk_patterns(seed=seed)
    theta = np.radians(theta_deg)
    with torch.no_grad():
        base = enc.pose(torch.from_numpy(x)).numpy()
        turned = enc.pose(torch.from_numpy(rotate_patterns(x, theta, order=3))).numpy()
    err = np.degrees(np.abs(circ_diff(turned - base, theta)))
    assert np.median(err) < 3.0, np.median(err)


def test_learned_pose_with_symmetry_n_is_defined_modulo_two_pi_over_n():
    n = 3
    torch.manual_seed(0)
    enc = EquivariantEncoder(SIZE, 7, (32,), symmetry=n)
    x = _disk_patterns(seed=3)
    with torch.no_grad():
        base = enc.pose(torch.from_numpy(x)).numpy()
        for theta in (0.5, 1.7, -2.4):
            turned = enc.pose(torch.from_numpy(rotate_patterns(x, theta, order=3))).numpy()
            err = np.degrees(np.abs(circ_diff(turned - base, theta, 2 * np.pi / n)))
            assert np.median(err) < 3.0, (theta, np.median(err))
    assert np.all(np.abs(base) <= np.pi / n + 1e-6)


def test_every_weight_that_decides_the_pose_gets_gradients():
    """Unlike the polar encoder's fixed first-moment pose, the learned pose is trained: a
    training loss reaches the polar convolutions and the harmonic's mixing weights."""
    torch.manual_seed(0)
    model = rr.RrVAE((SIZE, SIZE), 2, encoder="equivariant")
    x = torch.from_numpy(_disk_patterns())
    model.calibrate_inputs(x)
    loss = rr.train.Trace_ELBO().differentiable_loss(model.model, model.guide, x)
    loss.backward()
    enc = model.encoder
    for name in ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "pose_mix"):
        grad = dict(enc.named_parameters())[name].grad
        assert grad is not None and torch.count_nonzero(grad) > 0, name


@pytest.mark.parametrize("encoder", ["equivariant", "polar"])
def test_model_angle_is_equivariant_and_content_invariant_at_any_weights(encoder):
    """The whole guide, untrained: angle shifts by theta, z stays (within interpolation)."""
    model = rr.RrVAE((SIZE, SIZE), 2, encoder=encoder, seed=4)
    x = _disk_patterns(seed=5)
    model.calibrate_inputs(x)
    base = model.encode(x)
    spread = base.z.std(0).mean()
    assert spread > 1e-3  # content outputs differ between patterns (else the test is empty)
    for theta in (np.radians(33), np.radians(-128)):
        rot = model.encode(rotate_patterns(x, theta, order=3))
        err = np.degrees(np.abs(circ_diff(rot.angle - base.angle, theta)))
        assert np.median(err) < 3.0, np.median(err)
        move = np.abs(rot.z - base.z).mean()
        assert move < 0.15 * spread, (move, spread)


def test_calibrate_inputs_sets_the_encoder_scaling_from_the_data():
    x = (0.5 + 0.02 * np.random.default_rng(0).standard_normal((50, 16, 16))).astype(np.float32)
    model = rr.RrVAE((16, 16), 2)
    assert not bool(model.input_calibrated)
    model.calibrate_inputs(x)
    assert bool(model.input_calibrated)
    assert float(model.input_offset) == pytest.approx(x.mean(), abs=1e-5)
    assert float(model.input_scale) == pytest.approx(x.std(), rel=1e-4)
    with pytest.raises(ValueError, match="constant"):
        model.calibrate_inputs(np.full((4, 16, 16), 0.3, np.float32))


def test_models_saved_before_input_scaling_load_unchanged(tmp_path):
    """Files without the input-scaling buffers (older releases) load with offset 0, scale 1,
    which is exactly how those models saw their inputs."""
    model = rr.RrVAE((16, 16), 2, encoder="polar")
    path = model.save(tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    for key in ("input_offset", "input_scale", "input_calibrated"):
        del payload["state_dict"][key]
    torch.save(payload, path)
    old = rr.RrVAE.load(path)
    assert float(old.input_offset) == 0.0 and float(old.input_scale) == 1.0
    assert not bool(old.input_calibrated)
    x = make_templates(3, 16, seed=0).astype(np.float32)
    np.testing.assert_array_equal(old.encode(x).z, model.encode(x).z)


@pytest.mark.slow
def test_what_training_changes_for_the_learned_encoder():
    """On rotated copies of three templates, exact equivariance already fixes the angles
    *within* a template at initialisation (each template's angle is the true one plus an
    offset): that is architecture, not learning. Training adds the rest: content latents that
    tell the templates apart, and a reconstruction at the encoded pose."""
    size = 24
    templates = make_templates(3, size, seed=0)
    data = rotated_shapes(600, size, templates=templates, seed=0)
    held = rotated_shapes(90, size, templates=templates, seed=7)
    model = rr.RrVAE((size, size), 2, encoder="equivariant", seed=0)
    model.calibrate_inputs(data.patterns)

    def offsets_spread_deg(enc):
        worst = 0.0
        for k in range(3):
            d = circ_diff(enc.angle[held.label == k], held.angle[held.label == k])
            offset = np.angle(np.mean(np.exp(1j * d)))
            worst = max(worst, np.degrees(np.median(np.abs(circ_diff(d, offset)))))
        return worst

    def separation(enc):
        cents = np.stack([enc.z[held.label == k].mean(0) for k in range(3)])
        pred = np.argmin(np.linalg.norm(enc.z[:, None] - cents[None], axis=-1), axis=1)
        return np.mean(pred == held.label)

    before = model.encode(held.patterns)
    err_before = np.mean((model.reconstruct(held.patterns) - held.patterns) ** 2)
    rr.fit(model, data.patterns, epochs=30, batch_size=64, lr=3e-3, progress=False)
    after = model.encode(held.patterns)
    err_after = np.mean((model.reconstruct(held.patterns) - held.patterns) ** 2)
    assert offsets_spread_deg(before) < 8 and offsets_spread_deg(after) < 8  # architecture
    assert separation(after) == 1.0                                            # learned
    assert err_after < 0.2 * err_before and err_after < 0.2 * np.var(held.patterns)


def test_input_scaling_travels_with_the_model(tmp_path):
    """Saved, loaded and pickled models (stream.encode_maps ships them pickled) keep the input
    scaling, so they encode exactly as the original."""
    import pickle

    x = _disk_patterns(seed=6)
    model = rr.RrVAE((SIZE, SIZE), 2, encoder="equivariant", seed=2).calibrate_inputs(x)
    for copy in (rr.RrVAE.load(model.save(tmp_path / "m.pt")),
                 pickle.loads(pickle.dumps(model))):
        assert bool(copy.input_calibrated)
        np.testing.assert_array_equal(copy.encode(x).z, model.encode(x).z)
        np.testing.assert_array_equal(copy.encode(x).angle, model.encode(x).angle)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 3])
def test_what_training_changes_for_the_default_encoder_on_graphene(seed):
    """The default (polar) encoder's pose is the patterns' first-moment direction, a fixed
    transform: on simulated graphene it agrees with the COM direction before any training
    (measured 0.99). That is architecture, and the chapters must say so. At initialisation the
    MLP adds a random residual angle (40-130 degrees spread over the patterns), so the model's
    angle agrees less (0.73-0.76); training teaches it to add almost none (about 1 degree), and
    the angle ends on the COM direction (0.99)."""
    from rrvae_nb import com, datasets, preprocess
    from rrvae_nb.metrics import angle_agreement

    signal = datasets.load("graphene_vacancy_sim").inav[::2, ::2]   # 20 x 20 positions
    v = com.center_of_mass(signal).vector.reshape(-1, 2)
    com_angle = np.arctan2(-v[:, 0], v[:, 1])    # counter-clockwise on screen, as the latent
    x = preprocess.prepare(signal, progress=False).patterns
    model = rr.RrVAE(x.shape[1:], 2, seed=seed).calibrate_inputs(x)
    xt = (torch.as_tensor(x) - model.input_offset) / model.input_scale
    with torch.no_grad():
        pose = model.encoder.pose_estimate(xt).numpy()

    def residual_spread_deg(angle):
        return np.degrees(np.sqrt(-2 * np.log(angle_agreement(angle, pose))))  # circular std

    before = model.encode(x).angle
    rr.fit(model, x, epochs=30, seed=seed, progress=False)
    after = model.encode(x).angle
    assert angle_agreement(pose, com_angle) > 0.95                  # architecture, untrained
    assert angle_agreement(before, com_angle) < 0.85                # hidden by a random residual
    assert residual_spread_deg(before) > 30
    assert residual_spread_deg(after) < 10                          # learned: no residual ...
    assert angle_agreement(after, com_angle) > 0.95                 # ... so the angle is the COM


@pytest.mark.parametrize("encoder", ["equivariant", "polar"])
def test_encoder_pose_turns_with_the_input_and_is_none_for_the_mlp(encoder):
    """RrVAE.encoder_pose: the pose before the network's residual, equivariant by construction."""
    model = rr.RrVAE((SIZE, SIZE), 2, encoder=encoder, seed=6)
    x = _disk_patterns(seed=7)
    model.calibrate_inputs(x)
    base = model.encoder_pose(x)
    assert base.shape == (len(x),)
    theta = np.radians(71)
    err = np.degrees(np.abs(circ_diff(model.encoder_pose(rotate_patterns(x, theta)) - base,
                                      theta)))
    assert np.median(err) < 3.0, np.median(err)
    assert rr.RrVAE((SIZE, SIZE), 2, encoder="mlp").encoder_pose(x) is None


def test_polar_encoder_pose_is_the_direction_of_a_shifted_disk():
    """The default encoder's pose is a fixed transform: the direction of the pattern's first
    moment. A disk shifted towards direction phi (counter-clockwise, y up) has pose phi, up to
    the one offset the convention adds, at any weights (before any training)."""
    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    phis = np.radians(np.arange(0, 360, 30))
    disks = np.stack([(np.hypot(yy + 3 * np.sin(p), xx - 3 * np.cos(p)) < 6).astype(np.float32)
                      for p in phis])
    pose = rr.RrVAE((SIZE, SIZE), 2, encoder="polar", seed=1).encoder_pose(disks)
    offset = np.angle(np.mean(np.exp(1j * (pose - phis))))
    assert np.degrees(np.abs(circ_diff(pose - offset, phis))).max() < 2.0
    assert angle_agreement(pose, phis) > 0.999


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_any_equivariant_pose_follows_a_dipole_before_training(seed):
    """Why no exactly equivariant encoder can start uncorrelated with the COM direction.

    Equivariance means pose(R_phi x) = pose(x) + phi. Patterns that are turned copies of one
    another, as disks shifted by the same distance in different directions are, therefore get
    pose = direction + one constant, for every weight setting: the random learned pose agrees
    with the shift (the COM) direction before any training. Only the constant is random.
    """
    torch.manual_seed(seed)
    enc = EquivariantEncoder(SIZE, 7, (32,), symmetry=1)
    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    phis = np.radians(np.arange(0, 360, 15))
    disks = np.stack([(np.hypot(yy + 3 * np.sin(p), xx - 3 * np.cos(p)) < 6).astype(np.float32)
                      for p in phis])
    with torch.no_grad():
        pose = enc.pose(torch.from_numpy(disks)).numpy()
    assert angle_agreement(pose, phis) > 0.98
