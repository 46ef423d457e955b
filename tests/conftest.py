"""Shared fixtures: an isolated data root, the bundled demo feeds on a loopback server."""

from __future__ import annotations

from pathlib import Path

import pytest

from podinsight_dagster.demo.cdn import PodcastCDN
from podinsight_dagster.demo.run import CONTENT, write_demo_catalog
from podinsight_dagster.domain.settings import Settings

TEST_MODEL = "tiny.en"  # the suite must stay fast on 2 cores


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def home(tmp_path, monkeypatch, model_cache) -> Path:
    """A fresh PODINSIGHT_HOME with loopback allowed and the tiny.en model."""
    root = tmp_path / "data"
    monkeypatch.setenv("PODINSIGHT_HOME", str(root))
    monkeypatch.setenv("PODINSIGHT_FEEDS_DIR", str(root / "feeds"))
    monkeypatch.setenv("PODINSIGHT_MODEL", TEST_MODEL)
    monkeypatch.setenv("PODINSIGHT_MODEL_CACHE", str(model_cache))
    monkeypatch.setenv("PODINSIGHT_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8")
    monkeypatch.setenv("DAGSTER_HOME", str(root / "dagster"))
    monkeypatch.delenv("PODINSIGHT_ALLOW_MODEL_DOWNLOAD", raising=False)
    return root


@pytest.fixture
def settings(home) -> Settings:
    s = Settings.from_env()
    s.ensure_dirs()
    return s


@pytest.fixture
def demo_cdn():
    """The bundled demo feeds and audio on a real loopback HTTP server."""
    with PodcastCDN(name="test-cdn") as cdn:
        cdn.add_directory(CONTENT / "feeds", prefix="/feeds")
        cdn.add_directory(CONTENT / "audio", prefix="/audio")
        yield cdn


@pytest.fixture
def demo_catalog(settings, demo_cdn):
    """A catalog of the demo feeds (or some of them) pointing at the loopback server."""
    def make(slugs: list[str] | None = None) -> list[Path]:
        return write_demo_catalog(settings.feeds_dir, demo_cdn.base_url, slugs)
    return make


def reference(feed: str, ep: str) -> str:
    return (CONTENT / "texts" / feed / f"{ep}.txt").read_text()


def audio_bytes(feed: str, ep: str) -> bytes:
    return (CONTENT / "audio" / feed / f"{ep}.mp3").read_bytes()
