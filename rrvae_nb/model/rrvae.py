"""The rotationally invariant VAE (rrVAE) as a Pyro model/guide pair.

Generative story for one diffraction pattern ``x`` (H x W, square):

1. content ``z ~ N(0, I)`` (``latent_dim`` numbers: what the pattern looks like);
2. a rotation angle ``angle`` (radians) from the angle prior, and optionally a translation ``t``;
3. ``x ~ p(x | D(z) rendered at pose (angle, t))`` where ``D(z)`` is the canonical (pose 0) pattern.

The guide (encoder) maps a pattern to the posterior of ``z``, the angle and ``t``. Because the
decoder renders *any* pose, the content latents are free to describe what is left when rotation is
taken out: in 4D-STEM, site-symmetry breaking (defects, dopants, polarity).

Sign convention: a positive angle turns the displayed pattern counter-clockwise (see
:mod:`rrvae_nb.rotate`); ``model.decode(z, angle=np.pi / 2)`` equals ``np.rot90(model.decode(z))``.
"""

from __future__ import annotations

import io as _io
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .._version import __version__
from ..stem._atomic import replace_atomically
from ..stem._checks import as_patterns, positive_number, whole_number
from .networks import (
    EquivariantEncoder,
    ImageDecoder,
    MLPEncoder,
    PolarEncoder,
    SpatialDecoder,
)
from .priors import angle_prior as angle_prior_of
from .rotate import translation_to_pixels, wrap_angle

__all__ = ["RrVAE", "Encoding", "FORMAT_VERSION"]

#: Version of the saved-model file layout; files with another value are refused.
FORMAT_VERSION = 1
_FILE_KIND = "rrvae-nb model"

ANGLE_PRIORS = ("periodic", "gaussian", "free", "none")
LIKELIHOODS = ("gaussian", "bernoulli", "continuous_bernoulli")
DECODERS = ("image", "spatial")
ENCODERS = ("equivariant", "polar", "mlp")
_ENCODER_CLASSES = {"equivariant": EquivariantEncoder, "polar": PolarEncoder}
#: Buffers added after the first release; files without them load with these values (which
#: reproduce the older models' behaviour exactly: the encoder saw the patterns unchanged).
_INPUT_DEFAULTS = {"input_offset": 0.0, "input_scale": 1.0, "input_calibrated": False}


@dataclass
class Encoding:
    """Posterior summaries of a stack of patterns (all numpy arrays, one row per pattern).

    Attributes
    ----------
    angle : (N,) float
        Posterior mean angle in radians, wrapped into [-pi/n, pi/n) for ``symmetry = n``.
        Positive = counter-clockwise on screen.
    angle_std : (N,) float
        Posterior (circular) standard deviation of the angle, radians.
    z, z_std : (N, latent_dim) float
        Posterior mean and standard deviation of the content latents.
    translation, translation_std : (N, 2) float or None
        Posterior mean and std of the translation in pixels along (ky, kx) (``dy`` positive
        downwards), when the model has translation latents.
    """

    angle: np.ndarray
    angle_std: np.ndarray
    z: np.ndarray
    z_std: np.ndarray
    translation: np.ndarray | None = None
    translation_std: np.ndarray | None = None


@dataclass
class _Config:
    pattern_shape: tuple[int, int]
    latent_dim: int = 2
    angle_prior: str = "periodic"
    angle_prior_scale: float = 1.0
    symmetry: int = 1
    translation: bool = False
    translation_prior_scale: float = 0.1
    likelihood: str = "gaussian"
    scale: float | str = 0.1
    decoder: str = "image"
    encoder: str = "polar"
    decoder_hidden: tuple[int, ...] = (128, 128)
    encoder_hidden: tuple[int, ...] = (128, 128)
    interpolation: str = "bilinear"
    seed: int = 0
    extra: dict = field(default_factory=dict)


#: The paper's configuration (Oxley et al. 2021; AtomAI ``rVAE`` with 2 x 128 hidden units) in
#: this package's parameterisation: ``RrVAE(shape, 2, **PAPER_CONFIG)``. The authors' spatial
#: decoder has three 128-unit layers after its input layer here (see bench/rows.py).
PAPER_CONFIG = dict(encoder="mlp", decoder="spatial", angle_prior="free",
                    encoder_hidden=(128, 128), decoder_hidden=(128, 128, 128))


class RrVAE(nn.Module):
    """Rotationally invariant variational autoencoder for diffraction patterns (Pyro).

    Parameters
    ----------
    pattern_shape : (int, int)
        (H, W) = (ky, kx) of the patterns; must be square.
    latent_dim : int
        Number of content latents (the paper used 2).
    angle_prior : {"periodic", "gaussian", "free", "none"}
        - ``"periodic"`` (default): the pose is a direction on the circle with a uniform prior and a
          projected-normal posterior; no angle is preferred and angles wrap correctly. With
          ``symmetry=n`` the direction encodes ``n * angle``, so the angle is identifiable modulo
          ``2 pi / n`` (patterns with n-fold symmetry). Site ``"angle_dir"`` (a unit 2-vector).
        - ``"gaussian"``: ``angle ~ N(0, angle_prior_scale^2)`` with the mean term in the KL
          (spatial-VAE / pyroVED style). Site ``"angle"``.
        - ``"free"``: the paper-era prior (AtomAI style): a Gaussian of fixed width
          ``angle_prior_scale`` centred on the encoder's own mean, so the KL penalises only the
          width and the mean is free. Site ``"angle"``.
        - ``"none"``: no rotation latent (angle 0 for every pattern): a plain VAE with the same
          decoder, the control for what the rotation latent adds. Needs ``encoder="mlp"``.
    angle_prior_scale : float
        Width in radians of the ``"gaussian"`` / ``"free"`` priors (AtomAI: 0.1, pyroVED: 1).
    symmetry : int
        n-fold rotational symmetry of the patterns; reported angles are wrapped into
        [-pi/n, pi/n).
    translation : bool
        Add translation latents (site ``"translation"``, prior ``N(0, translation_prior_scale^2)``
        in units of half the pattern width).
    likelihood : {"gaussian", "bernoulli", "continuous_bernoulli"}
        Observation model; Bernoulli ones need data in [0, 1].
    scale : float or "learned"
        Standard deviation of the Gaussian likelihood (in data units), or ``"learned"`` for one
        global scale fitted with the weights.
    decoder : {"image", "spatial"}
        ``"spatial"`` is the paper's per-pixel MLP on a rotated coordinate grid (faithful, slow);
        ``"image"`` renders the canonical pattern once and rotates it by interpolation (fast).
    encoder : {"equivariant", "polar", "mlp"}
        ``"polar"`` (default) takes the pose from a fixed transform, the phase of the first
        angular harmonic (for ``symmetry=1`` the first-moment, i.e. centre-of-mass, direction),
        so its angle follows the COM before any training: a property of the architecture, not
        something learned. ``"equivariant"`` takes the pose from learned rotation-equivariant
        features (polar convolutions; see :class:`rrvae_nb.networks.EquivariantEncoder`):
        exactly equivariant for every weight setting, with which direction counts as the pose
        learned in training. ``"mlp"`` is the paper's encoder (a
        tanh MLP on the flattened pattern), which must learn to read the angle at all. All
        three see the patterns scaled by :meth:`calibrate_inputs`.
    decoder_hidden, encoder_hidden : tuple of int
        Hidden layer widths (tanh). The authors' encoder is (128, 128); their spatial decoder
        (AtomAI, 2 layers of 128) corresponds to ``decoder_hidden=(128, 128, 128)`` here, whose
        first layer is the coordinate + latent layer.
    interpolation : {"bilinear", "bicubic"}
        Rotation interpolation of the image decoder.
    seed : int
        Seed of the weight initialisation.

    Notes
    -----
    Pyro sites: ``z`` (N, latent_dim), ``angle`` (N,) or ``angle_dir`` (N, 2), ``translation``
    (N, 2), ``obs`` (N, H, W), all inside ``pyro.plate("patterns")``. ``model`` and ``guide`` take a
    ``kl_weight`` that scales the latent sites through ``poutine.scale``.
    """

    def __init__(
        self,
        pattern_shape,
        latent_dim: int = 2,
        *,
        angle_prior: str = "periodic",
        angle_prior_scale: float | None = None,
        symmetry: int = 1,
        translation: bool = False,
        translation_prior_scale: float = 0.1,
        likelihood: str = "gaussian",
        scale: float | str = 0.1,
        decoder: str = "image",
        encoder: str = "polar",
        decoder_hidden=(128, 128),
        encoder_hidden=(128, 128),
        interpolation: str = "bilinear",
        seed: int = 0,
    ):
        super().__init__()
        self.config = cfg = _checked_config(
            pattern_shape, latent_dim, angle_prior, angle_prior_scale, symmetry, translation,
            translation_prior_scale, likelihood, scale, decoder, encoder, decoder_hidden,
            encoder_hidden, interpolation, seed)
        self.pose = angle_prior_of(cfg.angle_prior, cfg.symmetry, cfg.angle_prior_scale)
        n_out = self.pose.n_outputs + 2 * cfg.latent_dim + (4 if cfg.translation else 0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.encoder, self.decoder = _networks(cfg, n_out)
        if scale == "learned":
            self.log_scale = nn.Parameter(torch.tensor(math.log(0.1)))
        # What the encoder sees: (x - input_offset) / input_scale, two numbers set from the
        # training data by calibrate_inputs (fit calls it). Prepared patterns vary by a few
        # hundredths about a constant level; unscaled, the encoder's first layer barely tells
        # them apart and its content outputs start (and stay) the same for every pattern.
        for name, value in _INPUT_DEFAULTS.items():
            self.register_buffer(name, torch.tensor(value))

    # ------------------------------------------------------------------ properties
    @property
    def pattern_shape(self) -> tuple[int, int]:
        """(H, W) of the patterns the model was built for."""
        return self.config.pattern_shape

    @property
    def latent_dim(self) -> int:
        """Number of content latents."""
        return self.config.latent_dim

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return next(self.parameters()).device

    @torch.no_grad()
    def calibrate_inputs(self, patterns) -> RrVAE:
        """Set the encoder's input scaling from ``patterns`` (N, H, W): their mean and standard
        deviation, one number each (rotation-invariant, so equivariance is kept).

        :func:`rrvae_nb.train.fit` calls this before the first epoch of a model that was never
        calibrated; call it yourself to look at an untrained model on the footing a training
        run starts from. Returns the model.
        """
        x = self._check(patterns)
        total, total_sq, n = 0.0, 0.0, 0
        for s in range(0, x.shape[0], 4096):  # float64 sums, chunk by chunk
            chunk = x[s : s + 4096].double()
            total += float(chunk.sum())
            total_sq += float((chunk**2).sum())
            n += chunk.numel()
        mean = total / n
        std = math.sqrt(max(total_sq / n - mean**2, 0.0))
        if not std > 0:
            raise ValueError(
                "The patterns are all the same value, so there is nothing to encode: check the "
                "preprocessing (e.g. rrvae_nb.preprocess.prepare) of the data."
            )
        self.input_offset.fill_(mean)
        self.input_scale.fill_(std)
        self.input_calibrated.fill_(True)
        return self

    # ------------------------------------------------------------------ pieces
    def _encode_raw(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encoder outputs as distribution parameters."""
        cfg = self.config
        out = self.encoder((x - self.input_offset) / self.input_scale)
        i = self.pose.n_outputs
        # the direction of the first two outputs encodes symmetry * angle for every encoder
        params = self.pose.posterior_params(out[:, :i])
        d = cfg.latent_dim
        params["z_loc"] = out[:, i : i + d]
        params["z_scale"] = F.softplus(out[:, i + d : i + 2 * d]) + 1e-4
        if cfg.translation:
            j = i + 2 * d
            params["t_loc"] = out[:, j : j + 2]
            params["t_scale"] = F.softplus(out[:, j + 2 : j + 4]) + 1e-4
        return params

    def _render(self, z, angle, translation=None) -> torch.Tensor:
        """Decoder output at the given pose: the mean (Gaussian) or the logits (Bernoulli)."""
        return self.decoder(z, angle, translation)

    def _likelihood(self, out: torch.Tensor):
        cfg = self.config
        if cfg.likelihood == "gaussian":
            sigma = self.log_scale.exp() if cfg.scale == "learned" else cfg.scale
            return dist.Normal(out, sigma)
        if cfg.likelihood == "bernoulli":
            # Data in [0, 1] that are not binary: the Bernoulli log-likelihood is still the
            # binary cross-entropy, so argument validation is switched off for this site only.
            return dist.Bernoulli(logits=out, validate_args=False)
        return dist.ContinuousBernoulli(logits=out)

    def _mean(self, out: torch.Tensor) -> torch.Tensor:
        if self.config.likelihood == "gaussian":
            return out
        if self.config.likelihood == "bernoulli":
            return torch.sigmoid(out)
        return dist.ContinuousBernoulli(logits=out).mean

    # ------------------------------------------------------------------ Pyro model / guide
    def model(self, x: torch.Tensor, kl_weight: float = 1.0):
        """Generative model p(x, z, angle[, t]) for a batch x of shape (B, H, W)."""
        cfg = self.config
        b = x.shape[0]
        opts = dict(device=x.device, dtype=x.dtype)
        with pyro.plate("patterns", b):
            with _kl(kl_weight):
                z = pyro.sample(
                    "z",
                    dist.Normal(torch.zeros(b, cfg.latent_dim, **opts), 1.0).to_event(1),
                )
                pose = pyro.sample(self.pose.site, self.pose.prior(
                    b, opts, encoder_loc=lambda: self._encode_raw(x)["angle_loc"]))
                t = None
                if cfg.translation:
                    t = pyro.sample(
                        "translation",
                        dist.Normal(torch.zeros(b, 2, **opts), cfg.translation_prior_scale)
                        .to_event(1),
                    )
            out = self._render(z, self.pose.angle(pose), t)
            pyro.sample("obs", self._likelihood(out).to_event(2), obs=x)
        return out

    def guide(self, x: torch.Tensor, kl_weight: float = 1.0):
        """Amortised posterior q(z, angle[, t] | x) for a batch x of shape (B, H, W)."""
        cfg = self.config
        p = self._encode_raw(x)
        with pyro.plate("patterns", x.shape[0]), _kl(kl_weight):
            pyro.sample("z", dist.Normal(p["z_loc"], p["z_scale"]).to_event(1))
            pyro.sample(self.pose.site, self.pose.posterior(p))
            if cfg.translation:
                pyro.sample("translation", dist.Normal(p["t_loc"], p["t_scale"]).to_event(1))

    # ------------------------------------------------------------------ user API
    def _check(self, patterns) -> torch.Tensor:
        return as_patterns(
            patterns,
            self.pattern_shape,
            unit_interval=self.config.likelihood != "gaussian",
        )

    @torch.no_grad()
    def encode(self, patterns, batch_size: int = 1024, progress: bool | None = None) -> Encoding:
        """Posterior summaries of ``patterns`` (N, H, W); see :class:`Encoding`.

        Parameters
        ----------
        patterns : numpy.ndarray or torch.Tensor
            (N, H, W) = (N, ky, kx).
        batch_size : int
            Patterns per forward pass.
        progress : bool, optional
            Show a progress bar (default: only for more than 20 batches).
        """
        x = self._check(patterns)
        cfg = self.config
        was_training = self.training
        self.eval()
        chunks: dict[str, list[np.ndarray]] = {}
        starts = range(0, x.shape[0], batch_size)
        show = len(starts) > 20 if progress is None else progress
        for s in tqdm(starts, desc="encoding", unit="batch", disable=not show):
            p = self._encode_raw(x[s : s + batch_size].to(self.device))
            angle, angle_std = self.pose.summary(p)
            vals = {
                "angle": wrap_angle(angle, cfg.symmetry),
                "angle_std": angle_std,
                "z": p["z_loc"],
                "z_std": p["z_scale"],
            }
            if cfg.translation:
                vals["translation"] = p["t_loc"]
                vals["translation_std"] = p["t_scale"]
            for k, v in vals.items():
                chunks.setdefault(k, []).append(v.cpu().numpy())
        self.train(was_training)
        res = {k: np.concatenate(v) for k, v in chunks.items()}
        if cfg.translation:
            size = cfg.pattern_shape[0]
            res["translation"] = translation_to_pixels(res["translation"], size)
            # std of (tx, ty) in half-widths -> std of (dy, dx) in pixels
            res["translation_std"] = res["translation_std"][..., ::-1] * (size - 1) / 2
        return Encoding(**res)

    @torch.no_grad()
    def encoder_pose(self, patterns, batch_size: int = 4096) -> np.ndarray | None:
        """The encoder's pose alone, before the residual angle its network adds, in radians.

        For ``encoder="polar"`` a fixed transform (the direction of the ``symmetry``-th angular
        harmonic of the pattern, i.e. for ``symmetry=1`` its first moment, the COM direction),
        for ``"equivariant"`` the learned harmonic of learned features; ``None`` for ``"mlp"``,
        which has no separate pose. Comparing it with :meth:`encode`'s angle shows how much of
        the angle the architecture fixes and how much the trained network adds.

        Parameters
        ----------
        patterns : numpy.ndarray or torch.Tensor
            (N, H, W) = (N, ky, kx), prepared as for :meth:`encode`.
        batch_size : int
            Patterns per forward pass.

        Returns
        -------
        numpy.ndarray or None
            (N,) angles in (-pi/n, pi/n] for n = ``symmetry``.
        """
        pose = getattr(self.encoder, "pose", None) or getattr(self.encoder, "pose_estimate", None)
        if pose is None:
            return None
        x = self._check(patterns)
        out = [pose((b.to(self.device) - self.input_offset) / self.input_scale).cpu()
               for b in x.split(batch_size)]
        return torch.cat(out).numpy()

    @torch.no_grad()
    def decode(self, z, angle=0.0, translation=None) -> np.ndarray:
        """Render patterns from content latents at any pose.

        Parameters
        ----------
        z : array-like
            (M, latent_dim) or (latent_dim,) content latents.
        angle : float or array-like
            Angle(s) in radians, scalar or (M,); positive = counter-clockwise on screen.
        translation : array-like, optional
            (M, 2) or (2,) shifts in pixels along (ky, kx) (model must have translation latents
            for them to be meaningful; the decoder applies them in any case).

        Returns
        -------
        numpy.ndarray
            (M, H, W) expected patterns (for Bernoulli likelihoods: probabilities), or (H, W)
            for a single ``z`` of shape (latent_dim,).
        """
        dev = self.device
        zn = np.asarray(z, dtype=np.float32)
        d = self.latent_dim
        single = zn.ndim == 1
        if not ((single and zn.shape[0] == d) or (zn.ndim == 2 and zn.shape[1] == d)):
            raise ValueError(
                f"z must be (M, {d}) content latents, or ({d},) for one pattern, for this model "
                f"(latent_dim={d}); got shape {zn.shape}. Pass Encoding.z, or rows of it."
            )
        zt = torch.as_tensor(zn.reshape(1, d) if single else zn, device=dev)
        m = zt.shape[0]
        an = np.asarray(angle, dtype=np.float32)
        if an.ndim and an.shape != (m,):
            raise ValueError(
                f"angle must be one number or one per pattern, shape ({m},); got shape "
                f"{an.shape}."
            )
        if not np.isfinite(zn).all() or not np.isfinite(an).all():
            raise ValueError(
                "z and angle must be finite: found NaN or inf. Drop those patterns, e.g. "
                "keep = np.isfinite(angle) & np.isfinite(z).all(1)."
            )
        a = torch.as_tensor(an, device=dev)
        a = a.expand(m) if a.ndim == 0 else a
        t = None
        if translation is not None:
            size = self.pattern_shape[0]
            tp = torch.as_tensor(np.asarray(translation, dtype=np.float32), device=dev)
            tp = tp.reshape(-1, 2).expand(m, 2)
            half = (size - 1) / 2
            t = torch.stack([tp[:, 1] / half, -tp[:, 0] / half], dim=-1)
        was_training = self.training
        self.eval()
        out = self._mean(self._render(zt, a, t)).cpu().numpy()
        self.train(was_training)
        return out[0] if single else out

    def reconstruct(self, patterns, batch_size: int = 1024) -> np.ndarray:
        """Decode each pattern's posterior mean latents at its own encoded pose: (N, H, W)."""
        enc = self.encode(patterns, batch_size=batch_size, progress=False)
        outs = []
        for s in range(0, len(enc.angle), batch_size):
            sl = slice(s, s + batch_size)
            t = None if enc.translation is None else enc.translation[sl]
            outs.append(self.decode(enc.z[sl], enc.angle[sl], t))
        return np.concatenate(outs)

    def manifold(self, n: int = 8, extent: float = 2.0, dims=(0, 1), angle: float = 0.0):
        """A grid of decoded patterns over two content latents (others held at 0).

        Parameters
        ----------
        n : int
            Grid points per axis.
        extent : float
            The grid spans [-extent, extent] in each latent (prior standard deviations).
        dims : (int, int)
            Which content latents span the columns (first) and the rows (second).
        angle : float
            Pose (radians) at which every pattern is rendered.

        Returns
        -------
        numpy.ndarray
            (n, n, H, W): ``images[i, j]`` has ``z[dims[0]] = values[j]`` and
            ``z[dims[1]] = values[n - 1 - i]`` with ``values = np.linspace(-extent, extent, n)``,
            so that a mosaic shows the second latent increasing upwards. For ``latent_dim == 1``
            the result is (n, H, W) along that latent.
        """
        if self.latent_dim == 0:
            raise ValueError("The model has no content latents (latent_dim=0): nothing to span.")
        values = np.linspace(-extent, extent, n)
        if self.latent_dim == 1:
            return self.decode(values[:, None], angle)
        d0, d1 = dims
        if not (0 <= d0 < self.latent_dim and 0 <= d1 < self.latent_dim and d0 != d1):
            raise ValueError(f"dims must be two different latents in [0, {self.latent_dim}).")
        z = np.zeros((n, n, self.latent_dim), dtype=np.float32)
        z[:, :, d0] = values[None, :]
        z[:, :, d1] = values[::-1, None]
        h, w = self.pattern_shape
        return self.decode(z.reshape(-1, self.latent_dim), angle).reshape(n, n, h, w)

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> Path:
        """Write weights, configuration and package version to ``path`` (atomically)."""
        path = Path(path)
        payload = {
            "kind": _FILE_KIND,
            "format_version": FORMAT_VERSION,
            "package_version": __version__,
            "config": self._config_kwargs(),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }
        return replace_atomically(path, lambda tmp: torch.save(payload, tmp), mkdir=True)

    @classmethod
    def load(cls, path, device=None) -> RrVAE:
        """Load a model written by :meth:`save`.

        Raises
        ------
        ValueError
            If the file is not an rrvae-nb model, is corrupt or truncated, was written with an
            incompatible file format version, or ``device`` is not available here (e.g.
            ``"cuda"`` without CUDA).
        """
        path = Path(path)
        if device is not None:
            try:
                dev = torch.device(device)
            except (RuntimeError, TypeError) as err:
                raise ValueError(
                    f"device={device!r} is not a torch device: pass e.g. 'cpu' or 'cuda'."
                ) from err
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise ValueError(
                    f"device={device!r}: CUDA is not available on this machine (no NVIDIA GPU, "
                    "or a CPU-only build of torch). Pass device='cpu', or leave device out."
                )
        if not path.is_file():
            raise FileNotFoundError(f"No model file at {path}.")
        try:
            payload = torch.load(_io.BytesIO(path.read_bytes()), map_location="cpu",
                                 weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises many types for bad files
            # torch's own text may advise weights_only=False, which runs arbitrary code from
            # the file: never pass that advice on
            text = str(err).strip()
            unsafe = "weights_only" in text
            detail = (type(err).__name__ if unsafe or not text
                      else text.splitlines()[0].split(". ")[0])
            refusal = ValueError(
                f"{path} is not an rrvae-nb model file, or it is damaged (corrupt or "
                f"truncated): torch cannot read it ({detail}). Model files are written by "
                "RrVAE.save(path); save the model again (or copy the file again) and load "
                "that file."
            )
            if unsafe:
                raise refusal from None
            raise refusal from err
        if not isinstance(payload, dict) or payload.get("kind") != _FILE_KIND:
            raise ValueError(f"{path} is not an rrvae-nb model file (saved with RrVAE.save).")
        fv = payload.get("format_version")
        if fv != FORMAT_VERSION:
            raise ValueError(
                f"{path} was written by rrvae-nb {payload.get('package_version')} in model file "
                f"format {fv}; this rrvae-nb {__version__} reads format {FORMAT_VERSION}. Load it "
                f"with rrvae-nb {payload.get('package_version')} or retrain the model."
            )
        cfg = dict(payload["config"])
        cfg.pop("extra", None)
        shape = cfg.pop("pattern_shape")
        latent_dim = cfg.pop("latent_dim")
        model = cls(shape, latent_dim, **cfg)
        model.load_state_dict(_with_input_defaults(payload["state_dict"]))
        if device is not None:
            model.to(device)
        return model

    def _config_kwargs(self) -> dict:
        cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.config).items()}
        cfg.pop("extra", None)
        return cfg

    def __reduce__(self):
        # Pickle as (configuration, weights): after training, Pyro and torch leave weak
        # references on the parameters that pickle (and so dask.distributed) cannot send.
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        return _rebuild, (self._config_kwargs(), state, self.training)

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"pattern_shape={c.pattern_shape}, latent_dim={c.latent_dim}, "
            f"angle_prior={c.angle_prior!r}, symmetry={c.symmetry}, encoder={c.encoder!r}, "
            f"decoder={c.decoder!r}, "
            f"likelihood={c.likelihood!r}, translation={c.translation}"
        )


def _checked_config(pattern_shape, latent_dim, angle_prior, angle_prior_scale, symmetry,
                    translation, translation_prior_scale, likelihood, scale, decoder, encoder,
                    decoder_hidden, encoder_hidden, interpolation, seed) -> _Config:
    """RrVAE's arguments checked (a clear error for each bad one) and gathered."""
    shape = tuple(int(s) for s in pattern_shape)
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] < 2:
        raise ValueError(
            f"pattern_shape must be a square (H, W) with H = W >= 2; got {pattern_shape!r}. "
            "Crop the patterns to a square around the bright-field disk first."
        )
    _choice("angle_prior", angle_prior, ANGLE_PRIORS)
    _choice("likelihood", likelihood, LIKELIHOODS)
    _choice("decoder", decoder, DECODERS)
    _choice("encoder", encoder, ENCODERS)
    if angle_prior == "none" and encoder != "mlp":
        raise ValueError(
            f'angle_prior="none" (a plain VAE, no rotation latent) needs encoder="mlp"; the '
            f'{encoder!r} encoder turns its outputs by a built-in pose. Pass encoder="mlp".'
        )
    if interpolation not in ("bilinear", "bicubic"):
        raise ValueError(
            f"interpolation must be 'bilinear' or 'bicubic'; got {interpolation!r}"
        )
    latent_dim = whole_number("latent_dim", latent_dim, 0)
    symmetry = whole_number("symmetry (n-fold)", symmetry, 1)
    seed = whole_number("seed", seed, 0)
    translation_prior_scale = positive_number(
        "translation_prior_scale", translation_prior_scale, " (half pattern widths)")
    for name, widths in (("encoder_hidden", encoder_hidden),
                         ("decoder_hidden", decoder_hidden)):
        if len(tuple(widths)) < 1:
            raise ValueError(f"{name} needs at least one hidden layer width; got {widths!r}.")
        for w in widths:
            whole_number(f"each width of {name}", w, 1)
    if angle_prior_scale is None:
        angle_prior_scale = 0.1 if angle_prior == "free" else 1.0
    if not angle_prior_scale > 0:
        raise ValueError(f"angle_prior_scale must be > 0 radians; got {angle_prior_scale!r}")
    if isinstance(scale, str):
        if scale != "learned":
            raise ValueError(f"scale must be a positive number or 'learned'; got {scale!r}")
    elif not scale > 0:
        raise ValueError(f"scale must be a positive number or 'learned'; got {scale!r}")
    return _Config(
        pattern_shape=shape,
        latent_dim=int(latent_dim),
        angle_prior=angle_prior,
        angle_prior_scale=float(angle_prior_scale),
        symmetry=int(symmetry),
        translation=bool(translation),
        translation_prior_scale=float(translation_prior_scale),
        likelihood=likelihood,
        scale=scale if isinstance(scale, str) else float(scale),
        decoder=decoder,
        encoder=encoder,
        decoder_hidden=tuple(int(h) for h in decoder_hidden),
        encoder_hidden=tuple(int(h) for h in encoder_hidden),
        interpolation=interpolation,
        seed=int(seed),
    )


def _networks(cfg: _Config, n_out: int) -> tuple[nn.Module, nn.Module]:
    """The encoder (``n_out`` outputs) and the decoder that ``cfg`` names."""
    size = cfg.pattern_shape[0]
    if cfg.encoder in _ENCODER_CLASSES:
        encoder = _ENCODER_CLASSES[cfg.encoder](size, n_out, cfg.encoder_hidden, cfg.symmetry)
    else:
        encoder = MLPEncoder(size * size, n_out, cfg.encoder_hidden)
    if cfg.decoder == "spatial":
        decoder = SpatialDecoder(size, cfg.latent_dim, cfg.decoder_hidden)
    else:
        decoder = ImageDecoder(size, cfg.latent_dim, cfg.decoder_hidden, cfg.interpolation)
    return encoder, decoder


def _rebuild(config: dict, state: dict, training: bool) -> RrVAE:
    cfg = dict(config)
    model = RrVAE(cfg.pop("pattern_shape"), cfg.pop("latent_dim"), **cfg)
    model.load_state_dict(_with_input_defaults(state))
    return model.train(training)


def _with_input_defaults(state: dict) -> dict:
    """A state dict with the input-scaling buffers of models saved before they existed."""
    return {**{k: torch.tensor(v) for k, v in _INPUT_DEFAULTS.items()}, **state}


def _kl(weight: float):
    """Weight the latent sites' log-densities: ``poutine.scale``, or a mask for weight 0 (Pyro
    refuses a zero scale) so that a KL warm-up can start from nothing."""
    if weight < 0:
        raise ValueError(f"kl_weight must be >= 0; got {weight!r}")
    if weight == 0:
        return poutine.mask(mask=False)
    return poutine.scale(scale=weight)


def _choice(name: str, value, options) -> None:
    if value not in options:
        raise ValueError(f"{name} must be one of {options}; got {value!r}.")
