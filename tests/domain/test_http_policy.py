"""Network policy: what HttpClient may connect to, checked on every resolved address."""

from __future__ import annotations

import pytest

from tests.support.cdn import Fault, PodcastCDN
from podinsight_dagster.fetch.http import PermanentFetchError
from podinsight_dagster.fetch.netpolicy import NetworkPolicy

from .test_http_support import AUDIO, make_client


@pytest.fixture
def two_hosts():
    """The same CDN twice: on 127.0.0.1 and on 127.0.0.2 (both loopback on Linux)."""
    with PodcastCDN("127.0.0.1", name="one") as one, PodcastCDN("127.0.0.2", name="two") as two:
        one.add_file("/ep.mp3", AUDIO)
        two.add_file("/ep.mp3", AUDIO)
        yield one, two


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "::1", "10.1.2.3", "172.16.0.1", "192.168.1.1",
    "169.254.169.254",  # cloud metadata service
    "fe80::1", "fe80::1%eth0", "fc00::1", "224.0.0.1", "ff02::1", "0.0.0.0", "::",
    "100.64.0.1", "100.127.255.254",  # CGNAT
    "240.0.0.1", "255.255.255.255", "192.0.2.1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",  # IPv4-mapped IPv6
    "::127.0.0.1", "2002:7f00:1::", "64:ff9b::a9fe:a9fe", "64:ff9b:1::1",  # compat, 6to4, NAT64
])
def test_default_policy_blocks_special_addresses(address):
    assert not NetworkPolicy().permits(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8",
                                     "2002:808:808::", "64:ff9b::808:808"])
def test_default_policy_allows_public_unicast(address):
    assert NetworkPolicy().permits(address)


def test_parse():
    assert NetworkPolicy.parse(None) == NetworkPolicy() == NetworkPolicy.parse("") == NetworkPolicy.parse("0")
    everything = NetworkPolicy.parse("1")
    assert all(everything.permits(a) for a in ("127.0.0.1", "169.254.169.254", "10.0.0.1", "::1"))
    some = NetworkPolicy.parse("127.0.0.2/32, 10.0.0.0/8")
    assert some.permits("127.0.0.2") and some.permits("10.9.9.9") and some.permits("::ffff:127.0.0.2")
    assert not some.permits("127.0.0.1") and not some.permits("169.254.169.254") and not some.permits("::1")
    with pytest.raises(ValueError, match="PODINSIGHT_ALLOW_PRIVATE_NETWORKS"):
        NetworkPolicy.parse("127.0.0.1/33")


def _blocked(client, url, tmp_path):
    with pytest.raises(PermanentFetchError) as err:
        client.download(url, tmp_path / "ep.mp3")
    assert not (tmp_path / "ep.mp3").exists()
    return str(err.value)


def test_default_policy_refuses_loopback_with_a_clear_error(two_hosts, tmp_path):
    one, _ = two_hosts
    client, sleeps = make_client(policy=NetworkPolicy())
    msg = _blocked(client, one.url("/ep.mp3"), tmp_path)
    assert "refusing to connect" in msg and "127.0.0.1" in msg and "PODINSIGHT_ALLOW_PRIVATE_NETWORKS" in msg
    assert one.request_count() == 0 and sleeps == []  # not retried: a policy answer is final


def test_hostname_resolving_to_loopback_is_blocked(two_hosts, tmp_path):
    one, _ = two_hosts
    port = one.base_url.rsplit(":", 1)[1]
    client, _ = make_client(policy=NetworkPolicy())
    msg = _blocked(client, f"http://localhost:{port}/ep.mp3", tmp_path)
    assert "refusing to connect to localhost" in msg and one.request_count() == 0


def test_ipv4_mapped_ipv6_literal_is_blocked(tmp_path):
    client, _ = make_client(policy=NetworkPolicy())
    msg = _blocked(client, "http://[::ffff:127.0.0.1]:9/ep.mp3", tmp_path)
    assert "refusing to connect" in msg and "::ffff:127.0.0.1" in msg


def test_allowing_one_address_keeps_the_others_blocked(two_hosts, tmp_path):
    one, two = two_hosts
    client, _ = make_client(policy=NetworkPolicy.parse("127.0.0.2/32"))
    assert client.download(two.url("/ep.mp3"), tmp_path / "ok.mp3").bytes == len(AUDIO)
    assert "refusing to connect" in _blocked(client, one.url("/ep.mp3"), tmp_path)
    assert one.request_count() == 0


def test_redirect_from_allowed_to_blocked_host_is_refused(two_hosts, tmp_path):
    one, two = two_hosts
    two.set_fault("/go", Fault(redirect_to=one.url("/ep.mp3")))
    client, _ = make_client(policy=NetworkPolicy.parse("127.0.0.2/32"))
    msg = _blocked(client, two.url("/go"), tmp_path)
    assert "refusing to connect to 127.0.0.1" in msg
    assert two.request_count("/go") == 1 and one.request_count() == 0


def test_feed_fetch_is_guarded_too(two_hosts):
    one, _ = two_hosts
    one.add_file("/feed.xml", b"<rss/>")
    client, _ = make_client(policy=NetworkPolicy())
    with pytest.raises(PermanentFetchError, match="PODINSIGHT_ALLOW_PRIVATE_NETWORKS"):
        client.fetch_bytes(one.url("/feed.xml"))
    assert one.request_count() == 0


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/ep.mp3", "gopher://example.com/",
                                 "data:audio/mpeg;base64,SUQz", "http:///no-host"])
def test_only_http_and_https(url, tmp_path):
    client, _ = make_client(policy=NetworkPolicy.parse("1"))
    with pytest.raises(PermanentFetchError, match="unsupported URL scheme|without a host"):
        client.download(url, tmp_path / "ep.mp3")
    with pytest.raises(PermanentFetchError):
        client.fetch_bytes(url)
    assert not (tmp_path / "ep.mp3").exists()
