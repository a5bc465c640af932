"""The rrVAE model: Pyro structure, the rotation convention, equivariance, persistence, errors."""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

import rrvae_nb as rr
from rrvae_nb.model import FORMAT_VERSION
from rrvae_nb.rotate import rotate_patterns
from rrvae_nb.synthetic import make_templates, rotated_shapes

SIZE = 24


def circ_diff(a, b):
    """Signed angular difference a - b wrapped to [-pi, pi)."""
    return np.angle(np.exp(1j * (np.asarray(a) - np.asarray(b))))


def traces(model, x):
    guide_tr = poutine.trace(model.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(model.model, trace=guide_tr)).get_trace(x)
    return model_tr, guide_tr


# ---------------------------------------------------------------------------- Pyro structure
@pytest.mark.parametrize(
    "prior, angle_site, angle_shape",
    [("periodic", "angle_dir", (5, 2)), ("gaussian", "angle", (5,)), ("free", "angle", (5,))],
)
@pytest.mark.parametrize("translation", [False, True])
def test_trace_sites_shapes_and_distributions(prior, angle_site, angle_shape, translation):
    m = rr.RrVAE((SIZE, SIZE), 3, angle_prior=prior, translation=translation)
    x = torch.rand(5, SIZE, SIZE)
    model_tr, guide_tr = traces(m, x)
    latent = {"z", angle_site} | ({"translation"} if translation else set())
    def latents(tr):
        return {n for n in tr.stochastic_nodes if not site_is_subsample(tr.nodes[n])}

    assert latents(guide_tr) == latent
    assert latents(model_tr) == latent
    assert set(model_tr.observation_nodes) == {"obs"}
    assert model_tr.nodes["obs"]["is_observed"]
    assert model_tr.nodes["obs"]["value"].shape == (5, SIZE, SIZE)
    assert model_tr.nodes["obs"]["fn"].event_shape == (SIZE, SIZE)
    assert model_tr.nodes["z"]["value"].shape == (5, 3)
    assert model_tr.nodes[angle_site]["value"].shape == angle_shape
    for tr in (model_tr, guide_tr):
        for name in latent:
            assert tr.nodes[name]["fn"].batch_shape == (5,)
            assert "patterns" in {f.name for f in tr.nodes[name]["cond_indep_stack"]}
    expected = dist.ProjectedNormal if prior == "periodic" else dist.Normal
    assert isinstance(model_tr.nodes[angle_site]["fn"], expected)
    assert isinstance(guide_tr.nodes[angle_site]["fn"], expected)
    if prior == "gaussian":
        fn = model_tr.nodes["angle"]["fn"]
        assert torch.all(fn.loc == 0) and torch.allclose(fn.scale, torch.tensor(1.0))
    if prior == "free":
        # the prior is centred on the encoder's own mean: the KL has no mean term
        assert torch.allclose(model_tr.nodes["angle"]["fn"].loc, guide_tr.nodes["angle"]["fn"].loc)
        assert torch.allclose(model_tr.nodes["angle"]["fn"].scale, torch.tensor(0.1))


@pytest.mark.parametrize(
    "likelihood, cls",
    [("gaussian", dist.Normal), ("bernoulli", dist.Bernoulli),
     ("continuous_bernoulli", dist.ContinuousBernoulli)],
)
def test_likelihood_distribution(likelihood, cls):
    m = rr.RrVAE((SIZE, SIZE), 2, likelihood=likelihood)
    model_tr, _ = traces(m, torch.rand(4, SIZE, SIZE))
    fn = model_tr.nodes["obs"]["fn"]
    while isinstance(fn, dist.Independent):
        fn = fn.base_dist
    assert isinstance(fn, cls)


def test_kl_weight_scales_latent_sites_only():
    m = rr.RrVAE((SIZE, SIZE), 2)
    x = torch.rand(4, SIZE, SIZE)
    guide_tr = poutine.trace(m.guide).get_trace(x, kl_weight=0.25)
    model_tr = poutine.trace(poutine.replay(m.model, trace=guide_tr)).get_trace(x, kl_weight=0.25)
    assert model_tr.nodes["z"]["scale"] == 0.25 and guide_tr.nodes["z"]["scale"] == 0.25
    assert model_tr.nodes["angle_dir"]["scale"] == 0.25
    assert model_tr.nodes["obs"]["scale"] == 1.0


# ---------------------------------------------------------------------------- rotation convention
@pytest.mark.parametrize("decoder", ["image", "spatial"])
def test_decode_sign_convention_matches_rot90(decoder):
    """decode(z, +pi/2) is the angle-0 pattern turned counter-clockwise on screen."""
    m = rr.RrVAE((SIZE, SIZE), 2, decoder=decoder, seed=3)
    z = np.array([0.7, -1.2])
    base = m.decode(z, 0.0)
    assert base.shape == (SIZE, SIZE)
    np.testing.assert_allclose(m.decode(z, np.pi / 2), np.rot90(base), atol=1e-4)
    np.testing.assert_allclose(m.decode(z, np.pi), np.rot90(base, 2), atol=1e-4)
    assert np.abs(np.rot90(base) - base).max() > 1e-3  # the pattern is not symmetric


def test_spatial_decoding_at_theta_equals_rotating_decoding_at_zero():
    """The spatial decoder evaluates its MLP on a rotated grid; rotating its angle-0 output by
    interpolation must give the same patterns up to interpolation error."""
    m = rr.RrVAE((SIZE, SIZE), 2, decoder="spatial", seed=5)
    z = 2 * np.random.default_rng(0).standard_normal((4, 2)).astype(np.float32)
    base = m.decode(z, 0.0)
    inner = np.hypot(*(np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2)) < SIZE / 2 - 2
    for theta in (0.3, -1.1, 2.5):
        direct = m.decode(z, theta)
        err = np.abs(direct - rotate_patterns(base, theta))[:, inner].max()
        change = np.abs(direct - base)[:, inner].max()
        assert err < 0.1 * change, (theta, err, change)


def test_image_decoding_at_theta_equals_rotating_decoding_at_zero(trained):
    """The image decoder rotates its canonical pattern with bilinear interpolation: the same as
    rotate_patterns(order=1) applied to its angle-0 output."""
    model, data, _ = trained
    z = model.encode(data.patterns[:6]).z
    base = model.decode(z, 0.0)
    for theta in (0.3, -1.1, 2.5):
        direct = model.decode(z, theta)
        np.testing.assert_allclose(direct, rotate_patterns(base, theta, order=1), atol=1e-5)
        assert np.abs(direct - base).max() > 0.1


# ---------------------------------------------------------------------------- equivariance
@pytest.fixture(scope="module")
def trained():
    data = rotated_shapes(600, SIZE, n_templates=3, seed=0)
    model = rr.RrVAE((SIZE, SIZE), 2, seed=0)
    hist = rr.fit(model, data.patterns, epochs=30, batch_size=64, lr=3e-3, progress=False)
    return model, data, hist


def test_rotating_input_shifts_angle_and_keeps_content(trained):
    """Rotation equivariance on held-out patterns: the property the method rests on."""
    model, data, _ = trained
    held = rotated_shapes(60, SIZE, templates=make_templates(3, SIZE, seed=0), seed=99)
    base = model.encode(held.patterns)
    spread = np.std([base.z[held.label == k].mean(0) for k in range(3)], axis=0).mean()
    errors, moves = [], []
    for theta in (np.radians(25), np.pi / 2, np.radians(150), np.radians(-110)):
        rot = model.encode(np.clip(rotate_patterns(held.patterns, theta), 0, 1))
        errors.append(np.abs(circ_diff(rot.angle - base.angle, theta)))
        moves.append(np.linalg.norm(rot.z - base.z, axis=1))
    median_err_deg = np.degrees(np.median(np.concatenate(errors)))
    median_move = np.median(np.concatenate(moves))
    assert median_err_deg < 10, median_err_deg
    assert median_move < 0.1 * spread, (median_move, spread)


def test_trained_model_recovers_pose_and_content(trained):
    """What training adds: the decoder renders the input at the encoded pose, and the content
    latents tell the templates apart."""
    model, data, hist = trained
    held = rotated_shapes(90, SIZE, templates=make_templates(3, SIZE, seed=0), seed=7)
    enc = model.encode(held.patterns)
    # the encoded angle follows the true one up to one offset per template
    for k in range(3):
        d = circ_diff(enc.angle[held.label == k], held.angle[held.label == k])
        offset = np.angle(np.mean(np.exp(1j * d)))
        assert np.degrees(np.median(np.abs(circ_diff(d, offset)))) < 5
    # content: nearest template centroid identifies every pattern
    cents = np.stack([enc.z[held.label == k].mean(0) for k in range(3)])
    pred = np.argmin(np.linalg.norm(enc.z[:, None] - cents[None], axis=-1), axis=1)
    assert (pred == held.label).all()
    # reconstruction at the encoded pose is good; at a wrong pose it is not
    rec = model.reconstruct(held.patterns)
    wrong = model.decode(enc.z, enc.angle + np.pi / 2)
    err = np.mean((rec - held.patterns) ** 2)
    assert err < 0.25 * np.mean((wrong - held.patterns) ** 2)
    assert err < 0.2 * np.var(held.patterns)
    assert hist.val_loss[-1] < hist.val_loss[0]


def test_symmetry_reports_angle_modulo_two_pi_over_n():
    n = 3
    templates = make_templates(2, SIZE, symmetry=n, seed=4)
    data = rotated_shapes(400, SIZE, templates=templates, seed=1)
    model = rr.RrVAE((SIZE, SIZE), 2, symmetry=n, seed=1)
    rr.fit(model, data.patterns, epochs=20, batch_size=64, lr=3e-3, progress=False)
    held = rotated_shapes(40, SIZE, templates=templates, seed=2)
    base = model.encode(held.patterns)
    assert np.all(np.abs(base.angle) <= np.pi / n + 1e-6)
    period = 2 * np.pi / n
    errs = []
    for theta in (0.4, 1.3, -2.0):  # 1.3 and -2.0 exceed the 2 pi / 3 period's half
        rot = model.encode(np.clip(rotate_patterns(held.patterns, theta), 0, 1))
        d = np.mod(rot.angle - base.angle - theta + period / 2, period) - period / 2
        errs.append(np.abs(d))
    assert np.degrees(np.median(np.concatenate(errs))) < 10


@pytest.mark.slow
def test_paper_spatial_decoder_trains_equivariantly():
    """The paper's spatial decoder (with the equivariant encoder) learns the same task."""
    size = 16
    data = rotated_shapes(300, size, n_templates=2, seed=3)
    model = rr.RrVAE((size, size), 2, decoder="spatial", decoder_hidden=(64, 64), seed=0)
    # lr 1e-2 (enough before the encoder's inputs were scaled to unit spread) now leaves the
    # content latents unused: 3e-3 and more epochs
    hist = rr.fit(model, data.patterns, epochs=60, batch_size=50, lr=3e-3, progress=False)
    assert hist.val_loss[-1] < hist.val_loss[0]
    x = data.patterns[:60]
    enc = model.encode(x)
    err = np.mean((model.reconstruct(x) - x) ** 2)
    assert err < 0.4 * np.mean((model.decode(enc.z, enc.angle + np.pi / 2) - x) ** 2)
    assert err < 0.4 * np.var(x)


# ---------------------------------------------------------------------------- API
def test_encode_outputs(trained):
    model, data, _ = trained
    enc = model.encode(torch.from_numpy(data.patterns[:10]))
    assert enc.angle.shape == enc.angle_std.shape == (10,)
    assert enc.z.shape == enc.z_std.shape == (10, 2)
    assert enc.translation is None
    assert np.all(np.abs(enc.angle) <= np.pi) and np.all(enc.angle_std > 0)
    assert np.all(enc.z_std > 0)
    # a confident model: posterior angle width well under a radian for clean patterns
    assert np.median(enc.angle_std) < 0.3


def test_translation_latents_and_pixel_convention():
    m = rr.RrVAE((SIZE, SIZE), 2, translation=True, seed=2)
    enc = m.encode(np.random.default_rng(0).random((6, SIZE, SIZE)))
    assert enc.translation.shape == enc.translation_std.shape == (6, 2)
    z = np.zeros(2, np.float32)
    base = m.decode(z)
    shifted = m.decode(z, 0.0, translation=(0.0, 3.0))  # 3 px along +kx
    inner = slice(6, SIZE - 6)
    np.testing.assert_allclose(shifted[inner, inner.start + 3 : inner.stop + 3],
                               base[inner, inner], atol=1e-4)
    down = m.decode(z, 0.0, translation=(2.0, 0.0))  # 2 px along +ky (down)
    np.testing.assert_allclose(down[inner.start + 2 : inner.stop + 2, inner],
                               base[inner, inner], atol=1e-4)


def test_manifold_grid_layout(trained):
    model = trained[0]
    grid = model.manifold(n=5, extent=1.5)
    assert grid.shape == (5, 5, SIZE, SIZE)
    values = np.linspace(-1.5, 1.5, 5)
    np.testing.assert_allclose(grid[0, 4], model.decode([values[4], values[4]]), atol=1e-6)
    np.testing.assert_allclose(grid[4, 0], model.decode([values[0], values[0]]), atol=1e-6)
    np.testing.assert_allclose(grid[1, 2], model.decode([values[2], values[3]]), atol=1e-6)
    turned = model.manifold(n=5, extent=1.5, angle=np.pi / 2)
    np.testing.assert_allclose(turned[2, 2], np.rot90(grid[2, 2]), atol=1e-4)


def test_save_load_round_trip(trained, tmp_path):
    model, data, _ = trained
    path = model.save(tmp_path / "m.pt")
    assert not list(tmp_path.glob("*.tmp*"))
    loaded = rr.RrVAE.load(path)
    a, b = model.encode(data.patterns[:20]), loaded.encode(data.patterns[:20])
    for field in ("angle", "angle_std", "z", "z_std"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert loaded.config == model.config
    np.testing.assert_array_equal(loaded.decode([0.3, 0.1], 0.4), model.decode([0.3, 0.1], 0.4))


def test_load_refuses_bad_files(trained, tmp_path):
    model = trained[0]
    good = model.save(tmp_path / "m.pt")
    payload = torch.load(good, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    payload["package_version"] = "9.0.0"
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(ValueError, match=r"format 2.*9\.0\.0"):
        rr.RrVAE.load(tmp_path / "future.pt")
    (tmp_path / "trunc.pt").write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        rr.RrVAE.load(tmp_path / "trunc.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an rrvae-nb model"):
        rr.RrVAE.load(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        rr.RrVAE.load(tmp_path / "missing.pt")


def test_two_models_train_independently():
    """Training never goes through Pyro's global parameter store: two models never mix."""
    data = rotated_shapes(100, 12, seed=0)
    a = rr.RrVAE((12, 12), 2, seed=0)
    b = rr.RrVAE((12, 12), 2, seed=0)
    before_b = {k: v.clone() for k, v in b.state_dict().items()}
    rr.fit(a, data.patterns, epochs=2, batch_size=50, progress=False)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in before_b.items())
    rr.fit(b, data.patterns, epochs=2, batch_size=50, progress=False)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert len(pyro.get_param_store()) == 0


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((SIZE, SIZE)), "single pattern"),
        (np.zeros((2, 3, SIZE, SIZE)), "4D-STEM cube"),
        (np.zeros((0, SIZE, SIZE)), "empty"),
        (np.ones((3, SIZE + 2, SIZE + 2)), "built for"),
        (np.full((3, SIZE, SIZE), np.nan), "NaN or inf"),
        (np.stack([np.eye(SIZE), np.zeros((SIZE, SIZE))]), "constant"),
        (np.array([["a"] * 3] * 3), "numeric"),
    ],
)
def test_bad_patterns_raise_clear_errors(bad, match):
    m = rr.RrVAE((SIZE, SIZE), 2)
    with pytest.raises(ValueError, match=match):
        m.encode(bad)
    with pytest.raises(ValueError, match=match):
        rr.fit(m, bad, epochs=1, progress=False)


def test_bernoulli_needs_unit_interval():
    m = rr.RrVAE((SIZE, SIZE), 2, likelihood="bernoulli")
    x = np.random.default_rng(0).random((10, SIZE, SIZE)) * 3
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rr.fit(m, x, epochs=1, progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(pattern_shape=(24, 20)), "square"),
        (dict(angle_prior="uniform"), "angle_prior"),
        (dict(likelihood="poisson"), "likelihood"),
        (dict(decoder="conv"), "decoder"),
        (dict(encoder="cnn"), "encoder"),
        (dict(symmetry=0), "symmetry"),
        (dict(scale=-1.0), "scale"),
        (dict(scale="auto"), "scale"),
        (dict(angle_prior_scale=0.0), "angle_prior_scale"),
        (dict(latent_dim=-1), "latent_dim"),
    ],
)
def test_bad_options_raise(kwargs, match):
    shape = kwargs.pop("pattern_shape", (SIZE, SIZE))
    with pytest.raises(ValueError, match=match):
        rr.RrVAE(shape, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_end_to_end():
    data = rotated_shapes(200, SIZE, seed=0)
    m = rr.RrVAE((SIZE, SIZE), 2)
    hist = rr.fit(m, data.patterns, epochs=3, batch_size=64, device="cuda", progress=False)
    assert m.device.type == "cuda" and np.isfinite(hist.val_loss).all()
    assert m.encode(data.patterns).z.shape == (200, 2)
    assert m.manifold(n=3).shape == (3, 3, SIZE, SIZE)


def test_trained_model_pickles(trained):
    import pickle

    model, data, _ = trained
    clone = pickle.loads(pickle.dumps(model))
    x = data.patterns[:5]
    np.testing.assert_array_equal(clone.encode(x).z, model.encode(x).z)
    assert clone.config == model.config and not clone.training
