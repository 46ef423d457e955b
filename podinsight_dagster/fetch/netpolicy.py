"""Which addresses Pod-Insight may connect to, and the requests adapter that enforces it on every connection.

A feed is untrusted input: its enclosure URL, a redirect or a DNS answer can point
at 127.0.0.1, the cloud metadata service (169.254.169.254) or a private network.
By default only public unicast addresses are allowed, checked on the *resolved*
address of every connection, redirects included (see http.py).
``PODINSIGHT_ALLOW_PRIVATE_NETWORKS`` opens exactly what it names: ``1`` for all,
or a comma list of CIDRs such as ``127.0.0.1/32,10.0.0.0/8``.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field

import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util import connection as urllib3_connection

CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # local-use translation: never public
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class BlockedAddressError(ConnectionError):
    """A connection to an address the network policy forbids."""


@dataclass(frozen=True)
class NetworkPolicy:
    allow_all: bool = False
    allowed: tuple[IPNetwork, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, spec: str | None) -> "NetworkPolicy":
        spec = (spec or "").strip()
        if not spec or spec.lower() in ("0", "false", "no"):
            return cls()
        if spec.lower() in ("1", "true", "yes", "all"):
            return cls(allow_all=True)
        nets = []
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                nets.append(ipaddress.ip_network(part, strict=False))
            except ValueError as exc:
                raise ValueError(
                    f"PODINSIGHT_ALLOW_PRIVATE_NETWORKS: {part!r} is not a CIDR (use 1, or e.g. 127.0.0.1/32)"
                ) from exc
        return cls(allowed=tuple(nets))

    @staticmethod
    def effective(ip: IPAddress) -> IPAddress:
        """The IPv4 address an IPv6 one stands for, when it embeds one; else ``ip``.

        ``::ffff:127.0.0.1`` (IPv4-mapped) is 127.0.0.1 to the kernel; 6to4
        (``2002::/16``), NAT64 (``64:ff9b::/96``) and the deprecated
        IPv4-compatible form (``::a.b.c.d``) carry an IPv4 address too, and are
        judged by it, so none of them can smuggle a private address through.
        """
        if not isinstance(ip, ipaddress.IPv6Address):
            return ip
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in NAT64 or (ip in IPV4_COMPATIBLE and int(ip) > 1):
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        return ip

    @classmethod
    def is_special(cls, ip: IPAddress) -> bool:
        """True for every address that is not plain public unicast."""
        ip = cls.effective(ip)
        return (
            ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast
            or ip.is_unspecified or ip.is_reserved or (ip.version == 4 and ip in CGNAT)
            or not ip.is_global or (ip.version == 6 and ip in NAT64_LOCAL)
        )

    def permits(self, address: str) -> bool:
        """Whether a connection to ``address`` (an IP literal, as resolved) is allowed."""
        ip = self.effective(ipaddress.ip_address(address.split("%", 1)[0]))
        if not self.is_special(ip):
            return True
        if self.allow_all:
            return True
        return any(ip.version == net.version and ip in net for net in self.allowed)

    def check(self, host: str, address: str) -> None:
        if not self.permits(address):
            raise BlockedAddressError(
                f"refusing to connect to {host} ({address}): loopback, private, link-local, multicast, "
                "unspecified, reserved and CGNAT addresses are blocked; set PODINSIGHT_ALLOW_PRIVATE_NETWORKS "
                "(1, or CIDRs such as 127.0.0.1/32) to allow them"
            )


# ---------------------------------------------------------------------------
# Network-policy enforcement at connection time
# ---------------------------------------------------------------------------
def _guarded_connection_class(base: type[HTTPConnection], policy: NetworkPolicy) -> type[HTTPConnection]:
    class GuardedConnection(base):  # type: ignore[misc, valid-type]
        def _new_conn(self) -> socket.socket:
            # Resolve once, check every address, connect only to an allowed one:
            # checking the name and connecting separately would let DNS rebinding
            # slip a private address in between.
            host, port = self._dns_host, self.port
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise urllib3.exceptions.NameResolutionError(self.host, self, exc) from exc
            blocked = None
            last: OSError | None = None
            for _family, _type, _proto, _canon, sockaddr in infos:
                address = sockaddr[0]
                if not policy.permits(address):
                    blocked = address
                    continue
                try:
                    return urllib3_connection.create_connection(
                        (address, port), self.timeout, source_address=self.source_address,
                        socket_options=self.socket_options,
                    )
                except socket.timeout as exc:
                    raise urllib3.exceptions.ConnectTimeoutError(
                        self, f"connection to {self.host} timed out") from exc
                except OSError as exc:
                    last = exc
                    continue
            if blocked is not None:
                policy.check(self.host, blocked)  # raises BlockedAddressError
            raise urllib3.exceptions.NewConnectionError(self, f"could not connect to {self.host}: {last}")

    GuardedConnection.__name__ = f"Guarded{base.__name__}"
    return GuardedConnection


class GuardedAdapter(HTTPAdapter):
    def __init__(self, policy: NetworkPolicy, pool_maxsize: int = 32):
        self.policy = policy
        super().__init__(pool_connections=16, pool_maxsize=pool_maxsize, max_retries=0)

    def init_poolmanager(self, *args, **kwargs):  # noqa: D401 - requests' hook
        super().init_poolmanager(*args, **kwargs)
        http_conn = _guarded_connection_class(HTTPConnection, self.policy)
        https_conn = _guarded_connection_class(HTTPSConnection, self.policy)
        http_pool = type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn})
        https_pool = type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn})
        self.poolmanager.pool_classes_by_scheme = {"http": http_pool, "https": https_pool}
