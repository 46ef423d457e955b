"""Fetching (run-book §3): the HTTP client, network policy, host limits, feeds, the catalog, discovery and download."""
