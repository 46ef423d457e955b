"""Dagster resources: the settings in force (``PodInsightConfig``) and one resource per seam (``seams.py``).

``PodInsightConfig`` (``resources/config.py``, generated from the table of settings) carries the
settings in force as typed fields, each the effective value (the variable's, else the default), so
the UI's resource page shows what a run uses; podrun's credentials are not fields. The seam
resources (``resources/seams.py``) nest it and build each seam's service through the composition
root (``services.py``); each asset and check lists those it uses. ``definitions.py`` picks the
configuration per deployment.
"""

from podinsight_dagster.resources.config import PodInsightConfig
from podinsight_dagster.resources.seams import (ArchiveResource, BudgetResource, CatalogResource, CheckpointsResource,
                                                HttpResource, MetricsResource, ObjectStoresResource,
                                                PodInsightResource, TranscriberResource, podinsight_resources,
                                                services_from)

__all__ = ["PodInsightConfig", "ArchiveResource", "BudgetResource", "CatalogResource", "CheckpointsResource",
           "HttpResource", "MetricsResource", "ObjectStoresResource", "PodInsightResource", "TranscriberResource",
           "podinsight_resources", "services_from"]
