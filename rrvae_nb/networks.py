"""Neural networks of the rrVAE: the encoder and the two decoders.

These are plain ``torch.nn`` modules; the probabilistic model that uses them lives in
:mod:`rrvae_nb.model`. Patterns are (B, H, W) = (B, ky, kx), square.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .rotate import coordinate_grid, pose_coordinates, sample_at_pose

__all__ = ["MLPEncoder", "PolarEncoder", "SpatialDecoder", "ImageDecoder"]


def _mlp(sizes: list[int], activation=nn.Tanh) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-2], sizes[1:-1], strict=True):
        layers += [nn.Linear(a, b), activation()]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """The paper's encoder: a tanh MLP on the flattened pattern.

    Parameters
    ----------
    n_pixels : int
        H * W.
    n_out : int
        Number of raw outputs (the model splits them into angle, content and translation heads).
    hidden : tuple of int
        Hidden layer widths (the authors used (128, 128)).
    """

    def __init__(self, n_pixels: int, n_out: int, hidden: tuple[int, ...] = (128, 128)):
        super().__init__()
        self.net = _mlp([n_pixels, *hidden, n_out])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class PolarEncoder(nn.Module):
    """A rotation-equivariant encoder: estimate the pose, undo it, then encode what is left.

    1. Resample the pattern on a polar grid (radius r, azimuth phi) and take the Fourier transform
       along phi. Rotating the pattern by ``a`` multiplies the ``m``-th angular harmonic by
       ``exp(-i m a)``, so the phase of the ``symmetry``-th harmonic (summed over radii with the
       area weight r) shifts by ``-symmetry * a``: minus that phase divided by ``symmetry`` is a
       pose estimate that turns exactly with the pattern (modulo 2 pi / symmetry).
    2. Rotate the pattern back by the estimate (:func:`rrvae_nb.rotate.sample_at_pose`): the
       result no longer depends on the input's orientation (up to interpolation).
    3. An MLP on this canonical pattern gives the content latents, the translation and a residual
       angle, which is added to the estimate. The angle output is thus equivariant and every
       other output invariant by construction, from the first step of training on.

    The pose estimate itself is not trained (it is a fixed transform; gradients do not flow
    through the arctangent), so a nearly vanishing harmonic only changes which canonical frame
    the MLP sees, and the MLP's residual angle absorbs it.

    Parameters
    ----------
    size : int
        Pattern width (square patterns).
    n_out : int
        Raw outputs; the first two are a 2-vector whose direction is the residual angle
        (times ``symmetry``), measured in the canonical frame.
    hidden : tuple of int
        Hidden widths of the MLP.
    symmetry : int
        Which angular harmonic sets the pose (1 for patterns without rotational symmetry).
    n_radii, n_azimuths : int
        Polar sampling of the pose estimate.
    """

    def __init__(
        self,
        size: int,
        n_out: int,
        hidden: tuple[int, ...] = (128, 128),
        symmetry: int = 1,
        n_radii: int | None = None,
        n_azimuths: int | None = None,
    ):
        super().__init__()
        self.size = size
        self.symmetry = int(symmetry)
        n_radii = n_radii or max(4, size // 2)
        n_azimuths = n_azimuths or max(16, 4 * self.symmetry, int(math.ceil(math.pi * size)))
        r = torch.linspace(1.0 / n_radii, 1.0, n_radii)
        phi = torch.arange(n_azimuths) * (2 * math.pi / n_azimuths)
        # polar grid in grid_sample convention (x right, y down); y up is -y down
        gx = r[:, None] * torch.cos(phi)[None, :]
        gy = -(r[:, None] * torch.sin(phi)[None, :])
        self.register_buffer("polar_grid", torch.stack([gx, gy], -1)[None], persistent=False)
        self.register_buffer("radial_weight", r, persistent=False)
        self.net = _mlp([size * size, *hidden, n_out])

    def pose_estimate(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) fixed-transform pose estimate in radians, in (-pi/n, pi/n] for n = symmetry."""
        with torch.no_grad():
            grid = self.polar_grid.expand(x.shape[0], -1, -1, -1).to(x.dtype)
            polar = F.grid_sample(x.unsqueeze(1), grid, mode="bilinear",
                                  padding_mode="border", align_corners=True).squeeze(1)
            harm = torch.fft.rfft(polar, dim=-1)[..., self.symmetry]  # (B, n_radii)
            c = (harm * self.radial_weight).sum(-1)
            return -torch.atan2(c.imag, c.real) / self.symmetry

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        est = self.pose_estimate(x)
        canonical = sample_at_pose(x, -est)
        out = self.net(canonical.flatten(1))
        # turn the residual direction (which encodes symmetry * angle) by symmetry * estimate
        psi = est * self.symmetry
        c, s = torch.cos(psi), torch.sin(psi)
        a, b = out[:, 0], out[:, 1]
        turned = torch.stack([c * a - s * b, s * a + c * b], dim=-1)
        return torch.cat([turned, out[:, 2:]], dim=-1)


class SpatialDecoder(nn.Module):
    """The paper's spatial decoder (Bepler et al. 2019).

    A per-pixel MLP evaluated at every pixel on a coordinate grid that is rotated (and shifted) by
    the pose: ``value(p) = f(R(-angle) (p - t), z)`` with ``f`` a tanh MLP whose first layer sums a
    linear map of the coordinates and a linear map of ``z``. Cost grows as pixels x hidden^2: this
    is the faithful, slow option.

    Parameters
    ----------
    size : int
        Pattern width (square patterns).
    latent_dim : int
        Number of content latents.
    hidden : tuple of int
        Hidden widths; the first is the coordinate + latent layer (the authors' AtomAI decoder
        with two layers of 128 is (128, 128, 128) here).
    """

    def __init__(self, size: int, latent_dim: int, hidden: tuple[int, ...] = (128, 128)):
        super().__init__()
        self.size = size
        self.coord_layer = nn.Linear(2, hidden[0], bias=True)
        self.latent_layer = nn.Linear(latent_dim, hidden[0], bias=False) if latent_dim else None
        self.body = nn.Sequential(nn.Tanh(), _mlp([*hidden, 1]))
        self.register_buffer("grid", coordinate_grid(size), persistent=False)

    def forward(self, z: torch.Tensor, angle: torch.Tensor, translation=None) -> torch.Tensor:
        q = pose_coordinates(self.grid, angle, translation)  # (B, H, W, 2)
        h = self.coord_layer(q)  # (B, H, W, hidden)
        if self.latent_layer is not None:
            h = h + self.latent_layer(z)[:, None, None, :]
        return self.body(h).squeeze(-1)


class ImageDecoder(nn.Module):
    """A fast decoder: an MLP renders the canonical (pose 0) image, which is then rotated and
    shifted by differentiable interpolation (:func:`rrvae_nb.rotate.sample_at_pose`).

    The generative story is the same as the spatial decoder's (a pattern rendered at a pose), but
    the MLP runs once per pattern instead of once per pixel.

    Parameters
    ----------
    size : int
        Pattern width (square patterns).
    latent_dim : int
        Number of content latents.
    hidden : tuple of int
        Hidden widths.
    interpolation : {"bilinear", "bicubic"}
        Interpolation used to rotate the canonical image.
    """

    def __init__(
        self,
        size: int,
        latent_dim: int,
        hidden: tuple[int, ...] = (128, 128),
        interpolation: str = "bilinear",
    ):
        super().__init__()
        self.size = size
        self.interpolation = interpolation
        self.net = _mlp([max(latent_dim, 1), *hidden, size * size])
        self.latent_dim = latent_dim

    def canonical(self, z: torch.Tensor) -> torch.Tensor:
        """(B, H, W) images at pose 0."""
        if self.latent_dim == 0:
            z = torch.zeros(z.shape[0], 1, device=z.device, dtype=z.dtype)
        return self.net(z).view(-1, self.size, self.size)

    def forward(self, z: torch.Tensor, angle: torch.Tensor, translation=None) -> torch.Tensor:
        return sample_at_pose(self.canonical(z), angle, translation, mode=self.interpolation)
