"""Resources: the seam between the Dagster layer and the domain services.

``PodInsightResource`` builds the domain ``Services`` bundle (storage, checkpoint
store, HTTP client, metrics, transcription options). The local deployment uses
folders and SQLite under ``PODINSIGHT_HOME``; ``definitions.py`` chooses the
deployment.
"""


import dataclasses

from dagster import ConfigurableResource
from pydantic import PrivateAttr

from ..domain.catalog import Catalog, CatalogError, load_catalog
from ..domain.http import HttpConfig
from ..domain.pipeline import Services
from ..domain.settings import Settings


class PodInsightResource(ConfigurableResource):
    """Pod-Insight's storage, checkpoints, fetching and transcription settings.

    Empty fields fall back to the environment (PODINSIGHT_HOME, PODINSIGHT_MODEL, ...).
    """

    home: str = ""
    feeds_dir: str = ""
    model: str = ""
    batch_size: int = 8
    cpu_threads: int = 0
    max_audio_bytes: int = 1 << 30
    http_max_attempts: int = 4

    _services: Services | None = PrivateAttr(default=None)

    def settings(self) -> Settings:
        env = dict(__import__("os").environ)
        if self.home:
            env["PODINSIGHT_HOME"] = self.home
        if self.feeds_dir:
            env["PODINSIGHT_FEEDS_DIR"] = self.feeds_dir
        if self.model:
            env["PODINSIGHT_MODEL"] = self.model
        return Settings.from_env(env)

    def services(self) -> Services:
        """The domain services, built once per resource instance (so once per run)."""
        if self._services is None:
            settings = self.settings()
            http_config = HttpConfig(max_audio_bytes=self.max_audio_bytes, max_attempts=self.http_max_attempts,
                                     host_limits=self._catalog_host_limits(settings))
            services = Services.local(settings, http_config=http_config)
            services.transcribe_options = dataclasses.replace(
                services.transcribe_options, batch_size=self.batch_size, cpu_threads=self.cpu_threads)
            self._services = services
        return self._services

    @staticmethod
    def _catalog_host_limits(settings: Settings) -> dict[str, int]:
        # The catalog's host_limits: override the run-book defaults for every fetch of the run.
        try:
            return load_catalog(settings.feeds_dir).host_limits
        except CatalogError:
            return {}

    def catalog(self) -> Catalog:
        return load_catalog(self.settings().feeds_dir)
