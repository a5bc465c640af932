"""Matrix-product FLOP counts of the rrVAE's networks and the machine's measured fp32 peak.

Only the matrix products are counted (2 FLOPs per multiply-add, biases and activations left
out): they dominate the spatial decoder, and they set the "physical floor" that no
implementation can beat. The default configuration also spends time on work that is not a
matrix product (grid_sample interpolation, the polar pose estimate, Pyro's bookkeeping), so its
floor by this count is a lower bound far below its real time; the table says so.

Training is counted as forward + backward ~ 3 x forward, the usual estimate.
"""

from __future__ import annotations

import time

__all__ = ["forward_flops", "training_flops_per_epoch", "measure_matmul_peak"]

#: Backward + forward cost of a training step relative to one forward pass.
TRAINING_FACTOR = 3.0


def _chain(sizes) -> int:
    """Multiply-adds of a chain of dense layers with the given widths."""
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def forward_flops(config: dict, size: int) -> dict[str, float]:
    """Matrix-product FLOPs of one forward pass for one pattern.

    Parameters
    ----------
    config : dict
        An :class:`rrvae_nb.RrVAE` configuration (``asdict(model.config)``): ``encoder``,
        ``decoder``, ``encoder_hidden``, ``decoder_hidden``, ``latent_dim``, ``angle_prior``,
        ``translation``.
    size : int
        Pattern width in pixels (square patterns of size x size).

    Returns
    -------
    dict
        ``{"encoder": ..., "decoder": ...}`` in FLOPs per pattern.
    """
    pixels = size * size
    latent = int(config["latent_dim"])
    n_angle = 2 if config["angle_prior"] == "periodic" else 3
    n_out = n_angle + 2 * latent + (4 if config.get("translation") else 0)
    # All encoders end in the same MLP on the (canonical) pattern; the polar pose estimate (an
    # FFT and an interpolation) and the equivariant encoder's small polar convolutions are not
    # counted.
    encoder = 2 * _chain([pixels, *config["encoder_hidden"], n_out])
    hidden = list(config["decoder_hidden"])
    if config["decoder"] == "spatial":
        # per pattern: latent layer once; per pixel: coordinate layer, hidden layers, output.
        per_pixel = 2 * hidden[0] + _chain([*hidden, 1])
        decoder = 2 * (latent * hidden[0] + pixels * per_pixel)
    else:
        decoder = 2 * _chain([max(latent, 1), *hidden, pixels])
    return {"encoder": float(encoder), "decoder": float(decoder)}


def training_flops_per_epoch(config: dict, size: int, n_patterns: int) -> float:
    """Matrix-product FLOPs of one training epoch over ``n_patterns`` patterns (one ELBO sample).

    The encoder runs once per pattern in the guide and the decoder once in the model; forward
    plus backward is counted as :data:`TRAINING_FACTOR` x forward.
    """
    f = forward_flops(config, size)
    return TRAINING_FACTOR * (f["encoder"] + f["decoder"]) * n_patterns


def measure_matmul_peak(n: int = 2048, repeats: int = 8) -> dict[str, float]:
    """Best fp32 matrix-product speed of this process (its current torch thread count).

    Times ``repeats`` products of two random n x n float32 matrices after one warm-up and keeps
    the fastest (the least disturbed by other processes).

    Returns
    -------
    dict
        ``gflops`` (GFLOP/s, 2 n^3 per product), ``n``, ``best_s``, ``median_s``.
    """
    import torch

    a = torch.randn(n, n)
    b = torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    times.sort()
    best = times[0]
    return {
        "gflops": 2.0 * n**3 / best / 1e9,
        "n": n,
        "best_s": best,
        "median_s": times[len(times) // 2],
    }
