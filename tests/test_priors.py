"""The pose priors: each owns its site, prior, posterior, angle and summary."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import kl_divergence

from rrvae_nb.priors import FreeAngle, GaussianAngle, PeriodicAngle, angle_prior


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
