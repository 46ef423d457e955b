"""Nothing leaves the machine: the connect audit that `podrun demo` runs under (tests/test_demo_e2e.py runs the
demo through it), and the audit's own checks.

The demo runs inside ``unshare -n`` (only ``lo``, brought up) under ``strace -f``, tracing every
``connect``/``sendto``/``sendmsg``/``sendmmsg`` of every process and thread. Each socket address
they name must be a local socket (AF_UNIX, AF_NETLINK, AF_UNSPEC) or loopback (127.0.0.0/8, ::1,
::ffff:127.0.0.0/104); anything else -- a DNS query to the resolver on port 53 included -- fails the
test with the offending lines. Inside the namespace such a connection fails at once
(ENETUNREACH), so no packet leaves even when the test fails; the audit sees the attempt.

The environment handed to the demo has no ORT_DISABLE_TELEMETRY: the package must set it itself
(``podinsight_dagster/__init__.py``) before onnxruntime, which runs faster-whisper's Silero VAD,
is imported. Without it onnxruntime's telemetry looks up hosts ~10 s after loading, so the audited
process is held open until ``HOLD_AFTER_ORT_S`` seconds after onnxruntime was imported (on this
machine the demo outlives that by itself; a faster machine gets the wait).

Needs root, ``unshare``, ``strace`` and ``ip`` (``make test`` installs them with apt-get when
missing); skips, saying which, without them.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AUDIT_TOOLS = ("unshare", "strace", "ip")
TRACED = "connect,sendto,sendmsg,sendmmsg"
HOLD_AFTER_ORT_S = 20.0  # onnxruntime's telemetry fires ~10 s after it loads, then again later

# Runs a module as `python -m` would, records when onnxruntime first shows up in sys.modules and,
# once the module is done, keeps the process (and onnxruntime's native threads) alive until
# HOLD_AFTER_ORT_S seconds after that. It imports nothing of Pod-Insight's or onnxruntime's itself.
HOLD_OPEN = r"""
import runpy, sys, threading, time
hold, module = float(sys.argv[1]), sys.argv[2]
start, seen = time.monotonic(), []
def watch():
    while "onnxruntime" not in sys.modules:
        time.sleep(0.05)
    seen.append(time.monotonic())
threading.Thread(target=watch, daemon=True).start()
sys.argv = [module, *sys.argv[3:]]
code = 0
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
time.sleep(0.2)
if seen:
    waited = max(0.0, seen[0] + hold - time.monotonic())
    time.sleep(waited)
    print(f"audit: onnxruntime imported at +{seen[0] - start:.1f}s, module done at "
          f"+{time.monotonic() - start - waited:.1f}s, held {waited:.1f}s more", file=sys.stderr, flush=True)
else:
    print("audit: onnxruntime never imported", file=sys.stderr, flush=True)
sys.stdout.flush()
raise SystemExit(code)
"""


def missing_prerequisite() -> str | None:
    if os.geteuid() != 0:
        return "needs root for `unshare -n` (CI runs as root)"
    missing = [tool for tool in AUDIT_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} on PATH (`make test` installs them with apt-get)"
    return None


pytestmark = pytest.mark.skipif(missing_prerequisite() is not None, reason=str(missing_prerequisite()))


# ---------------------------------------------------------------------------
# the audit


@dataclass
class Audit:
    returncode: int
    stdout: str
    stderr: str
    log: list[str]
    wall_s: float
    loopback: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def report(self) -> str:
        return "connections that are neither loopback nor a local socket:\n  " + "\n  ".join(self.violations)


_CALL = re.compile(r"^\d+\s+(?:[\d.]+\s+)?(connect|sendto|sendmsg|sendmmsg)\((.*)$")
_FAMILY = re.compile(r"sa_family=(AF_\w+)")
_INET = re.compile(r'sa_family=AF_INET, sin_port=htons\((\d+)\), sin_addr=inet_addr\("([^"]+)"\)')
_INET6 = re.compile(r'sa_family=AF_INET6, sin6_port=htons\((\d+)\).*?inet_pton\(AF_INET6, "([^"]+)"')
LOCAL_FAMILIES = {"AF_UNIX", "AF_LOCAL", "AF_NETLINK", "AF_UNSPEC"}


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def classify(line: str) -> str | None:
    """One strace line -> "local", "loopback", "violation", or None when it names no address.

    Fails closed: a connect whose address strace could not show, or a family other than the
    local ones, AF_INET and AF_INET6, is a violation.
    """
    match = _CALL.match(line)
    if match is None:
        return None  # "<... connect resumed>", exits, anything else: the entry line carried the address
    call, rest = match.groups()
    families = _FAMILY.findall(rest)
    if not families:
        return "violation" if call == "connect" else None  # sendto(fd, buf, n, flags, NULL, 0) on a connected socket
    verdicts = []
    for family in families:
        if family in LOCAL_FAMILIES:
            verdicts.append("local")
        elif family in ("AF_INET", "AF_INET6"):
            addrs = (_INET if family == "AF_INET" else _INET6).findall(rest)
            verdicts.append("loopback" if addrs and all(_loopback(a) for _, a in addrs) else "violation")
        else:
            verdicts.append("violation")
    for verdict in ("violation", "loopback"):
        if verdict in verdicts:
            return verdict
    return "local"


def run_audited(argv: list[str], log_path: Path, env: dict[str, str], timeout: float) -> Audit:
    """argv in a fresh network namespace (only lo, up) under strace; every address it names, judged."""
    inner = (f"ip link set lo up && exec strace -f -qq -ttt -s 48 -e trace={TRACED} -e signal=none "
             f"-o {shlex.quote(str(log_path))} -- {shlex.join(argv)}")
    started = time.monotonic()
    out = subprocess.run(["unshare", "--net", "--", "sh", "-c", inner], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=timeout)
    wall = time.monotonic() - started
    assert log_path.is_file(), f"strace wrote no log (rc {out.returncode}):\n{out.stderr[-3000:]}"
    audit = Audit(out.returncode, out.stdout, out.stderr, log_path.read_text().splitlines(), wall)
    for line in audit.log:
        verdict = classify(line)
        if verdict == "violation":
            audit.violations.append(line)
        elif verdict == "loopback":
            audit.loopback.append(line)
    return audit


def clean_env(**extra: str) -> dict[str, str]:
    """This environment less ORT_DISABLE_TELEMETRY and any Pod-Insight/Dagster settings, plus extra."""
    env = {k: v for k, v in os.environ.items()
           if k != "ORT_DISABLE_TELEMETRY" and not k.startswith("PODINSIGHT_") and k != "DAGSTER_HOME"}
    env.update(extra)
    return env


# ---------------------------------------------------------------------------
# tests


def test_classify_judges_addresses():
    ok_local = '12  connect(5, {sa_family=AF_UNIX, sun_path="/var/run/nscd/socket"}, 110) = -1 ENOENT'
    ok_v4 = '12  1.5 connect(3, {sa_family=AF_INET, sin_port=htons(8000), sin_addr=inet_addr("127.0.0.2")}, 16) = 0'
    ok_v6 = ('12  connect(3, {sa_family=AF_INET6, sin6_port=htons(80), sin6_flowinfo=htonl(0), '
             'inet_pton(AF_INET6, "::1", &sin6_addr), sin6_scope_id=0}, 28) = 0')
    ok_mapped = ok_v6.replace('"::1"', '"::ffff:127.0.0.1"')
    dns = ('7739  1.2 connect(27, {sa_family=AF_INET, sin_port=htons(53), '
           'sin_addr=inet_addr("10.255.255.53")}, 16 <unfinished ...>')
    v6_out = ok_v6.replace('"::1"', '"2001:db8::1"')
    udp = ('9  sendto(4, "\\x12"..., 40, 0, {sa_family=AF_INET, sin_port=htons(53), '
           'sin_addr=inet_addr("8.8.8.8")}, 16) = 40')
    assert classify(ok_local) == "local"
    assert classify(ok_v4) == classify(ok_v6) == classify(ok_mapped) == "loopback"
    assert classify(dns) == classify(v6_out) == classify(udp) == "violation"
    assert classify('9  connect(3, 0x7ffd1234, 16) = -1 EFAULT (Bad address)') == "violation"
    assert classify('9  sendto(3, "GET / HTTP/1.1"..., 80, 0, NULL, 0) = 80') is None
    assert classify("7739  <... connect resumed>)            = -1 ENETUNREACH (Network is unreachable)") is None
    assert classify('9  connect(3, {sa_family=AF_PACKET, sll_protocol=htons(ETH_P_ALL)}, 20) = 0') == "violation"


def test_audit_reports_a_connection_off_the_machine(tmp_path):
    """The audit is not blind: a connect to TEST-NET (192.0.2.1, never routed) is reported."""
    probe = "import socket; s=socket.socket(); s.settimeout(1); print(s.connect_ex(('192.0.2.1', 80)))"
    audit = run_audited([sys.executable, "-c", probe], tmp_path / "connect.log", clean_env(), timeout=60)
    assert audit.returncode == 0, audit.stderr
    assert audit.violations, "\n".join(audit.log)
    assert all('inet_addr("192.0.2.1")' in line and "htons(80)" in line for line in audit.violations), audit.report()
    assert "ENETUNREACH" in audit.violations[0]  # nothing left the namespace
    assert not audit.loopback
