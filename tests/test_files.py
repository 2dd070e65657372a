"""atomic_write: the old file or the new one, never half of one, and nothing left behind; sha256_of."""

import hashlib
import stat

import pytest
import torch

from labutils.files import atomic_write, sha256_of


def test_it_replaces_the_file_readable_by_everyone(tmp_path):
    path = tmp_path / "grades.csv"
    path.write_text("old\n")
    with atomic_write(path, "w", encoding="utf-8", newline="") as file:
        file.write("new\n")
        assert path.read_text() == "old\n"  # not yet
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["grades.csv"]


def test_an_error_inside_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"old weights")
    with pytest.raises(RuntimeError, match="disk full"), atomic_write(path) as file:
        file.write(b"half of the new wei")
        raise RuntimeError("disk full")
    assert path.read_bytes() == b"old weights"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_torch_save_writes_through_it(tmp_path):
    with atomic_write(tmp_path / "t.pt") as file:
        torch.save({"x": torch.arange(3)}, file)
    assert torch.equal(torch.load(tmp_path / "t.pt", weights_only=True)["x"], torch.arange(3))


def test_only_writing_modes(tmp_path):
    with pytest.raises(ValueError, match="mode 'w' or 'wb'"), atomic_write(tmp_path / "a", "a"):
        pass


def test_sha256_of_hashes_the_whole_file_block_by_block(tmp_path):
    path = tmp_path / "model.pt"
    data = bytes(range(256)) * (3 * 4096 + 7)  # three blocks of 1 MiB and a part of one
    path.write_bytes(data)
    assert sha256_of(path) == hashlib.sha256(data).hexdigest()
    path.write_bytes(data[:-1] + b"x")
    assert sha256_of(path) != hashlib.sha256(data).hexdigest()
