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

__all__ = ["MLPEncoder", "PolarEncoder", "EquivariantEncoder", "SpatialDecoder", "ImageDecoder"]


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


def _polar_grid(size: int, symmetry: int, n_radii: int | None, n_azimuths: int | None):
    """Polar sampling grid (1, R, A, 2) in grid_sample convention and its radii (R,).

    Azimuth phi runs counter-clockwise on screen (y up is -y down for grid_sample), radii from
    1 / R to 1 (the pattern's inscribed circle).
    """
    n_radii = n_radii or max(4, size // 2)
    n_azimuths = n_azimuths or max(16, 4 * symmetry, int(math.ceil(math.pi * size)))
    r = torch.linspace(1.0 / n_radii, 1.0, n_radii)
    phi = torch.arange(n_azimuths) * (2 * math.pi / n_azimuths)
    gx = r[:, None] * torch.cos(phi)[None, :]
    gy = -(r[:, None] * torch.sin(phi)[None, :])
    return torch.stack([gx, gy], -1)[None], r


def _to_polar(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(B, H, W) patterns sampled on a polar grid: (B, R, A)."""
    grid = grid.expand(x.shape[0], -1, -1, -1).to(x.dtype)
    return F.grid_sample(x.unsqueeze(1), grid, mode="bilinear", padding_mode="border",
                         align_corners=True).squeeze(1)


def _turn(out: torch.Tensor, angle: torch.Tensor, symmetry: int) -> torch.Tensor:
    """Turn the direction 2-vector ``out[:, :2]`` (which encodes symmetry * angle) by
    ``symmetry * angle``; the other outputs pass unchanged."""
    psi = angle * symmetry
    c, s = torch.cos(psi), torch.sin(psi)
    a, b = out[:, 0], out[:, 1]
    turned = torch.stack([c * a - s * b, s * a + c * b], dim=-1)
    return torch.cat([turned, out[:, 2:]], dim=-1)


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
        grid, r = _polar_grid(size, self.symmetry, n_radii, n_azimuths)
        self.register_buffer("polar_grid", grid, persistent=False)
        self.register_buffer("radial_weight", r, persistent=False)
        self.net = _mlp([size * size, *hidden, n_out])

    def pose_estimate(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) fixed-transform pose estimate in radians, in (-pi/n, pi/n] for n = symmetry."""
        with torch.no_grad():
            polar = _to_polar(x, self.polar_grid)
            harm = torch.fft.rfft(polar, dim=-1)[..., self.symmetry]  # (B, n_radii)
            c = (harm * self.radial_weight).sum(-1)
            return -torch.atan2(c.imag, c.real) / self.symmetry

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        est = self.pose_estimate(x)
        canonical = sample_at_pose(x, -est)
        out = self.net(canonical.flatten(1))
        # turn the residual direction (which encodes symmetry * angle) by symmetry * estimate
        return _turn(out, est, self.symmetry)


class EquivariantEncoder(nn.Module):
    """A rotation-equivariant encoder whose pose is *learned*.

    1. Resample the pattern on a polar grid (radius r, azimuth phi): a rotation of the pattern
       is a cyclic shift along phi.
    2. Two layers of learned convolutions on the (r, phi) grid, circular along phi, with tanh
       after each (the second mixes channels only). Convolutions along a circular axis commute
       with cyclic shifts, and so do pointwise non-linearities: the feature maps turn with the
       pattern.
    3. The pose is the phase of the ``symmetry``-th angular harmonic of the feature maps,
       mixed over channels and radii by learned complex weights: rotating the input by ``a``
       multiplies every such harmonic by ``exp(-i symmetry a)``, so the pose turns exactly by
       ``a`` (up to interpolation), whatever the weights. Which feature sets the pose is learned:
       gradients reach every convolution and mixing weight through the canonical pattern of
       step 4 and through the angle handed to the decoder.
    4. The pattern turned back by the pose (its canonical frame; rotation-invariant) goes through
       an MLP that gives the content latents, the translation and a residual angle, added to
       the pose as in :class:`PolarEncoder`.

    Unlike :class:`PolarEncoder`, whose pose is the fixed first-moment (centre-of-mass)
    direction, nothing here ties the pose to the COM at initialisation: random features put
    patterns that differ in content at unrelated offsets, and training aligns them.

    Parameters
    ----------
    size : int
        Pattern width (square patterns).
    n_out : int
        Raw outputs, as for :class:`PolarEncoder`.
    hidden : tuple of int
        Hidden widths of the MLP on the canonical pattern.
    symmetry : int
        Which angular harmonic sets the pose.
    channels : int
        Feature channels of the polar convolutions.
    kernel : (int, int)
        Kernel size (radii, azimuths) of the polar convolutions; both odd.
    n_radii, n_azimuths : int
        Polar sampling.
    """

    def __init__(
        self,
        size: int,
        n_out: int,
        hidden: tuple[int, ...] = (128, 128),
        symmetry: int = 1,
        channels: int = 8,
        kernel: tuple[int, int] = (3, 9),
        n_radii: int | None = None,
        n_azimuths: int | None = None,
    ):
        super().__init__()
        self.size = size
        self.symmetry = int(symmetry)
        # coarser than PolarEncoder's grid (a radius every 4 px, 2 azimuths per px of width):
        # the convolutions cost in proportion to it
        grid, r = _polar_grid(size, self.symmetry, n_radii or max(4, size // 4),
                              n_azimuths or max(16, 4 * self.symmetry, 2 * size))
        self.register_buffer("polar_grid", grid, persistent=False)
        n_a = grid.shape[2]
        phi = torch.arange(n_a) * (2 * math.pi / n_a)
        # the symmetry-th Fourier coefficient along phi, as a product with (cos, -sin)
        self.register_buffer("harmonic", torch.stack([torch.cos(self.symmetry * phi),
                                                      -torch.sin(self.symmetry * phi)], -1),
                             persistent=False)
        self.kernel = tuple(int(k) for k in kernel)
        self.conv1 = nn.Conv2d(1, channels, self.kernel)
        # the second layer mixes channels only (a 1 x 1 convolution): a full second kernel cost
        # five times the rest of the encoder on two CPU cores and changed little
        self.conv2 = nn.Conv2d(channels, channels, 1)
        n_r = r.numel()
        # complex mixing weights of the harmonic over (channel, radius), as (re, im) pairs
        self.pose_mix = nn.Parameter(torch.randn(2, channels, n_r) / math.sqrt(channels * n_r))
        self.net = _mlp([size * size, *hidden, n_out])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, channels, R, A) rotation-equivariant feature maps on the polar grid."""
        kr, ka = self.kernel
        h = _to_polar(x, self.polar_grid).unsqueeze(1)
        h = F.pad(h, (ka // 2, ka // 2, 0, 0), mode="circular")   # azimuth: periodic
        h = F.pad(h, (0, 0, kr // 2, kr // 2), mode="replicate")  # radius: edge values
        h = torch.tanh(self.conv1(h))
        return torch.tanh(self.conv2(h))

    def pose(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) learned pose in radians, in (-pi/n, pi/n] for n = symmetry (differentiable)."""
        harm = self.features(x) @ self.harmonic.to(x.dtype)  # (B, C, R, 2): (re, im)
        wr, wi = self.pose_mix[0], self.pose_mix[1]
        re = (harm[..., 0] * wr - harm[..., 1] * wi).sum((-2, -1))
        im = (harm[..., 0] * wi + harm[..., 1] * wr).sum((-2, -1))
        return -torch.atan2(im, re) / self.symmetry

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pose = self.pose(x)
        canonical = sample_at_pose(x, -pose)
        return _turn(self.net(canonical.flatten(1)), pose, self.symmetry)


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
