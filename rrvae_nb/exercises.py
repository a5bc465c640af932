"""The checks of the book's exercises, one per exercise, run by :func:`rrvae_nb.chapter.check`.

Each check receives the student's ``answer`` and, as keywords, what it needs from the chapter
(data, a trained model, a map). It computes the right answer itself from those at run time (so
nothing here is a stored number that could go stale), and returns ``(correct, message)``: a
confirmation with the number, or a hint aimed at the typical wrong answer. Where an exercise asks
for a statistic of a model the student trains, the check recomputes the statistic from that model
and first checks that it is the model the exercise asks for.

Names are the exercise labels without ``ex-``: ``check("ch1-sixfold", answer, size=SIZE)``.
"""

from __future__ import annotations

import math
import re

import numpy as np

from .chapter import ExerciseCheck, register

__all__ = ["CHECKS"]

CHECKS: dict[str, ExerciseCheck] = {}


def _number(answer) -> float:
    value = np.asarray(answer, dtype=float)
    if value.size != 1:
        raise ValueError(f"expected one number, got an array of shape {value.shape}")
    return float(value.reshape(()))


def _near(answer: float, expected: float, tol: float) -> bool:
    return abs(answer - expected) <= tol


def _resultant(a, b, n: int = 1, mask=None) -> float:
    """Mean resultant length |<exp(i n (a - b))>| of two angle arrays (rad): 1 = same up to a
    constant offset, about 0 = unrelated."""
    d = np.exp(1j * n * (np.asarray(a, float) - np.asarray(b, float)))
    if mask is not None:
        d = d[np.asarray(mask, bool)]
    return float(abs(np.mean(d)))


def _spread_ratio(model, patterns) -> np.ndarray:
    """Per content latent: spread of the posterior means over the patterns / mean posterior
    standard deviation (below about 1: the latent says nothing about which pattern it saw)."""
    enc = model.encode(np.asarray(patterns))
    return enc.z.std(0) / enc.z_std.mean(0)


def _wrong_model(model, **expected) -> str | None:
    cfg = model.config
    for key, value in expected.items():
        if getattr(cfg, key) != value:
            return (f"this model has {key}={getattr(cfg, key)!r}; the exercise asks for "
                    f"{key}={value!r} (pass it to rr.RrVAE and train again).")
    return None


# ------------------------------------------------------------------------------ chapter 1
@register(CHECKS, "ch1-pca-pairs", "the number of PCA components (an int) that explain 95 % "
          "of the variance of two copies of templates[0] turned by 0 and 180 degrees")
def _ch1_pca_pairs(answer, *, template):
    from .model.rotate import rotate_patterns

    copies = rotate_patterns(np.repeat(np.asarray(template)[None], 2, 0), np.array([0, np.pi]))
    flat = copies.reshape(2, -1).astype(np.float64)
    s = np.linalg.svd(flat - flat.mean(0), compute_uv=False)
    frac = s**2 / (s**2).sum()
    expected = int(np.searchsorted(np.cumsum(frac), 0.95) + 1)
    got = _number(answer)
    if got == expected:
        return True, (f"{expected} component: the centred data are plus and minus half the "
                      "difference of the two copies, a single direction.")
    if got == 2:
        return False, ("two copies give two patterns, but PCA works on the data minus their "
                       "mean: what is left of two patterns about their mean?")
    return False, f"count the components for two copies (k = 2 in section 2's loop), not {got:g}."


@register(CHECKS, "ch1-sixfold", "the encoded angle in degrees (a float) of the six-fold "
          "template turned by 100 degrees, relative to the untouched one")
def _ch1_sixfold(answer, *, size):
    from .model.rotate import rotate_patterns, wrap_angle
    from .model.rrvae import RrVAE
    from .model.synthetic import make_templates

    six = make_templates(1, size, symmetry=6, seed=1)
    m6 = RrVAE((size, size), 2, symmetry=6)
    a0 = m6.encode(six).angle[0]
    a1 = m6.encode(np.clip(rotate_patterns(six, math.radians(100)), 0, 1)).angle[0]
    expected = math.degrees(wrap_angle(a1 - a0, 6))
    got = _number(answer)
    if _near(got, expected, 3):
        return True, (f"{expected:.1f} degrees: known modulo 60 degrees and reported in "
                      "[-30, 30), 100 = 2 x 60 - 20.")
    if _near(got, 100, 3) or _near(got, 40, 3):
        return False, ("with symmetry=6 angles are known only modulo 60 degrees and reported in "
                       "[-30, 30): wrap your value into that range.")
    if _near(got, -expected, 3):
        return False, "right size, wrong sign: a positive angle turns counter-clockwise."
    return False, f"{got:.1f} degrees is not what the model reports; encode both patterns."


@register(CHECKS, "ch1-paper-encoder", "the median angle error in degrees (a float) that "
          "angle_tracking reports for the trained encoder='mlp' model on the test patterns")
def _ch1_paper_encoder(answer, *, model, patterns, turns=(30, 90, 150, -120)):
    from .metrics import angle_tracking

    if (msg := _wrong_model(model, encoder="mlp")) is not None:
        return False, msg
    expected, _ = angle_tracking(model, np.asarray(patterns), np.radians(turns))
    got = _number(answer)
    if not _near(got, expected, 0.5):
        return False, (f"angle_tracking gives {expected:.1f} degrees for this model on these "
                       f"patterns, not {got:.1f}: use the first value it returns (degrees).")
    verdict = ("still far from equivariant: the perceptron has not learned to read the "
               "orientation" if expected > 10 else "it has learned to track the angle")
    return True, f"median angle error {expected:.1f} degrees: {verdict}."


@register(CHECKS, "ch1-likelihood", "the smallest spread over the test patterns of a content "
          "latent of the Bernoulli model, min(enc.z.std(0)) (a float)")
def _ch1_likelihood(answer, *, model, patterns, gaussian_model=None):
    if (msg := _wrong_model(model, likelihood="bernoulli")) is not None:
        return False, msg
    spread = model.encode(np.asarray(patterns)).z.std(0)
    got = _number(answer)
    if not _near(got, float(spread.min()), 1e-3 + 0.01 * spread.min()):
        return False, (f"the Bernoulli model's content latents spread by {np.round(spread, 3)} "
                       f"over these patterns; the answer is the smallest, not {got:.3f}.")
    extra = ""
    if gaussian_model is not None:
        g = gaussian_model.encode(np.asarray(patterns)).z.std(0)
        extra = f" (the Gaussian model of section 4: {np.round(g, 3)})"
    return True, f"spreads {np.round(spread, 3)}{extra}."


# ------------------------------------------------------------------------------ chapter 2
@register(CHECKS, "ch2-symmetry", "the concordance (a float in [0, 1]) of the symmetry=6 "
          "model's angle with the COM direction modulo 60 degrees")
def _ch2_symmetry(answer, *, model, patterns, com_angle):
    if (msg := _wrong_model(model, symmetry=6)) is not None:
        return False, msg
    expected = _resultant(model.encode(np.asarray(patterns)).angle, np.ravel(com_angle), 6)
    got = _number(answer)
    if _near(got, expected, 0.01):
        return True, f"concordance modulo 60 degrees {expected:.3f}."
    return False, (f"the symmetry=6 model's concordance is {expected:.3f}, not {got:.3f}: "
                   "compare enc6.angle with com_angle with n=6.")


def _collapse_check(answer, model, patterns, **config):
    if (msg := _wrong_model(model, **config)) is not None:
        return False, msg
    spread = model.encode(np.asarray(patterns)).z.std(0)
    got = _number(answer)
    if _near(got, float(spread.min()), 1e-3 + 0.01 * spread.min()):
        return True, (f"content latents spread by {np.round(spread, 3)} over the scan: compare "
                      "with the model of the chapter.")
    return False, (f"this model's content latents spread by {np.round(spread, 3)}; the answer "
                   f"is the smallest, min(enc.z.std(0)), not {got:.3f}.")


@register(CHECKS, "ch2-scale", "the smallest spread min(enc.z.std(0)) (a float) of the "
          "content latents of the model trained with scale=0.1")
def _ch2_scale(answer, *, model, patterns):
    return _collapse_check(answer, model, patterns, scale=0.1)


@register(CHECKS, "ch2-com-score", "the vacancy's ROC AUC (a float) of the nearest-neighbour "
          "score built from the COM magnitude and divergence")
def _ch2_com_score(answer, *, coms, near_defect, kind="vacancy"):
    from scipy.spatial import cKDTree

    from .metrics import roc_auc

    def features(k, divergence=True):
        c = coms[k]
        cols = [c.magnitude.ravel()] + ([c.divergence().ravel()] if divergence else [])
        return np.stack(cols, 1)

    auc = {}
    for div in (True, False):
        ref = features("pristine", div)
        tree = cKDTree(ref / ref.std(0))
        auc[div] = roc_auc(tree.query(features(kind, div) / ref.std(0))[0], near_defect[kind])
    got = _number(answer)
    if _near(got, auc[True], 0.005):
        return True, (f"AUC {auc[True]:.3f} with magnitude and divergence (the magnitude alone: "
                      f"{auc[False]:.3f}).")
    if _near(got, auc[False], 0.005):
        return False, "that is the magnitude alone: add the divergence as a second column."
    return False, f"expected the AUC of the {kind} with both COM features, not {got:.3f}."


# ------------------------------------------------------------------------------ chapter 3
@register(CHECKS, "ch3-scale", "the smallest ratio of spread to posterior width, "
          "min(enc.z.std(0) / enc.z_std.mean(0)) (a float), of the model trained with scale=0.1")
def _ch3_scale(answer, *, model, patterns):
    if (msg := _wrong_model(model, scale=0.1)) is not None:
        return False, msg
    ratio = _spread_ratio(model, patterns)
    got = _number(answer)
    if _near(got, float(ratio.min()), 0.01 + 0.02 * ratio.min()):
        reading = ("less than its own posterior width: it says little"
                   if ratio.min() < 1 else "more than its posterior width")
        return True, f"ratios {np.round(ratio, 2)}; the weaker latent varies by {reading}."
    return False, (f"this model's ratios are {np.round(ratio, 2)}: divide the spread of the "
                   f"means by the mean posterior width and take the smallest, not {got:.2f}.")


@register(CHECKS, "ch3-adf", "the ROC AUC (a float) of the thin crystal's dark-field image for "
          "Zn against S sites")
def _ch3_adf(answer, *, adf, zn_site, on_site):
    from .metrics import roc_auc

    adf, zn_site, on_site = (np.asarray(a) for a in (adf, zn_site, on_site))
    expected = roc_auc(adf[on_site], zn_site[on_site])
    got = _number(answer)
    if _near(got, expected, 0.005):
        return True, f"AUC {expected:.3f}: the dark field alone tells Zn from S columns."
    if _near(got, 1 - expected, 0.005):
        return False, "labels swapped: score Zn sites as the positives (site[30])."
    return False, (f"use the positions at a column only (on_site) and the Zn label; "
                   f"got {got:.3f}.")


@register(CHECKS, "ch3-thickness", "the mean cosine (a float) of the COM with the direction "
          "to the Zn columns on the ring, for the crystal simulated at the new thickness")
def _ch3_thickness(answer, *, com_vector, to_column, zn_ring):
    from .metrics import cos_toward

    expected = float(np.mean(cos_toward(com_vector, to_column)[np.asarray(zn_ring)]))
    got = _number(answer)
    if _near(got, expected, 0.01):
        return True, f"mean cosine {expected:.2f} toward the Zn columns."
    return False, (f"average cos_toward(c.vector, to_column) over the Zn ring only; expected "
                   f"{expected:.2f}, got {got:.2f}.")


# ------------------------------------------------------------------------------ chapter 4
@register(CHECKS, "ch4-pca13", "the last held-out loss per pattern (a float) of the model "
          "trained on the 13-component patterns")
def _ch4_pca13(answer, *, history, reference):
    expected, ref = history.val_loss[-1], reference.val_loss[-1]
    got = _number(answer)
    if _near(got, expected, 1e-6 * max(1.0, abs(expected))):
        return True, (f"held-out loss {expected:.0f} against {ref:.0f} with the chapter's "
                      "components.")
    if _near(got, ref, 1e-6 * max(1.0, abs(ref))):
        return False, "that is the chapter's model: read the history of the 13-component one."
    return False, f"take history.val_loss[-1] of the 13-component model ({got:.0f} is not)."


@register(CHECKS, "ch4-scale", "the smallest ratio of spread to posterior width, "
          "min(enc.z.std(0) / enc.z_std.mean(0)) (a float), of the model trained on [0, 1] "
          "patterns")
def _ch4_scale(answer, *, model, patterns):
    patterns = np.asarray(patterns)
    if patterns.min() < -1e-6 or patterns.max() > 1 + 1e-6:
        return False, ("these patterns are not in [0, 1]: scale them with "
                       "preprocess.normalise(denoised[k]) and train on those.")
    ratio = _spread_ratio(model, patterns)
    got = _number(answer)
    if _near(got, float(ratio.min()), 0.01 + 0.02 * ratio.min()):
        reading = ("collapsed: a latent barely tells the patterns apart" if ratio.min() < 2
                   else "each latent's values spread over several posterior widths")
        return True, f"ratios {np.round(ratio, 2)}: {reading}."
    return False, (f"this model's ratios are {np.round(ratio, 2)}; the answer is the smallest, "
                   f"not {got:.2f}.")


@register(CHECKS, "ch4-com-score", "the AUC (a float) of defect_score applied to the COM "
          "magnitude, as locate() reports it")
def _ch4_com_score(answer, *, magnitude, step_nm, defect_score, locate, rrvae_auc=None):
    expected = float(locate(defect_score(np.asarray(magnitude)[..., None], step_nm))[1])
    got = _number(answer)
    if _near(got, expected, 0.005):
        extra = "" if rrvae_auc is None else f" (the rrVAE's: {rrvae_auc:.3f})"
        return True, f"AUC of the COM score {expected:.3f}{extra}."
    if rrvae_auc is not None and _near(got, rrvae_auc, 0.005):
        return False, "that is the rrVAE's AUC: score the COM magnitude instead."
    return False, f"expected locate(score)[1] of the COM-magnitude score, not {got:.3f}."


# ------------------------------------------------------------------------------ chapter 5
@register(CHECKS, "ch5-descan-first", "the error in degrees (a float) of the rotation found on "
          "com_raw, found.rotation_deg - ROTATION_DEG")
def _ch5_descan_first(answer, *, com_raw, rotation_deg):
    from .stem.com import find_rotation

    expected = find_rotation(com_raw).rotation_deg - rotation_deg
    got = _number(answer)
    if _near(got, expected, 0.05):
        return True, (f"rotation error {expected:.2f} degrees: the descan ramp hardly moves the "
                      "rotation; the iCOM is another matter.")
    if _near(got, 0, 0.05) and not _near(expected, 0, 0.05):
        return False, "that is the rotation found after descan removal: use com_raw."
    return False, f"expected find_rotation(com_raw).rotation_deg - ROTATION_DEG, not {got:.2f}."


@register(CHECKS, "ch5-vacancy", "the sign (+1 or -1) by which the iCOM should be multiplied "
          "so that a vacancy scores high")
def _ch5_vacancy(answer, *, icom, on_site):
    from .metrics import roc_auc

    auc = roc_auc(np.asarray(icom), np.asarray(on_site))
    expected = 1 if auc > 0.5 else -1
    got = _number(answer)
    if got not in (1, -1):
        return False, "answer +1 or -1."
    if got == expected:
        return True, (f"sign {expected:+d}: the AUC of {expected:+d} x iCOM at the vacancy is "
                      f"{max(auc, 1 - auc):.3f}; a missing atom is a missing potential peak.")
    return False, ("a vacancy is a missing atom: is the potential there higher or lower than "
                   "at an atom?")


@register(CHECKS, "ch5-epochs", "which helps the rrVAE more at the dose where it failed: "
          "'epochs' (three times the training) or 'dose' (ten times the electrons)")
def _ch5_epochs(answer, *, aucs):
    if answer not in ("epochs", "dose"):
        return False, "answer 'epochs' or 'dose'."
    best = max(aucs, key=aucs.get)
    if answer == best:
        return True, (f"AUC {aucs['dose']:.3f} with ten times the dose against "
                      f"{aucs['epochs']:.3f} with three times the training.")
    return False, ("compare the two AUCs you measured: training longer cannot create "
                   "information the counts do not hold.")


# ------------------------------------------------------------------------------ chapter 6
@register(CHECKS, "ch6-collapse", "the largest ratio of spread to posterior width, "
          "max(enc.z.std(0) / enc.z_std.mean(0)) (a float), of the model trained on the "
          "unstretched sample")
def _ch6_collapse(answer, *, model, patterns):
    patterns = np.asarray(patterns)
    if patterns.std() > 0.2:
        return False, ("these patterns have been stretched (spread above 0.2): train and "
                       "encode on the unstretched sample.")
    ratio = _spread_ratio(model, patterns)
    got = _number(answer)
    if _near(got, float(ratio.max()), 0.01 + 0.02 * ratio.max()):
        return True, f"ratios {np.round(ratio, 2)}: the posterior means hardly vary."
    return False, f"this model's ratios are {np.round(ratio, 2)}; take the largest."


@register(CHECKS, "ch6-com", "the mean resultant length R (a float) of the angle latent minus "
          "the COM direction, on the positions with the stronger field (`strong`)")
def _ch6_com(answer, *, latent_angle, com_angle, strong, true_angle=None):
    expected = _resultant(latent_angle, com_angle, 1, strong)
    got = _number(answer)
    if _near(got, expected, 0.005):
        return True, f"R = {expected:.3f} between the angle latent and the COM direction."
    if true_angle is not None and _near(got, _resultant(latent_angle, true_angle, 1, strong),
                                        0.005):
        return False, "that is section 7's R against the true direction: use com.angle."
    return False, f"expected R against the COM direction on `strong`, not {got:.3f}."


@register(CHECKS, "ch6-chunks", "the size in MB (10^6 bytes, a float) of one chunk as float32, "
          "the type prepare computes in, for 32 x 32 scan positions per chunk")
def _ch6_chunks(answer, *, chunk, detector_shape):
    ky, kx = detector_shape
    expected = chunk * chunk * ky * kx * 4 / 1e6
    got = _number(answer)
    if _near(got, expected, 0.05):
        return True, f"{expected:.1f} MB per chunk, before temporaries."
    if _near(got, expected / 2, 0.05):
        return False, "that is the uint16 counts on disk: prepare works in float32 (4 bytes)."
    if _near(got, expected * 1.048576, 0.05) or _near(got, expected / 1.048576, 0.05):
        return False, "use MB = 10^6 bytes."
    return False, f"chunk x chunk patterns of ky x kx float32 values; {got:.1f} MB is not."


@register(CHECKS, "ch6-refuse", "the text (a str) of the error that fit raises")
def _ch6_refuse(answer, **_):
    if isinstance(answer, BaseException):
        answer = str(answer)
    if not isinstance(answer, str):
        return False, "catch the ValueError (except ValueError as err) and answer str(err)."
    if re.search(r"\blr\b", answer) and "checkpoint" in answer.lower():
        return True, "fit refuses a checkpoint written with other arguments, and names lr."
    return False, ("this is not fit's refusal of the checkpoint: call rr.fit with the same "
                   "checkpoint and lr=1e-3.")
