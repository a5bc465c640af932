"""rrvae_nb.chapter (settings, fit_or_load, check) and the exercise checks of rrvae_nb.exercises.

Every check: a right answer passes, the typical wrong answer fails with its hint, and nothing
raises for a student (strict=False); strict=True raises for the chapters' solution cells.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import rrvae_nb as rr
from rrvae_nb import chapter
from rrvae_nb.chapter import Settings, check, fit_or_load, settings
from rrvae_nb.exercises import CHECKS

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


# ---------------------------------------------------------------------------------- settings
def test_settings_read_the_environment(monkeypatch):
    for name in (chapter.QUICK_ENV, chapter.CACHED_ENV, chapter.SAVE_ENV, chapter.SEED_ENV):
        monkeypatch.delenv(name, raising=False)
    assert settings() == Settings(quick=False, seed=0, use_cached_weights=False,
                                  save_weights=False)
    monkeypatch.setenv(chapter.QUICK_ENV, "1")
    monkeypatch.setenv(chapter.CACHED_ENV, "1")
    monkeypatch.setenv(chapter.SEED_ENV, "7")
    s = settings()
    assert s.quick and s.use_cached_weights and s.seed == 7 and not s.save_weights
    assert s.pick(100, 60) == 60 and Settings().pick(100, 60) == 100
    assert s.replace(quick=False).quick is False and s.quick   # a copy, frozen original


@pytest.mark.parametrize("value", ["yes", "true", "2"])
def test_settings_refuse_a_flag_that_is_not_0_or_1(monkeypatch, value):
    monkeypatch.setenv(chapter.QUICK_ENV, value)
    with pytest.raises(ValueError, match="RRVAE_NB_QUICK.*1 \\(on\\) or 0"):
        settings()


def test_settings_refuse_a_seed_that_is_not_an_integer(monkeypatch):
    monkeypatch.setenv(chapter.SEED_ENV, "zero")
    with pytest.raises(ValueError, match="not an integer seed"):
        settings()


# ------------------------------------------------------------------------------- fit_or_load
def _tiny(rng, n=48, size=12):
    x = rng.random((n, size, size)).astype(np.float32) * 0.2
    x[:, 3:9, 5:7] += 0.7
    return x


FIT = dict(epochs=2, batch_size=16, progress=False)
pytestmark = pytest.mark.filterwarnings("ignore::rrvae_nb.train.UnusedLatentWarning")


def test_fit_or_load_trains_saves_in_full_mode_and_loads_the_same_weights(tmp_path, rng):
    x = _tiny(rng)
    full = Settings(save_weights=True)
    model, history = fit_or_load("tiny", rr.RrVAE(x.shape[1:], 2), x, settings=full,
                                 chapter="test", data_dir=tmp_path, **FIT)
    assert history is not None and history.epochs == 2
    manifest = json.loads((tmp_path / "weights" / "manifest.json").read_text())
    assert manifest["weights"]["tiny"]["provenance"]["chapter"] == "test"
    assert manifest["weights"]["tiny"]["provenance"]["epochs"] == 2
    assert not list((tmp_path / "weights").glob("*.tmp*"))      # written atomically
    loaded, none = fit_or_load("tiny", rr.RrVAE(x.shape[1:], 2), x, settings=Settings(),
                               use_cached=True, chapter="test", data_dir=tmp_path, **FIT)
    assert none is None
    np.testing.assert_array_equal(loaded.encode(x).z, model.encode(x).z)


def test_fit_or_load_does_not_save_in_quick_mode_or_unasked(tmp_path, rng):
    x = _tiny(rng)
    for s in (Settings(quick=True, save_weights=True), Settings()):
        fit_or_load("tiny", rr.RrVAE(x.shape[1:], 2), x, settings=s, chapter="t",
                    data_dir=tmp_path, **FIT)
    assert not (tmp_path / "weights").exists()


def test_fit_or_load_trains_when_the_cache_is_for_another_model(tmp_path, rng):
    x = _tiny(rng)
    fit_or_load("tiny", rr.RrVAE(x.shape[1:], 2), x, settings=Settings(save_weights=True),
                chapter="t", data_dir=tmp_path, **FIT)
    with pytest.warns(UserWarning, match="another configuration.*latent_dim: cached 2, here 3"):
        _, history = fit_or_load("tiny", rr.RrVAE(x.shape[1:], 3), x,
                                 settings=Settings(use_cached_weights=True), chapter="t",
                                 data_dir=tmp_path, **FIT)
    assert history is not None                                    # trained instead
    with pytest.warns(UserWarning, match="no cached weights named 'other'"):
        _, history = fit_or_load("other", rr.RrVAE(x.shape[1:], 2), x,
                                 settings=Settings(use_cached_weights=True), chapter="t",
                                 data_dir=tmp_path, **FIT)
    assert history is not None


def test_the_book_cache_matches_the_chapters_models():
    # the cached weights load through fit_or_load without retraining: same configuration
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, history = fit_or_load("ch6_synthetic_graphene", rr.RrVAE((24, 24), 2), None,
                                     settings=Settings(use_cached_weights=True), chapter="t")
    assert history is None and tuple(model.config.pattern_shape) == (24, 24)


# ------------------------------------------------------------------------------------ check
def test_check_says_not_answered_and_never_raises_for_a_student(capsys):
    result = check("ch5-vacancy", None, icom=np.zeros(4), on_site=np.ones(4, bool))
    assert not result and not result.answered
    assert "not answered yet" in capsys.readouterr().out
    result = check("ch5-vacancy", "a string", icom=np.arange(4.0), on_site=[0, 0, 1, 1])
    assert not result and result.answered          # a bad type is a hint, not a crash
    assert "could not check this answer" in capsys.readouterr().out


def test_check_strict_raises_with_the_hint_and_unknown_names_are_refused():
    with pytest.raises(AssertionError, match="not answered yet"):
        check("ch6-refuse", None, strict=True)
    with pytest.raises(KeyError, match="ch1-sixfold"):
        check("ch9-nothing", 1)


def test_every_exercise_of_the_book_has_a_check():
    labels = set()
    for path in CHAPTERS:
        text = path.read_text(encoding="utf-8")
        labels |= set(__import__("re").findall(r":label: ex-(ch\d-[\w-]+)", text))
    assert labels and labels <= set(CHECKS), sorted(labels - set(CHECKS))


def _verdict(name, answer, **data):
    return check(name, answer, **data)


def _expect(name, right, wrong, hint, **data):
    assert _verdict(name, right, **data), name
    result = _verdict(name, wrong, **data)
    assert not result and hint in result.message, (name, result.message)


# chapter 1
def test_ch1_pca_pairs():
    from rrvae_nb.synthetic import make_templates

    template = make_templates(1, 16, seed=0)[0]
    _expect("ch1-pca-pairs", 1, 2, "minus their mean", template=template)


def test_ch1_sixfold():
    _expect("ch1-sixfold", -20.0, 100.0, "modulo 60", size=24)
    _expect("ch1-sixfold", -20.0, 20.0, "wrong sign", size=24)


def test_ch1_paper_encoder_recomputes_the_error_and_refuses_the_wrong_encoder(rng):
    from rrvae_nb.synthetic import rotated_shapes

    x = rotated_shapes(12, 16, seed=0).patterns
    mlp = rr.RrVAE((16, 16), 2, encoder="mlp")
    polar = rr.RrVAE((16, 16), 2)
    res = CHECKS["ch1-paper-encoder"].function(0.0, model=mlp, patterns=x)
    true_error = float(res[1].split("gives ")[1].split(" degrees")[0])
    assert true_error > 10             # untrained perceptron: unrelated angles
    _expect("ch1-paper-encoder", true_error, true_error + 5, "angle_tracking gives",
            model=mlp, patterns=x)
    assert "encoder='mlp'" in _verdict("ch1-paper-encoder", 1.0, model=polar,
                                       patterns=x).message


def test_ch1_likelihood(rng):
    x = _tiny(rng, size=16)
    bern = rr.RrVAE((16, 16), 2, likelihood="bernoulli")
    spread = bern.encode(x).z.std(0)
    _expect("ch1-likelihood", spread.min(), spread.max() + 1, "the smallest", model=bern,
            patterns=x)
    assert "likelihood='bernoulli'" in _verdict("ch1-likelihood", 0.1, model=rr.RrVAE(
        (16, 16), 2), patterns=x).message


# chapter 2
def test_ch2_symmetry(rng):
    x = _tiny(rng, size=16)
    m6 = rr.RrVAE((16, 16), 2, symmetry=6)
    com_angle = rng.uniform(-np.pi, np.pi, len(x))
    exact = abs(np.mean(np.exp(6j * (m6.encode(x).angle - com_angle))))
    _expect("ch2-symmetry", exact, exact + 0.2, "n=6", model=m6, patterns=x,
            com_angle=com_angle)
    assert "symmetry=6" in _verdict("ch2-symmetry", exact, model=rr.RrVAE((16, 16), 2),
                                    patterns=x, com_angle=com_angle).message


def test_ch2_scale(rng):
    x = _tiny(rng, size=16)
    m = rr.RrVAE((16, 16), 2)                     # scale 0.1, the default
    s = m.encode(x).z.std(0)
    _expect("ch2-scale", s.min(), s.max() + 1, "smallest", model=m, patterns=x)
    assert "scale=0.1" in _verdict("ch2-scale", s.min(), model=rr.RrVAE((16, 16), 2,
                                   scale=0.01), patterns=x).message


class _COM:
    def __init__(self, magnitude, divergence):
        self.magnitude, self._div = magnitude, divergence

    def divergence(self):
        return self._div


def test_ch2_com_score(rng):
    from scipy.spatial import cKDTree

    from rrvae_nb.metrics import roc_auc

    shape = (10, 10)
    pristine = _COM(rng.random(shape), rng.random(shape))
    defect = np.zeros(shape, bool)
    defect[4:6, 4:6] = True
    div = rng.random(shape) + 3 * defect              # the divergence marks the defect
    vacancy = _COM(rng.random(shape), div)
    near = {"vacancy": defect.ravel()}
    coms = {"pristine": pristine, "vacancy": vacancy}
    ref = np.stack([pristine.magnitude.ravel()], 1)
    mag_only = roc_auc(cKDTree(ref / ref.std(0)).query(
        vacancy.magnitude.ravel()[:, None] / ref.std(0))[0], near["vacancy"])
    ref2 = np.stack([pristine.magnitude.ravel(), pristine.divergence().ravel()], 1)
    both = roc_auc(cKDTree(ref2 / ref2.std(0)).query(np.stack(
        [vacancy.magnitude.ravel(), div.ravel()], 1) / ref2.std(0))[0], near["vacancy"])
    assert both > 0.9
    _expect("ch2-com-score", both, mag_only, "magnitude alone", coms=coms, near_defect=near)


# chapter 3
def test_ch3_scale(rng):
    x = _tiny(rng, size=16)
    m = rr.RrVAE((16, 16), 2)
    enc = m.encode(x)
    r = enc.z.std(0) / enc.z_std.mean(0)
    _expect("ch3-scale", r.min(), r.min() + 5, "take the smallest", model=m, patterns=x)


def test_ch3_adf(rng):
    zn = np.zeros((8, 8), bool)
    zn[::2] = True
    on_site = np.ones((8, 8), bool)
    adf = rng.random((8, 8)) + 2 * zn                  # Zn columns are brighter: AUC 1
    _expect("ch3-adf", 1.0, 0.0, "labels swapped", adf=adf, zn_site=zn, on_site=on_site)


def test_ch3_thickness(rng):
    vec = rng.normal(size=(6, 6, 2))
    to_col = vec / np.linalg.norm(vec, axis=-1, keepdims=True)   # the COM points at the column
    ring = np.ones((6, 6), bool)
    _expect("ch3-thickness", 1.0, 0.5, "Zn ring only", com_vector=vec, to_column=to_col,
            zn_ring=ring)


# chapter 4
class _History:
    def __init__(self, losses):
        self.val_loss = losses


def test_ch4_pca13():
    _expect("ch4-pca13", 250.0, 120.0, "the chapter's model", history=_History([300.0, 250.0]),
            reference=_History([200.0, 120.0]))


def test_ch4_scale(rng):
    x = _tiny(rng, size=16)
    m = rr.RrVAE((16, 16), 2)
    enc = m.encode(x)
    r = enc.z.std(0) / enc.z_std.mean(0)
    _expect("ch4-scale", r.min(), r.min() + 5, "the smallest", model=m, patterns=x)
    assert "not in [0, 1]" in _verdict("ch4-scale", r.min(), model=m, patterns=x * 5).message


def test_ch4_com_score():
    def defect_score(z_map, step_nm):
        return z_map[..., 0] / step_nm

    def locate(s):
        return 0.0, float(s.mean())

    mag = np.full((4, 4), 0.4)
    _expect("ch4-com-score", 4.0, 0.9, "rrVAE's AUC", magnitude=mag, step_nm=0.1,
            defect_score=defect_score, locate=locate, rrvae_auc=0.9)


# chapter 5
def test_ch5_descan_first():
    from rrvae_nb.com import COMMaps, find_rotation

    yy, xx = np.mgrid[-8:8, -8:8].astype(float)
    field = COMMaps(com_y=-yy * np.exp(-(yy**2 + xx**2) / 20) + 0.01 * xx,
                    com_x=-xx * np.exp(-(yy**2 + xx**2) / 20), units="mrad")
    found = find_rotation(field).rotation_deg
    _expect("ch5-descan-first", found - 28.0, found - 28.0 + 3, "ROTATION_DEG", com_raw=field,
            rotation_deg=28.0)


def test_ch5_vacancy():
    on = np.zeros(20, bool)
    on[:3] = True
    icom = np.where(on, -1.0, 0.0) + np.linspace(0, 0.1, 20)   # low potential at the vacancy
    _expect("ch5-vacancy", -1, 1, "missing atom", icom=icom, on_site=on)


def test_ch5_epochs():
    _expect("ch5-epochs", "dose", "epochs", "cannot create", aucs={"epochs": 0.6, "dose": 0.9})


# chapter 6
def test_ch6_collapse(rng):
    x = _tiny(rng, size=16) * 0.1
    m = rr.RrVAE((16, 16), 2)
    enc = m.encode(x)
    r = enc.z.std(0) / enc.z_std.mean(0)
    _expect("ch6-collapse", r.max(), r.max() + 5, "take the largest", model=m, patterns=x)
    assert "stretched" in _verdict("ch6-collapse", r.max(), model=m, patterns=x * 40).message


def test_ch6_com(rng):
    latent = rng.uniform(-np.pi, np.pi, 50)
    com_angle = latent + 0.3 + 0.05 * rng.normal(size=50)      # a constant offset: R near 1
    true_angle = rng.uniform(-np.pi, np.pi, 50)
    strong = np.ones(50, bool)
    right = abs(np.mean(np.exp(1j * (latent - com_angle))))
    wrong = abs(np.mean(np.exp(1j * (latent - true_angle))))
    assert right > 0.95
    _expect("ch6-com", right, wrong, "com.angle", latent_angle=latent, com_angle=com_angle,
            strong=strong, true_angle=true_angle)


def test_ch6_chunks():
    mb = 32 * 32 * 64 * 64 * 4 / 1e6
    _expect("ch6-chunks", mb, mb / 2, "uint16", chunk=32, detector_shape=(64, 64))


def test_ch6_refuse(tmp_path, rng):
    x = _tiny(rng)
    ckpt = tmp_path / "run.ckpt"
    rr.fit(rr.RrVAE(x.shape[1:], 2), x, checkpoint=ckpt, lr=3e-3, **FIT)
    with pytest.raises(ValueError) as err:
        rr.fit(rr.RrVAE(x.shape[1:], 2), x, checkpoint=ckpt, lr=1e-3, **FIT)
    _expect("ch6-refuse", str(err.value), "some other message", "same checkpoint")
    assert check("ch6-refuse", err.value)       # the exception itself is accepted


def test_every_check_has_a_unit_test_above():
    tested = {"ch1-pca-pairs", "ch1-sixfold", "ch1-paper-encoder", "ch1-likelihood",
              "ch2-symmetry", "ch2-scale", "ch2-com-score", "ch3-scale", "ch3-adf",
              "ch3-thickness", "ch4-pca13", "ch4-scale", "ch4-com-score", "ch5-descan-first",
              "ch5-vacancy", "ch5-epochs", "ch6-collapse", "ch6-com", "ch6-chunks", "ch6-refuse"}
    for name in tested:
        assert f"def test_{name.replace('-', '_')}" in Path(__file__).read_text()
    assert set(CHECKS) == tested


def test_check_asks_for_the_data_a_student_left_as_none(capsys):
    result = check("ch2-scale", 0.1, model=None, patterns=np.zeros((2, 4, 4)))
    assert not result and "model=" in result.message


# -------------------------------------------------------------------- the chapters' plumbing
def _code_cells(path):
    return [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
            if c["cell_type"] == "code"]


def test_plumbing_cells_are_shared_tagged_and_read_the_settings():
    # One Colab cell (it must run before the package is installed, so it cannot live in it),
    # removed from the published page; the configuration cell reads rrvae_nb.chapter.settings
    # and is collapsed; no chapter reads the environment or writes cached weights itself.
    colab = set()
    for path in CHAPTERS:
        cells = _code_cells(path)
        first, config = "".join(cells[0]["source"]), "".join(cells[1]["source"])
        assert "google.colab" in first and "remove-cell" in cells[0]["metadata"]["tags"]
        colab.add(first)
        assert "S = settings()" in config and "hide-input" in cells[1]["metadata"]["tags"]
        later = "".join("".join(c["source"]) for c in cells[1:])
        assert "os.environ" not in later, path.name
        assert "save_weights(" not in later, path.name     # fit_or_load does it
    assert len(colab) == 1
