"""Where Pod-Insight keeps its data and how it behaves, read from the environment.

One data root (``PODINSIGHT_HOME``, default ``./data``) holds the run-book's three
buckets as folders, the SQLite checkpoint store and the Dagster instance, so the
demo, ``podrun`` and ``dagster dev`` all see the same state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

RAW_BUCKET = "pod-insights-raw"
STAGE_BUCKET = "pod-insights-stage"
MANIFEST_BUCKET = "pod-insights-manifests"
DEFAULT_MODEL = "base"  # run-book §4.2: --model defaults to base


@dataclass(frozen=True)
class Settings:
    home: Path
    feeds_dir: Path
    model: str = DEFAULT_MODEL
    model_cache: Path = field(default_factory=lambda: Path.home() / ".cache" / "podinsight" / "models")
    allow_private_networks: str = ""
    allow_model_download: bool = False
    cost_ceiling_usd: float = 40.0  # run-book §4.4: GPUCostToday < $40

    @property
    def raw_root(self) -> Path:
        return self.home / RAW_BUCKET

    @property
    def stage_root(self) -> Path:
        return self.home / STAGE_BUCKET

    @property
    def manifests_root(self) -> Path:
        return self.home / MANIFEST_BUCKET

    @property
    def checkpoint_db(self) -> Path:
        return self.home / "checkpoints.sqlite"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def locks_dir(self) -> Path:
        return self.home / "locks"

    @classmethod
    def from_env(cls, environ: "os._Environ[str] | dict[str, str] | None" = None) -> "Settings":
        env = os.environ if environ is None else environ
        home = Path(env.get("PODINSIGHT_HOME") or "data").expanduser().resolve()
        feeds_dir = Path(env.get("PODINSIGHT_FEEDS_DIR") or home / "feeds").expanduser().resolve()
        cache = env.get("PODINSIGHT_MODEL_CACHE")
        return cls(
            home=home,
            feeds_dir=feeds_dir,
            model=env.get("PODINSIGHT_MODEL") or DEFAULT_MODEL,
            model_cache=Path(cache).expanduser().resolve() if cache else Path.home() / ".cache" / "podinsight" / "models",
            allow_private_networks=env.get("PODINSIGHT_ALLOW_PRIVATE_NETWORKS", ""),
            allow_model_download=env.get("PODINSIGHT_ALLOW_MODEL_DOWNLOAD", "") in ("1", "true", "yes"),
            cost_ceiling_usd=float(env.get("PODINSIGHT_COST_CEILING_USD") or 40.0),
        )

    def ensure_dirs(self) -> None:
        for path in (self.raw_root, self.stage_root, self.manifests_root, self.dagster_home,
                     self.feeds_dir, self.locks_dir):
            path.mkdir(parents=True, exist_ok=True)
