import re

import pytest

from podinsight_dagster.store.keys import (EpisodeKey, InvalidKeyError, guid_key, partition_key,
                                            validate_feed_slug)

SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
HOSTILE = [
    "../../etc/passwd",
    "https://example.com/episodes/2?id=7&x=y",
    "épisode-données-三",
    "History Hour, Episode 1 [remastered]",
    "x" * 2048,
    "sw-0003...final",
    "/leading-slash",
    "a,b",
    "tab\there",
    "..",
    ".hidden",
    "-leading-dash",
    "a" * 65,
]


def test_safe_guid_is_kept_verbatim():
    assert guid_key("tt-0001") == "tt-0001"
    assert guid_key("6f1c2a9e-3b7d-4e8a-9c51-2d0f7e4b8a13") == "6f1c2a9e-3b7d-4e8a-9c51-2d0f7e4b8a13"
    assert guid_key("A" * 64) == "A" * 64


@pytest.mark.parametrize("guid", HOSTILE)
def test_hostile_guid_gives_safe_stable_hashed_key(guid):
    key = guid_key(guid)
    assert SAFE.fullmatch(key), key
    assert key.startswith("h-") and len(key) == 2 + 16  # 64 bits of sha256
    assert ".." not in key and "/" not in key
    assert guid_key(guid) == key  # stable
    assert partition_key("feed", key) == f"feed/{key}"


def test_distinct_guids_give_distinct_keys():
    keys = {guid_key(g) for g in HOSTILE}
    assert len(keys) == len(HOSTILE)


def test_missing_guid_falls_back_to_enclosure_url():
    url = "https://cdn.example.com/a.mp3"
    assert guid_key(None, url) == guid_key("", url) == guid_key("   ", url)
    assert guid_key(None, url) != guid_key(None, "https://cdn.example.com/b.mp3")
    with pytest.raises(InvalidKeyError):
        guid_key(None, None)


def test_surrounding_whitespace_does_not_change_the_key():
    assert guid_key("  tt-0001\n") == "tt-0001"


@pytest.mark.parametrize("slug", ["a", "tech-talk", "20vc", "a" * 48])
def test_valid_slugs(slug):
    assert validate_feed_slug(slug) == slug


@pytest.mark.parametrize("slug", ["", "-x", "Tech", "a b", "a/b", "a" * 49, "../x", "é"])
def test_invalid_slugs(slug):
    with pytest.raises(InvalidKeyError):
        validate_feed_slug(slug)


def test_episode_key_round_trip_and_rejects_unsafe():
    ek = EpisodeKey.parse("tech-talk/tt-0001")
    assert (ek.feed_slug, ek.guid_key, str(ek)) == ("tech-talk", "tt-0001", "tech-talk/tt-0001")
    for bad in ["tech-talk", "tech-talk/../x", "/tech-talk/x", "Tech/x", "t/a b", "t/a/b"]:
        with pytest.raises(InvalidKeyError):
            EpisodeKey.parse(bad)
