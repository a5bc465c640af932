"""The trainer: learning happens, held-out evaluation is read-only, seeds make runs repeatable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pyro import poutine

import rrvae_nb as rr
from rrvae_nb.synthetic import rotated_shapes

SIZE = 16


@pytest.fixture(scope="module")
def data():
    return rotated_shapes(300, SIZE, n_templates=2, seed=0).patterns


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_training_lowers_heldout_loss_and_changes_weights(data):
    model = rr.RrVAE((SIZE, SIZE), 2, seed=0)
    before = weights(model)
    hist = rr.fit(model, data, epochs=8, batch_size=32, lr=3e-3, progress=False)
    assert hist.epochs == 8 and len(hist.val_loss) == 8 and len(hist.seconds) == 8
    assert np.all(np.isfinite(hist.train_loss)) and np.all(np.isfinite(hist.val_loss))
    assert hist.val_loss[-1] < hist.val_loss[0] - 50  # nats per pattern
    assert any(not torch.equal(before[k], v) for k, v in weights(model).items())
    assert len(hist.val_index) == 45 and len(hist.train_index) == 255
    assert not set(hist.val_index) & set(hist.train_index)


def test_evaluate_does_not_move_the_weights(data):
    model = rr.RrVAE((SIZE, SIZE), 2, seed=0)
    rr.fit(model, data, epochs=1, batch_size=32, progress=False)
    before = weights(model)
    loss = rr.evaluate(model, data[:50])
    assert np.isfinite(loss)
    after = weights(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_same_seed_same_weights_other_seed_other_weights(data):
    def run(seed):
        model = rr.RrVAE((SIZE, SIZE), 2, seed=0)
        rr.fit(model, data, epochs=2, batch_size=32, seed=seed, progress=False)
        return weights(model)

    a, b, c = run(1), run(1), run(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_initialisation_seed():
    a = weights(rr.RrVAE((SIZE, SIZE), 2, seed=4))
    b = weights(rr.RrVAE((SIZE, SIZE), 2, seed=4))
    c = weights(rr.RrVAE((SIZE, SIZE), 2, seed=5))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_kl_schedule_is_recorded_and_used(data):
    sched = rr.linear_warmup(4)
    assert [sched(e) for e in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    model = rr.RrVAE((SIZE, SIZE), 2, seed=0)
    hist = rr.fit(model, data, epochs=3, batch_size=64, kl_weight=sched, progress=False)
    assert hist.kl_weight == [0.0, 0.25, 0.5]
    # weight 0: the latent sites leave the ELBO, only the reconstruction term is left
    x = torch.from_numpy(data[:8])
    guide_tr = poutine.trace(model.guide).get_trace(x, kl_weight=0.0)
    model_tr = poutine.trace(poutine.replay(model.model, trace=guide_tr)).get_trace(
        x, kl_weight=0.0
    )
    elbo = model_tr.log_prob_sum() - guide_tr.log_prob_sum()
    assert torch.allclose(elbo, model_tr.nodes["obs"]["fn"].log_prob(x).sum())
    with pytest.raises(ValueError, match="kl_weight"):
        rr.fit(model, data, epochs=1, kl_weight=-1.0, progress=False)
    with pytest.raises(ValueError):
        rr.linear_warmup(0)


@pytest.mark.parametrize(
    "kw",
    [dict(likelihood="bernoulli"), dict(likelihood="continuous_bernoulli"),
     dict(scale="learned"), dict(angle_prior="gaussian"), dict(angle_prior="free"),
     dict(translation=True), dict(encoder="mlp")],
)
def test_every_option_trains_without_nan(data, kw):
    model = rr.RrVAE((SIZE, SIZE), 2, seed=0, **kw)
    hist = rr.fit(model, data, epochs=4, batch_size=32, lr=3e-3, progress=False)
    assert np.all(np.isfinite(hist.val_loss))
    assert hist.val_loss[-1] < hist.val_loss[0]


def test_learned_scale_moves_toward_the_noise_level():
    d = rotated_shapes(300, SIZE, n_templates=2, noise=0.05, seed=1).patterns
    model = rr.RrVAE((SIZE, SIZE), 2, scale="learned", seed=0)
    start = float(model.log_scale.detach().exp())
    rr.fit(model, d, epochs=15, batch_size=32, lr=3e-3, progress=False)
    sigma = float(model.log_scale.detach().exp())
    resid = float(np.std(model.reconstruct(d) - d))
    # Adam moves the log-scale by about lr per step: it heads for the residual level from above
    assert resid < sigma < start - 0.01


def test_no_validation_split(data):
    hist = rr.fit(rr.RrVAE((SIZE, SIZE), 2), data[:40], epochs=1, val_fraction=0,
                  progress=False)
    assert hist.val_loss == [] and len(hist.train_index) == 40


@pytest.mark.parametrize(
    "kw, match",
    [(dict(epochs=-1), "epochs"), (dict(batch_size=0), "batch_size"),
     (dict(val_fraction=1.0), "val_fraction"), (dict(lr=0), "lr")],
)
def test_bad_arguments(data, kw, match):
    with pytest.raises(ValueError, match=match):
        rr.fit(rr.RrVAE((SIZE, SIZE), 2), data, progress=False, **kw)


def test_too_few_patterns_for_a_split(data):
    with pytest.raises(ValueError, match="too few"):
        rr.fit(rr.RrVAE((SIZE, SIZE), 2), data[:3], val_fraction=0.1, progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_clear_error(data):
    with pytest.raises(ValueError, match="no CUDA GPU"):
        rr.fit(rr.RrVAE((SIZE, SIZE), 2), data, device="cuda", progress=False)


def _interrupt_at(stop_epoch):
    def schedule(epoch):
        if epoch == stop_epoch:
            raise KeyboardInterrupt("simulated interruption")
        return 1.0

    return schedule


def test_resume_after_interruption_equals_uninterrupted_run(data, tmp_path):
    ref = rr.RrVAE((SIZE, SIZE), 2, seed=0)
    ref_hist = rr.fit(ref, data, epochs=5, batch_size=64, seed=3, progress=False)

    ckpt = tmp_path / "run.ckpt"
    model = rr.RrVAE((SIZE, SIZE), 2, seed=0)
    with pytest.raises(KeyboardInterrupt):
        rr.fit(model, data, epochs=5, batch_size=64, seed=3, progress=False,
               kl_weight=_interrupt_at(3), checkpoint=ckpt)
    assert ckpt.exists() and not list(tmp_path.glob("*.tmp*"))
    fresh = rr.RrVAE((SIZE, SIZE), 2, seed=0)  # a new process would start from a new model
    hist = rr.fit(fresh, data, epochs=5, batch_size=64, seed=3, progress=False, checkpoint=ckpt)
    assert hist.val_loss == ref_hist.val_loss and hist.epochs == 5
    ref_w, new_w = weights(ref), weights(fresh)
    assert all(torch.equal(ref_w[k], new_w[k]) for k in ref_w)
    # a finished run resumes to itself without training
    again = rr.RrVAE((SIZE, SIZE), 2, seed=0)
    rr.fit(again, data, epochs=5, batch_size=64, seed=3, progress=False, checkpoint=ckpt)
    assert all(torch.equal(ref_w[k], v) for k, v in weights(again).items())


def test_checkpoint_of_another_run_is_refused(data, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    rr.fit(rr.RrVAE((SIZE, SIZE), 2), data, epochs=1, progress=False, checkpoint=ckpt)
    with pytest.raises(ValueError, match="another run.*lr"):
        rr.fit(rr.RrVAE((SIZE, SIZE), 2), data, epochs=1, lr=0.01, progress=False,
               checkpoint=ckpt)
    with pytest.raises(ValueError, match="another run.*data_sha256"):
        rr.fit(rr.RrVAE((SIZE, SIZE), 2), data[::-1].copy(), epochs=1, progress=False,
               checkpoint=ckpt)
    # one pattern changed, or two swapped: the old sampled fingerprint let both resume
    changed = data.copy()
    changed[7, 3, 3] += 0.01
    swapped = data.copy()
    swapped[[1, 2]] = swapped[[2, 1]]
    for other in (changed, swapped):
        with pytest.raises(ValueError, match="another run.*data_sha256"):
            rr.fit(rr.RrVAE((SIZE, SIZE), 2), other, epochs=1, progress=False,
                   checkpoint=ckpt)
    # another objective: a different KL weight (constant or scheduled), or no input scaling
    for kw in (dict(kl_weight=0.5), dict(kl_weight=rr.linear_warmup(3)),
               dict(calibrate=False)):
        with pytest.raises(ValueError, match="another run"):
            rr.fit(rr.RrVAE((SIZE, SIZE), 2), data, epochs=1, progress=False,
                   checkpoint=ckpt, **kw)
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        rr.fit(rr.RrVAE((SIZE, SIZE), 2), data, epochs=1, progress=False, checkpoint=ckpt)
    # a pickle that is not a checkpoint: torch's advice to load unsafely is not passed on
    import pickle

    ckpt.write_bytes(pickle.dumps(object()))
    with pytest.raises(ValueError, match="not an rrvae-nb checkpoint") as err:
        rr.fit(rr.RrVAE((SIZE, SIZE), 2), data, epochs=1, progress=False, checkpoint=ckpt)
    chain = [err.value, err.value.__cause__, err.value.__context__]
    assert not any("weights_only=False" in str(e) for e in chain if e is not None)


def test_checkpoint_is_two_state_dicts_and_an_older_format_is_refused(data, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    model = rr.RrVAE((SIZE, SIZE), 2)
    rr.fit(model, data, epochs=1, progress=False, checkpoint=ckpt)
    payload = torch.load(ckpt, weights_only=True)
    # plain torch: the model's state_dict and a torch.optim.Adam state_dict over its parameters
    assert payload["format"] == 2
    assert payload["state_dict"].keys() == model.state_dict().keys()
    adam = torch.optim.Adam(model.parameters())
    adam.load_state_dict(payload["optimizer"])
    assert len(adam.state) == len(list(model.parameters()))
    # a checkpoint of Pyro's per-parameter optimisers (format 1) cannot continue exactly
    del payload["format"]
    torch.save(payload, ckpt)
    with pytest.raises(ValueError, match="cannot continue exactly.*new checkpoint path"):
        rr.fit(rr.RrVAE((SIZE, SIZE), 2), data, epochs=2, progress=False, checkpoint=ckpt)


@pytest.mark.slow
def test_killed_training_leaves_a_loadable_checkpoint(tmp_path):
    """SIGKILL at arbitrary moments: the checkpoint is always the old or the new one."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "train.py"
    script.write_text(
        "import sys, torch\n"
        "torch.set_num_threads(1)\n"
        "import rrvae_nb as rr\n"
        "from rrvae_nb.synthetic import rotated_shapes\n"
        "d = rotated_shapes(200, 16, seed=0).patterns\n"
        "rr.fit(rr.RrVAE((16, 16), 2), d, epochs=400, batch_size=20, progress=False,\n"
        "       checkpoint=sys.argv[1])\n"
    )
    ckpt = tmp_path / "run.ckpt"
    epochs_seen = []
    for delay in (0.05, 0.13, 0.29):  # kill at moments unrelated to the epoch rhythm
        proc = subprocess.Popen([sys.executable, str(script), str(ckpt)])
        last = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # wait until this process has written once
            if ckpt.exists() and ckpt.stat().st_mtime_ns != last:
                break
            time.sleep(0.02)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        payload = torch.load(ckpt, weights_only=True)  # never half-written
        epochs_seen.append(payload["epoch"])
    # each restart resumed from the last checkpoint and went on
    assert epochs_seen == sorted(epochs_seen) and epochs_seen[0] >= 1


# ---------------------------------------------------------------------------- latent usage


def test_unused_content_latents_are_named_in_a_warning():
    """One template in every pattern, only rotated: nothing is left for the content latents.
    fit says so once, naming each unused latent and what to change."""
    from rrvae_nb.synthetic import make_templates

    one = rotated_shapes(200, SIZE, templates=make_templates(1, SIZE, seed=2), seed=0).patterns
    model = rr.RrVAE((SIZE, SIZE), 2, seed=0)
    with pytest.warns(rr.train.UnusedLatentWarning) as record:
        hist = rr.fit(model, one, epochs=6, batch_size=32, lr=3e-3, progress=False)
    assert len(record) == 1
    message = str(record[0].message)
    assert "z1" in message and "z2" in message and "batch_size" in message
    assert max(hist.latent_variance) < rr.train.ACTIVE_VARIANCE


def test_used_latents_give_no_warning_and_are_recorded(data):
    """Two templates: a content latent must tell them apart, and is measured as active."""
    import warnings

    model = rr.RrVAE((SIZE, SIZE), 1, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", rr.train.UnusedLatentWarning)
        hist = rr.fit(model, data, epochs=8, batch_size=32, lr=3e-3, progress=False)
    variance, kl = rr.train.latent_usage(model, data[hist.val_index])
    assert hist.latent_variance == pytest.approx(variance.tolist(), rel=1e-5)
    assert variance[0] > 10 * rr.train.ACTIVE_VARIANCE
    assert kl[0] > 0.1  # nats per pattern: the posterior differs from the prior


def test_callback_sees_every_epoch_and_does_not_change_training(data):
    seen = []
    a = rr.RrVAE((SIZE, SIZE), 2, seed=0)
    rr.fit(a, data, epochs=3, batch_size=64, progress=False,
           callback=lambda epoch, hist: seen.append((epoch, hist.epochs, a.encode(data[:8]))))
    assert [s[:2] for s in seen] == [(1, 1), (2, 2), (3, 3)]
    b = rr.RrVAE((SIZE, SIZE), 2, seed=0)
    rr.fit(b, data, epochs=3, batch_size=64, progress=False)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_fit_calibrates_the_encoder_inputs_once(data):
    model = rr.RrVAE((SIZE, SIZE), 2, seed=0)
    rr.fit(model, data, epochs=1, batch_size=64, progress=False)
    assert bool(model.input_calibrated)
    assert float(model.input_offset) == pytest.approx(float(data.mean()), rel=1e-4)
    offset = float(model.input_offset)
    rr.fit(model, data[:100] * 0.5, epochs=1, batch_size=64, progress=False)  # fine-tuning
    assert float(model.input_offset) == offset
