import pytest

from nanoedx_dataset.store.files import atomic_output


def test_output_appears_only_when_complete(tmp_path):
    out = tmp_path / "maps.npy"
    out.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(out) as tmp:
            assert tmp.name == "maps.npy.partial"
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert out.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["maps.npy"]
    with atomic_output(out) as tmp:
        tmp.write_text("new")
    assert out.read_text() == "new" and not tmp.exists()
