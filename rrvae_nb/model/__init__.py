"""The rrVAE: the second layer of the package, which learns from the first's data.

``rrvae`` holds the model (``RrVAE``: ``model()`` and ``guide()`` in Pyro, encode, decode, save
and load) built from ``networks`` (encoders and decoders), ``priors`` (one small class per angle
prior) and ``rotate`` (rotations and poses of patterns, the geometry both use). ``train`` fits it
in the Pyro idiom (the ELBO as a torch module, a plain torch optimiser, exact resume from a
checkpoint). Around it: ``weights`` (trained models shipped with the repository), ``recipe`` (a
model's preprocessing, frozen for new frames), ``stream`` (training subsets and latent maps of
data larger than memory) and ``synthetic`` (toy rotated shapes, chapter 1's data). Modules here
may import ``rrvae_nb.stem``, never ``rrvae_nb.viz`` or the top level (only ``rrvae_nb._version``).

The names of the ``RrVAE`` module are available here too (``rrvae_nb.model.RrVAE``), as when
``rrvae_nb.model`` was that module.
"""

from .rrvae import (
    ANGLE_PRIORS,
    DECODERS,
    ENCODERS,
    FORMAT_VERSION,
    LIKELIHOODS,
    PAPER_CONFIG,
    Encoding,
    RrVAE,
)

__all__ = ["RrVAE", "Encoding", "FORMAT_VERSION", "PAPER_CONFIG", "ANGLE_PRIORS", "LIKELIHOODS",
           "DECODERS", "ENCODERS"]
