"""The GPU benchmark script (bench/gpu.py): it refuses without CUDA, and its --dry-run runs
every step on the CPU at tiny sizes, where the 'GPU' is the CPU and so must agree exactly."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("hyperspy")

from bench import gpu  # noqa: E402


def test_refuses_clearly_without_cuda(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "CUDA" in err and "--dry-run" in err
    assert not list(tmp_path.iterdir())  # nothing written
    assert gpu.main(["--dry-run", "--steps", "nonsense"]) == 2


@pytest.mark.slow  # about a minute on two busy cores: every step, LiberTEM's cluster included
def test_dry_run_exercises_every_step(tmp_path):
    pytest.importorskip("libertem")
    assert gpu.main(["--dry-run", "--out", str(tmp_path)]) == 0
    raw = json.loads((tmp_path / "gpu.json").read_text())
    text = (tmp_path / "gpu.md").read_text()
    assert "DRY RUN" in text and "FAILED" not in text
    steps = raw["steps"]
    assert set(steps) == set(gpu.STEPS)
    assert steps["tests"]["returncode"] in (0, 5)  # gpu tests skipped or none selected
    # the CPU stands in for the GPU: the same weights give the same numbers ...
    for name in gpu.MODELS:
        assert max(v for k, v in steps["same_weights"][name].items() if k != "n") == 0.0
        # ... and the same seeds give the same training, to the last bit
        ch2 = steps["chapter2"][name]
        assert ch2["max_weight_diff"] == 0.0
        assert ch2["cpu"]["val_loss"] == ch2["device"]["val_loss"]
        assert ch2["angle_circular_correlation"] == pytest.approx(1.0, abs=1e-6)
        syn = steps["synthetic"][name]
        assert syn["epochs"] and syn["encode_patterns_per_s"]["device"] > 0
    scan = steps["scan"]
    assert scan["shape"] == [8, 8, 64, 64]
    for diffs in scan["max_diff_vs_encode_maps"].values():
        assert max(diffs.values()) < 1e-4
