"""The pose priors: each owns its site, prior, posterior, angle and summary."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import kl_divergence

from rrvae_nb.priors import FreeAngle, GaussianAngle, NoAngle, PeriodicAngle, angle_prior


@pytest.mark.parametrize("symmetry", [1, 2, 6])
def test_periodic_site_value_at_n_theta_gives_theta(symmetry):
    prior = PeriodicAngle(symmetry, 1.0)
    theta = torch.tensor([0.1, -0.4, 0.25]) / symmetry
    value = torch.stack([torch.cos(symmetry * theta), torch.sin(symmetry * theta)], -1)
    assert torch.allclose(prior.angle(value), theta, atol=1e-6)
    # a concentrated posterior along that direction: summary angle theta, small spread
    angle, std = prior.summary(prior.posterior_params(50 * value))
    assert torch.allclose(angle, theta, atol=1e-6)
    assert (std < 0.05 / symmetry).all()
    # a weak one is uncertain: the spread grows as the concentration falls
    _, wide = prior.summary(prior.posterior_params(0.5 * value))
    assert (wide > 5 * std).all()


def test_periodic_prior_is_uniform_on_the_circle():
    d = PeriodicAngle(1, 1.0).prior(4, {})
    angles = torch.linspace(-math.pi, math.pi, 4)
    value = torch.stack([torch.cos(angles), torch.sin(angles)], -1)
    lp = d.log_prob(value)
    assert torch.allclose(lp, torch.full_like(lp, -math.log(2 * math.pi)), atol=1e-5)


def test_gaussian_prior_penalises_the_mean_and_free_prior_only_the_width():
    out = torch.tensor([[1.0, 0.0, 0.3], [0.0, 1.0, 0.3]])  # angles 0 and pi/2, same width
    for cls in (GaussianAngle, FreeAngle):
        pose = cls(1, 0.5)
        p = pose.posterior_params(out)
        assert torch.allclose(p["angle_loc"], torch.tensor([0.0, math.pi / 2]))
        kl = kl_divergence(pose.posterior(p),
                           pose.prior(2, {}, encoder_loc=lambda p=p: p["angle_loc"]))
        if cls is GaussianAngle:  # the pattern at pi/2 pays for its distance from 0
            assert kl[1] > kl[0] + 1.0
        else:  # centred on the encoder's own mean: both pay the same
            assert torch.allclose(kl[0], kl[1])


def test_angle_prior_by_name():
    assert isinstance(angle_prior("free", 2, 0.1), FreeAngle)
    assert angle_prior("periodic", 1, 1.0).site == "angle_dir"
    assert angle_prior("gaussian", 1, 1.0).n_outputs == 3


@pytest.mark.filterwarnings("ignore:Content latent")
def test_no_angle_makes_a_plain_vae_whose_decoder_never_turns():
    """angle_prior="none": angle 0 everywhere, nothing added to the ELBO, and so the model
    cannot undo a rotation: a turned pattern gets a different code, not a different angle."""
    import numpy as np
    import pyro

    import rrvae_nb as rr
    from rrvae_nb.rotate import rotate_patterns
    from rrvae_nb.synthetic import rotated_shapes

    pose = angle_prior("none", 1, 1.0)
    assert isinstance(pose, NoAngle) and pose.n_outputs == 0
    p = pose.posterior_params(torch.zeros(3, 0))
    assert torch.equal(pose.summary(p)[0], torch.zeros(3))
    assert pose.posterior(p).log_prob(torch.zeros(3)).abs().max() == 0  # no ELBO term
    x = rotated_shapes(64, 16, seed=0).patterns
    model = rr.RrVAE((16, 16), 2, encoder="mlp", angle_prior="none", seed=0)
    rr.fit(model, x, epochs=3, progress=False)
    trace = pyro.poutine.trace(model.guide).get_trace(torch.as_tensor(x[:4]))
    assert float(trace.nodes["angle"]["value"].abs().max()) == 0.0
    enc = model.encode(x)
    assert np.all(enc.angle == 0) and np.all(enc.angle_std == 0)
    turned = model.encode(rotate_patterns(x, np.pi / 2)).z
    assert np.abs(turned - enc.z).mean() > 0.05 * enc.z.std()  # content, not pose, moved
    with pytest.raises(ValueError, match='needs encoder="mlp"'):
        rr.RrVAE((16, 16), 2, angle_prior="none")
