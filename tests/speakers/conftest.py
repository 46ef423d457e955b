"""Fixtures of the speaker tests: the voice encoder and a cache of synthesised sentences."""

import pytest

from tests.support.voices import tools_missing


@pytest.fixture(scope="session")
def voice_cache(tmp_path_factory):
    missing = tools_missing()
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (make test installs espeak-ng, festival and ffmpeg)")
    return tmp_path_factory.mktemp("voices")


@pytest.fixture(scope="session")
def encoder():
    from podinsight_dagster.speakers.encoder import load_encoder

    return load_encoder()
