"""Pod-Insight: podcast feeds to transcripts, segments, subtitles and KPIs.

The package splits in two on purpose:

* the domain, one package per run-book step: ``fetch`` (feeds, HTTP, host limits),
  ``transcribe`` (faster-whisper, publisher transcripts, subtitles), ``store``
  (keys, layout, object stores, checkpoints, metrics) and ``costs`` (prices, KPIs,
  budget), with ``settings`` and the composition root ``services``. None of it
  imports dagster, so a GPU worker can run it with only ``dagster-pipes`` installed.
* ``assets``, ``resources``, ``sensors``, ``checks`` and ``definitions`` are the
  thin Dagster layer that wires the domain code into an asset graph.

Importing this package must stay cheap and dagster-free: Dagster's workspace
loads ``podinsight_dagster.definitions`` explicitly.
"""

import os

# The one write to the environment in Pod-Insight, here because every entry point (podrun, the
# worker, the code location Dagster loads) imports this package before faster-whisper: onnxruntime,
# which runs the VAD, sends telemetry DNS lookups ~10 s after it starts unless this is set before it
# is first imported (onnxruntime.disable_telemetry_events() does not stop them). Nothing may leave the machine.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
PROJECT_URL = "https://github.com/pod-insight/pod-insight"
USER_AGENT = f"PodInsight/{__version__} (+{PROJECT_URL})"
