import pytest

from rrvae_nb._atomic import replace_atomically, stale_temporaries


def test_replace_atomically_success_and_failure(tmp_path):
    target = tmp_path / "out.txt"
    replace_atomically(target, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "new"

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        replace_atomically(target, broken)
    assert target.read_text() == "new"  # the old file stands
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_temporary_name_keeps_suffix_and_is_found_as_stale(tmp_path):
    target = tmp_path / "maps.hspy"
    seen = []
    replace_atomically(target, lambda tmp: (seen.append(tmp), tmp.write_bytes(b"x")))
    assert seen[0].suffix == ".hspy" and seen[0].parent == tmp_path
    seen[0].write_bytes(b"left by a killed process")
    assert stale_temporaries(target) == [seen[0]]


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        replace_atomically(tmp_path / "no" / "f.txt", lambda tmp: tmp.write_text("x"))
    replace_atomically(tmp_path / "no" / "f.txt", lambda tmp: tmp.write_text("x"), mkdir=True)
    assert (tmp_path / "no" / "f.txt").read_text() == "x"
