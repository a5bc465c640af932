"""Tests that need a CUDA GPU (marker ``gpu``; skipped without one, never required).

``python -m bench.gpu`` runs them first on a GPU machine. They check that the CUDA path gives
what the CPU path gives: the same weights encode and decode alike on both devices, a training
on the GPU learns, a model file loads onto the GPU, and the LiberTEM UDF on LiberTEM's CUDA
backend matches the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rrvae_nb as rr
from rrvae_nb.synthetic import rotated_shapes

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def data():
    return rotated_shapes(256, size=24, seed=0)


@pytest.mark.parametrize("kwargs", [dict(), dict(encoder="mlp", decoder="spatial",
                                                 angle_prior="free")])
def test_same_weights_encode_and_decode_alike_on_cpu_and_gpu(data, kwargs):
    x = data.patterns
    model = rr.RrVAE(x.shape[1:], 2, seed=0, **kwargs).calibrate_inputs(x)
    cpu = model.encode(x)
    rec_cpu = model.decode(cpu.z, cpu.angle)
    model.to("cuda")
    gpu = model.encode(x)
    rec_gpu = model.decode(cpu.z, cpu.angle)
    assert np.abs(rr.wrap_angle(gpu.angle - cpu.angle)).max() < 1e-3
    assert np.abs(gpu.z - cpu.z).max() < 1e-3
    assert np.abs(rec_gpu - rec_cpu).max() < 1e-4


def test_training_on_the_gpu_learns_the_angle(data):
    from rrvae_nb.synthetic import circular_correlation

    model = rr.RrVAE(data.patterns.shape[1:], 2, seed=0)
    hist = rr.fit(model, data.patterns, epochs=5, batch_size=32, seed=0, device="cuda",
                  progress=False)
    assert model.device.type == "cuda"
    assert hist.val_loss[-1] < hist.val_loss[0]
    enc = model.encode(data.patterns)
    assert abs(circular_correlation(enc.angle, data.angle)) > 0.9


def test_model_file_loads_onto_the_gpu(tmp_path, data):
    model = rr.RrVAE(data.patterns.shape[1:], 2, seed=0).calibrate_inputs(data.patterns)
    model.save(tmp_path / "m.pt")
    on_gpu = rr.RrVAE.load(tmp_path / "m.pt", device="cuda")
    assert on_gpu.device.type == "cuda"
    a, b = model.encode(data.patterns), on_gpu.encode(data.patterns)
    assert np.abs(a.z - b.z).max() < 1e-3


def test_udf_on_libertem_cuda_backend_matches_the_cpu():
    lt = pytest.importorskip("libertem.api")
    from rrvae_nb.preprocess import prepare
    from rrvae_nb.recipe import Recipe
    from rrvae_nb.udf import RrVAEEncoderUDF, latent_maps

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    raw = np.stack([rng.poisson(200 / (1 + np.exp((np.hypot(yy - 15 - np.sin(i), xx - 16)
                                                   - 7) / 0.7)) + 5) for i in range(64)])
    raw = raw.reshape(8, 8, 32, 32).astype(np.uint16)
    prep = prepare(raw, crop=24, bin_factor=2, progress=False)
    model = rr.RrVAE(prep.patterns.shape[1:], 2, seed=0).calibrate_inputs(prep.patterns)
    udf = RrVAEEncoderUDF(model, recipe=Recipe.from_prepared(prep))
    with lt.Context.make_with("inline") as ctx:
        cpu = latent_maps(ctx.run_udf(ctx.load("memory", data=raw, sig_dims=2), udf))
    with lt.Context.make_with("dask", cpus=1, gpus=1) as ctx:
        ds = ctx.load("memory", data=raw, sig_dims=2)
        gpu = latent_maps(ctx.run_udf(ds, udf, backends=("cuda",)))
    assert np.abs(rr.wrap_angle(gpu["angle"] - cpu["angle"])).max() < 1e-3
    assert np.abs(gpu["z0"] - cpu["z0"]).max() < 1e-3
