import numpy as np
import pytest

import rrvae_nb as rr
from rrvae_nb.weights import list_weights, load_weights, save_weights


def test_save_and_load_cached_weights(tmp_path):
    m = rr.RrVAE((12, 12), 2, seed=1)
    save_weights(m, "toy_model", data_dir=tmp_path, epochs=3, data="toy")
    assert list_weights(tmp_path) == {"toy_model": {"epochs": 3, "data": "toy"}}
    loaded = load_weights("toy_model", data_dir=tmp_path)
    x = np.random.default_rng(0).random((4, 12, 12)).astype(np.float32)
    np.testing.assert_array_equal(loaded.encode(x).z, m.encode(x).z)
    assert not list((tmp_path / "weights").glob("*.tmp*"))


def test_cached_weights_errors(tmp_path):
    m = rr.RrVAE((12, 12), 2)
    path = save_weights(m, "toy", data_dir=tmp_path)
    with pytest.raises(KeyError, match="available: \\['toy'\\]"):
        load_weights("other", data_dir=tmp_path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="checksum"):
        load_weights("toy", data_dir=tmp_path)
    path.unlink()
    with pytest.raises(ValueError, match="missing"):
        load_weights("toy", data_dir=tmp_path)
    with pytest.raises(ValueError, match="lower_snake_case"):
        save_weights(m, "Bad Name", data_dir=tmp_path)
