"""Pod-Insight: podcast feeds to transcripts, segments, subtitles and KPIs.

The package splits in two on purpose:

* ``podinsight_dagster.domain`` holds the domain logic (feeds, fetching, keys,
  storage, transcription, subtitles, KPIs). It never imports dagster, so a GPU
  worker can run it with only ``dagster-pipes`` installed.
* ``assets``, ``resources``, ``sensors`` and ``definitions`` are the thin Dagster
  layer that wires the domain code into an asset graph.

Importing this package must stay cheap and dagster-free: Dagster's workspace
loads ``podinsight_dagster.definitions`` explicitly.
"""

__version__ = "0.1.0"
PROJECT_URL = "https://github.com/pod-insight/pod-insight"
USER_AGENT = f"PodInsight/{__version__} (+{PROJECT_URL})"
