"""Refusals of the model and trainer (issue: every bad input refused with a message that names
the argument and the fix). Each case was accepted silently, or failed deep inside torch/Pyro,
before these checks."""

from __future__ import annotations

import numpy as np
import pytest

import rrvae_nb as rr

X = np.random.default_rng(0).random((20, 8, 8)).astype(np.float32)


@pytest.mark.parametrize("kwargs, match", [
    (dict(latent_dim=None), "latent_dim must be a whole number"),
    (dict(seed=None), "seed must be a whole number"),
    (dict(encoder_hidden=(0,)), "each width of encoder_hidden"),
    (dict(decoder_hidden=(128, 0)), "each width of decoder_hidden"),
    (dict(encoder_hidden=()), "at least one hidden layer"),
    (dict(translation=True, translation_prior_scale=-1.0), "translation_prior_scale"),
])
def test_model_options_are_checked(kwargs, match):
    args = {"latent_dim": 2, **kwargs}
    latent_dim = args.pop("latent_dim")
    with pytest.raises(ValueError, match=match):
        rr.RrVAE((8, 8), latent_dim, **args)


@pytest.mark.parametrize("kwargs, match", [
    (dict(seed=None), "seed must be a whole number"),
    (dict(epochs=None), "epochs must be a whole number"),
    (dict(lr=float("inf")), "lr must be a finite number"),
    (dict(kl_weight=float("nan")), "kl_weight must be a finite number"),
    (dict(num_particles=0), "num_particles"),
])
def test_training_options_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rr.fit(rr.RrVAE((8, 8), 2), X, **{"epochs": 1, "progress": False, **kwargs})


@pytest.mark.parametrize("z", [np.zeros((4, 3)), np.zeros(6), np.zeros((2, 2, 2))])
def test_decode_refuses_latents_of_the_wrong_width(z):
    """A (4, 3) input used to come back as 6 patterns, a (6,) input as the first of 3."""
    with pytest.raises(ValueError, match=r"z must be \(M, 2\)"):
        rr.RrVAE((8, 8), 2).decode(z)


def test_decode_refuses_nan_and_mismatched_angles():
    model = rr.RrVAE((8, 8), 2)
    with pytest.raises(ValueError, match="finite"):
        model.decode(np.zeros((2, 2)), angle=np.nan)   # used to render a flat finite image
    with pytest.raises(ValueError, match="finite"):
        model.decode(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match=r"one per pattern, shape \(2,\)"):
        model.decode(np.zeros((2, 2)), angle=[0.1, 0.2, 0.3])


def test_pose_only_model_trains_decodes_and_reconstructs():
    """latent_dim=0 (angle only) used to crash in decode and reconstruct."""
    model = rr.RrVAE((8, 8), 0)
    hist = rr.fit(model, X, epochs=2, progress=False)
    assert hist.latent_variance == []
    assert model.encode(X).z.shape == (20, 0)
    rec = model.reconstruct(X)
    assert rec.shape == X.shape and np.isfinite(rec).all()
    # with no content, every pattern is the one canonical pattern at its own pose
    canonical = model.decode(np.zeros(0))
    np.testing.assert_allclose(model.decode(np.zeros((3, 0))), np.stack([canonical] * 3),
                               atol=1e-6)
    np.testing.assert_allclose(model.decode(np.zeros(0), angle=np.pi / 2),
                               np.rot90(canonical), atol=1e-5)
