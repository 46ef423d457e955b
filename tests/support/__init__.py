"""Test tooling: the fault-injecting loopback CDN (cdn.py) used by the suite and bench/."""
