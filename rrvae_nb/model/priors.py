"""The pose (rotation angle) latent of the rrVAE: one small class per prior.

Each class owns everything that depends on the choice of prior: how many encoder outputs the
pose takes, the Pyro sample site, the prior and the posterior distributions, how a value of the
site becomes an angle in radians, and the posterior summary that
:meth:`rrvae_nb.model.RrVAE.encode` reports. ``RrVAE.model`` and ``RrVAE.guide`` then read as
straight-line code. Angles are counter-clockwise on screen, in radians; with ``symmetry`` n the
pose is defined modulo ``2 pi / n`` and every class works with ``n * angle``.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch.nn import functional as F

__all__ = ["PeriodicAngle", "GaussianAngle", "FreeAngle", "NoAngle", "angle_prior"]


def _projected_normal_resultant(norm: torch.Tensor) -> torch.Tensor:
    """Mean resultant length E[cos(psi - psi0)] of a 2-D projected normal whose mean vector has
    length ``norm`` (unit covariance): sqrt(pi/8) k e^{-k^2/4} (I0(k^2/4) + I1(k^2/4))."""
    x = norm**2 / 4
    return math.sqrt(math.pi / 8) * norm * (torch.special.i0e(x) + torch.special.i1e(x))


class PeriodicAngle:
    """Uniform prior on the circle, projected-normal posterior; site ``"angle_dir"`` (B, 2).

    The site's value is a unit vector at ``symmetry * angle``; the encoder's two pose outputs are
    the posterior's mean vector (its direction the pose, its length the concentration).
    """

    site = "angle_dir"
    n_outputs = 2

    def __init__(self, symmetry: int, scale: float):
        self.symmetry = symmetry

    def posterior_params(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        """Posterior parameters from the encoder's pose outputs (B, n_outputs)."""
        return {"angle_dir": out}

    def prior(self, batch: int, opts: dict, encoder_loc=None) -> dist.Distribution:
        return dist.ProjectedNormal(torch.zeros(batch, 2, **opts))

    def posterior(self, params: dict) -> dist.Distribution:
        return dist.ProjectedNormal(params["angle_dir"])

    def angle(self, value: torch.Tensor) -> torch.Tensor:
        """Rotation angle (rad) from a value of the site."""
        return torch.atan2(value[..., 1], value[..., 0]) / self.symmetry

    def summary(self, params: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean direction and circular standard deviation, both in rad."""
        c = params["angle_dir"]
        rho = _projected_normal_resultant(c.norm(dim=-1)).clamp(1e-12, 1.0)
        angle = torch.atan2(c[:, 1], c[:, 0]) / self.symmetry
        return angle, torch.sqrt(-2 * torch.log(rho)) / self.symmetry


class GaussianAngle:
    """Prior ``angle ~ N(0, scale^2)``, Gaussian posterior; site ``"angle"`` (B,), in rad.

    The encoder's first two pose outputs give the posterior mean by their direction
    (``atan2(out1, out0) / symmetry``), the third its standard deviation (softplus).
    """

    site = "angle"
    n_outputs = 3

    def __init__(self, symmetry: int, scale: float):
        self.symmetry = symmetry
        self.scale = scale

    def posterior_params(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"angle_loc": torch.atan2(out[:, 1], out[:, 0]) / self.symmetry,
                "angle_scale": F.softplus(out[:, 2]) + 1e-4}

    def prior(self, batch: int, opts: dict, encoder_loc=None) -> dist.Distribution:
        return dist.Normal(torch.zeros(batch, **opts), self.scale)

    def posterior(self, params: dict) -> dist.Distribution:
        return dist.Normal(params["angle_loc"], params["angle_scale"])

    def angle(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def summary(self, params: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return params["angle_loc"], params["angle_scale"]


class FreeAngle(GaussianAngle):
    """The paper's choice: a Gaussian prior of width ``scale`` centred on the encoder's own mean,
    so the KL penalises only the posterior's width, never where the angle lies.

    This prior depends on the pattern: ``prior`` takes ``encoder_loc``, a function that returns
    the encoder's mean angle for the batch (the model calls the encoder for it).
    """

    def prior(self, batch: int, opts: dict, encoder_loc=None) -> dist.Distribution:
        return dist.Normal(encoder_loc(), self.scale)


class NoAngle:
    """No rotation latent: the angle is 0 for every pattern, which makes the model a plain VAE.

    The control that shows what the rotation latent adds (the same decoder, no pose). The site
    ``"angle"`` is kept, with a point mass at 0 as prior and posterior, so that ``model`` and
    ``guide`` stay the same straight-line code; it adds nothing to the ELBO (log 1 - log 1). The
    encoder spends no outputs on it, so only an encoder without a built-in pose (``"mlp"``) fits.
    """

    site = "angle"
    n_outputs = 0

    def __init__(self, symmetry: int, scale: float):
        self.symmetry = symmetry

    def posterior_params(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"angle_loc": out.new_zeros(out.shape[0])}

    def prior(self, batch: int, opts: dict, encoder_loc=None) -> dist.Distribution:
        return dist.Delta(torch.zeros(batch, **opts))

    def posterior(self, params: dict) -> dist.Distribution:
        return dist.Delta(params["angle_loc"])

    def angle(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def summary(self, params: dict) -> tuple[torch.Tensor, torch.Tensor]:
        zero = params["angle_loc"]
        return zero, torch.zeros_like(zero)


_PRIORS = {"periodic": PeriodicAngle, "gaussian": GaussianAngle, "free": FreeAngle,
           "none": NoAngle}


def angle_prior(name: str, symmetry: int, scale: float):
    """The pose prior called ``name`` ("periodic", "gaussian", "free" or "none")."""
    return _PRIORS[name](symmetry, scale)
