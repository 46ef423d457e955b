import hashlib
from pathlib import Path

import pytest

from podinsight_dagster.transcribe.models import BASE_MODEL_SHA256, ModelNotFoundError, resolve_model


def test_tiny_en_resolves_to_the_bundled_package():
    path = Path(resolve_model("tiny.en", Path("/nonexistent")))
    assert (path / "model.bin").is_file() and (path / "tokenizer.json").is_file()


def test_base_is_joined_once_and_verified(tmp_path):
    path = Path(resolve_model("base", tmp_path))
    assert {p.name for p in path.iterdir()} >= {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"}
    h = hashlib.sha256()
    with open(path / "model.bin", "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    assert h.hexdigest() == BASE_MODEL_SHA256
    mtime = (path / "model.bin").stat().st_mtime_ns
    assert Path(resolve_model("base", tmp_path)) == path
    assert (path / "model.bin").stat().st_mtime_ns == mtime  # not joined again


def test_model_folder_path_works(tmp_path):
    tiny = resolve_model("tiny.en", tmp_path)
    assert resolve_model(tiny, tmp_path) == str(Path(tiny).resolve())  # the venv may sit behind a symlink
    with pytest.raises(ModelNotFoundError, match="no model.bin"):
        resolve_model(str(tmp_path), tmp_path)


def test_unknown_model_lists_what_is_available_and_never_downloads(tmp_path):
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("large-v3", tmp_path)
    assert "tiny.en" in str(err.value) and "base" in str(err.value)
    assert "PODINSIGHT_ALLOW_MODEL_DOWNLOAD" in str(err.value)
    assert resolve_model("large-v3", tmp_path, allow_download=True) == "large-v3"
