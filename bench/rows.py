"""The configurations compared by the benchmark (the rows of its table).

Every row uses the package's defaults for everything that is not named here (periodic angle
prior, Gaussian likelihood of width 0.1, two content latents), so that rows differ only in the
networks.

The paper's networks (AtomAI ``rVAE(numlayers_encoder=2, numhidden_encoder=128,
numlayers_decoder=2, numhidden_decoder=128)``):

- encoder: a tanh MLP ``pixels -> 128 -> 128 -> heads``, which is ``encoder="mlp",
  encoder_hidden=(128, 128)`` here;
- spatial decoder: per pixel, ``tanh(W_c x' + W_z z)`` with 128 units, then *two* 128 -> 128 tanh
  layers, then 128 -> 1 (AtomAI's ``rDecoderNet`` stacks ``num_layers`` hidden-to-hidden layers
  after its coordinate/latent layer). In this package's parameterisation the first entry of
  ``decoder_hidden`` is the coordinate/latent layer and each further entry one hidden-to-hidden
  layer, so the authors' decoder is ``decoder_hidden=(128, 128, 128)``. (``(128, 128)`` has one
  hidden-to-hidden product per pixel and costs half the FLOPs: 1.65 instead of 3.3 TFLOP per
  epoch of 4096 patterns of 64 x 64.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Row", "ROWS", "PAPER_DECODER_HIDDEN", "PAPER_ENCODER_HIDDEN", "rows_by_name"]

#: Hidden widths of the authors' spatial decoder in this package's parameterisation (see above).
PAPER_DECODER_HIDDEN = (128, 128, 128)
#: Hidden widths of the authors' MLP encoder.
PAPER_ENCODER_HIDDEN = (128, 128)


@dataclass(frozen=True)
class Row:
    """One configuration of the benchmark.

    Attributes
    ----------
    name : str
        Short key (command line, JSON).
    label : str
        What the table shows.
    kind : {"rrvae", "pyroved"}
        Which package builds the model.
    kwargs : dict
        Keyword arguments of :class:`rrvae_nb.RrVAE` (or of ``pyroved.models.iVAE``) besides the
        pattern shape.
    description : str
        One line for the table's notes.
    """

    name: str
    label: str
    kind: str
    kwargs: dict = field(default_factory=dict)
    description: str = ""


ROWS: tuple[Row, ...] = (
    Row(
        "paper",
        "paper: MLP encoder + spatial decoder",
        "rrvae",
        dict(encoder="mlp", decoder="spatial", encoder_hidden=PAPER_ENCODER_HIDDEN,
             decoder_hidden=PAPER_DECODER_HIDDEN),
        "the authors' networks (AtomAI rVAE 2 x 128): tanh MLP encoder, per-pixel spatial "
        "decoder 2 -> 128 -> 128 -> 128 -> 1 on a rotated grid",
    ),
    Row(
        "polar+spatial",
        "polar encoder + spatial decoder",
        "rrvae",
        dict(encoder="polar", decoder="spatial", decoder_hidden=PAPER_DECODER_HIDDEN),
        "the fixed-pose polar encoder with the paper's decoder: separates the encoder's "
        "effect from the decoder's",
    ),
    Row(
        "default",
        "default: polar encoder + image decoder",
        "rrvae",
        dict(),
        "RrVAE(pattern_shape) with every default: polar encoder (its pose is a fixed transform, "
        "the first angular harmonic), image decoder (an MLP renders the canonical pattern once, "
        "grid_sample rotates it)",
    ),
    Row(
        "equivariant",
        "learned equivariant encoder + image decoder",
        "rrvae",
        dict(encoder="equivariant"),
        "the encoder whose pose is learned (polar convolutions, exactly equivariant for any "
        "weights) with the default decoder",
    ),
    Row(
        "pyroved",
        "pyroVED iVAE(invariances=['r'])",
        "pyroved",
        dict(latent_dim=2, invariances=["r"], sampler_d="gaussian", decoder_sig=0.1, seed=0),
        "pyroVED's rotationally invariant VAE (2 x 128, spatial decoder), Gaussian likelihood "
        "of width 0.1 like the other rows",
    ),
)


def rows_by_name(names) -> list[Row]:
    """The rows called ``names``, in the order of :data:`ROWS`.

    Raises
    ------
    ValueError
        For a name that is not a row, listing the valid names.
    """
    known = {r.name: r for r in ROWS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"Unknown benchmark row(s) {unknown}; choose from {list(known)}.")
    return [r for r in ROWS if r.name in set(names)]
