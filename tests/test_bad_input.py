"""Refusals of the model and trainer (issue: every bad input refused with a message that names
the argument and the fix). Each case was accepted silently, or failed deep inside torch/Pyro,
before these checks."""

from __future__ import annotations

import numpy as np
import pytest

import rrvae_nb as rr
from rrvae_nb.signals import Calibration

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


# ------------------------------------------------------------------ calibrations (item 5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(scan_step_nm=0.0, k_step_mrad=1.0), "the scan y step must be a finite number > 0"),
    (dict(scan_step_nm=-0.1, k_step_mrad=1.0), "scan y step"),
    (dict(scan_step_nm=(0.1, np.nan), k_step_mrad=1.0), "scan x step"),
    (dict(scan_step_nm=0.1, k_step_mrad=np.inf), "the ky step"),
    (dict(scan_step_nm=0.1, k_step_mrad=(1.0, 0.0)), "the kx step"),
    (dict(scan_step_nm=0.1, k_step_mrad="1"), "the ky step"),
    (dict(scan_step_nm=(0.1, 0.2, 0.3), k_step_mrad=1.0), r"a pair \(scan y, scan x\)"),
    (dict(scan_step_nm=0.1, k_step_mrad=1.0, k_offset_mrad=(np.nan, 0.0)), "k_offset_mrad"),
    (dict(scan_step_nm=0.1, k_step_mrad=1.0, energy_kev=0.0), "energy_kev"),
    (dict(scan_step_nm=0.1), "needs k_step_mrad="),
    (dict(scan_step_nm=0.1, scan_steps_nm=(0.1, 0.1), k_step_mrad=1.0), "not both"),
])
def test_calibration_refuses_unusable_values(kwargs, match):
    """A zero, negative or non-finite step used to be accepted and flow into every map."""
    with pytest.raises(ValueError, match=match):
        Calibration(**kwargs)


def test_a_zero_step_in_a_signal_is_refused_naming_the_axis_and_fix():
    pytest.importorskip("hyperspy")
    from rrvae_nb.com import center_of_mass
    from rrvae_nb.signals import calibration_of, make_signal

    sig = make_signal(np.ones((2, 3, 8, 8)), Calibration(scan_step_nm=0.1, k_step_mrad=1.0))
    sig.axes_manager["x"].scale = 0.0
    with pytest.raises(ValueError, match=r"scan axis 'x' has scale 0.0 nm.*axes_manager\['x'\]"
                       r"\.scale = .*scan_step_nm= to rrvae_nb\.io\.load"):
        calibration_of(sig)
    sig.axes_manager["x"].scale = 0.1
    sig.axes_manager["kx"].scale = float("nan")
    with pytest.raises(ValueError, match=r"diffraction axis 'kx'.*k_step_mrad="):
        center_of_mass(sig)  # used to end in a ZeroDivisionError or NaN maps
    with pytest.raises(TypeError, match="calibration must be a rrvae_nb.signals.Calibration"):
        make_signal(np.ones((2, 3, 8, 8)), {"scan_step_nm": 0.1, "k_step_mrad": 1.0})


def test_signal_messages_say_how_to_get_a_4d_signal():
    pytest.importorskip("hyperspy")
    from rrvae_nb.signals import calibration_of, make_signal

    sig = make_signal(np.ones((2, 3, 8, 8)), Calibration(scan_step_nm=0.1, k_step_mrad=1.0))
    with pytest.raises(ValueError, match=r"Expected a 4D-STEM signal.*rrvae_nb\.io\.load\(path\)"
                       r".*make_signal\(array, Calibration"):
        calibration_of(sig.inav[0])
    with pytest.raises(ValueError, match=r"got a ndarray\. Read a file with rrvae_nb\.io\.load"):
        calibration_of(np.ones((2, 3, 8, 8)))


# ------------------------------------------------------------------ centres (item 7)


def test_com_origin_outside_the_detector_is_refused():
    pytest.importorskip("hyperspy")
    from rrvae_nb.com import center_of_mass
    from rrvae_nb.signals import make_signal

    cube = np.random.default_rng(0).random((2, 3, 8, 8)) + 0.1
    with pytest.raises(ValueError, match=r"origin \(100, 4\) lies outside the 8 x 8 pattern: "
                       r"a pixel origin must satisfy 0 <= ky <= 7 and 0 <= kx <= 7"):
        center_of_mass(cube, units="px", origin=(100, 4))
    with pytest.raises(ValueError, match="outside the 8 x 8 pattern"):
        center_of_mass(cube, units="px", origin=(3, np.nan))
    assert center_of_mass(cube, units="px", origin=(7, 0)).origin_px == (7.0, 0.0)
    far = make_signal(cube, Calibration(scan_step_nm=0.1, k_step_mrad=1.0,
                                        k_offset_mrad=(50.0, -4.0)))
    with pytest.raises(ValueError, match=r"origin='axes'.*k = 0 lies at pixel \(-50, 4\), "
                       r"outside the 8 x 8 camera"):
        center_of_mass(far, origin="axes")


# ------------------------------------------------------------------ messages


def test_complex_patterns_are_refused_by_the_model_like_prepare():
    from rrvae_nb.preprocess import prepare

    wave = (X + 1j * X).astype(np.complex64)
    with pytest.raises(ValueError) as by_prepare:
        prepare(wave, progress=False)
    model = rr.RrVAE((8, 8), 2)
    for call in (lambda: model.encode(wave), lambda: rr.fit(model, wave, epochs=1,
                                                            progress=False),
                 lambda: model.encode(__import__("torch").from_numpy(wave))):
        with pytest.raises(ValueError) as err:
            call()
        assert str(err.value) == str(by_prepare.value).replace("data", "patterns")
        assert "abs(wave) ** 2" in str(err.value)


def test_float64_beyond_float32_is_named_as_such():
    big = X.astype(np.float64)
    big[3, 2, 2] = 5e38
    with pytest.raises(ValueError, match=r"beyond the float32 range \(\|x\| > 3\.4e38; largest "
                       r"5e\+38\).*rescale"):
        rr.RrVAE((8, 8), 2, likelihood="gaussian").encode(big)


def test_model_load_messages(tmp_path, monkeypatch):
    import torch

    path = rr.RrVAE((8, 8), 2).save(tmp_path / "m.pt")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"CUDA is not available.*Pass device='cpu'"):
        rr.RrVAE.load(path, device="cuda")
    with pytest.raises(ValueError, match="not a torch device"):
        rr.RrVAE.load(path, device="gpu0")
    for name, raw in (("random.pt", np.random.default_rng(0).bytes(500)),
                      ("empty.pt", b""),
                      ("cut.pt", path.read_bytes()[:300])):
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(ValueError) as err:
            rr.RrVAE.load(tmp_path / name)
        text = str(err.value)
        assert "not an rrvae-nb model file, or it is damaged" in text and "RrVAE.save" in text
        assert "weights_only" not in text  # torch's unsafe advice is never passed on
        chain = err.value.__cause__
        assert chain is None or "weights_only" not in str(chain)


def test_checkpoint_must_be_a_file_path(tmp_path):
    with pytest.raises(ValueError, match=r"is a folder, but a checkpoint is a file path: pass "
                       r"e\.g\. checkpoint='.*run\.pt'"):
        rr.fit(rr.RrVAE((8, 8), 2), X, epochs=1, progress=False, checkpoint=tmp_path)
