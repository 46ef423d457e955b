"""How fast transcription runs per device, compute type and model: the measured real-time factors costs are projected from.

A real-time factor is audio seconds transcribed per second of compute (``iter_transcribe``'s
wall time, which is what a transcription's spend line is charged for). The figures below are
measurements kept in docs/BENCHMARKS.md (each entry names its section and machine); a
projection says which one it used. ``PODINSIGHT_REALTIME_FACTOR`` overrides them (a
deployment that measured its own machines); a model or device without a measurement gets
the run-book's planning figure, 12x real time (§4.3: 1,000 episodes in 83 GPU-hours), and
says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from podinsight_dagster.costs.prices import Prices

# Run-book §4.3: 1,000 episodes in 83 GPU-hours, i.e. about 12x real time per GPU on a g5.xlarge.
RUNBOOK_REALTIME_FACTOR = 12.0


@dataclass(frozen=True)
class Measured:
    realtime_factor: float
    where: str  # the machine and the docs/BENCHMARKS.md section the figure comes from


# (device, compute type, model) -> the measured real-time factor on long episodes (the run-book's podcasts
# run 30-90 min; short clips go slower per audio second: see BENCHMARKS).
MEASURED: dict[tuple[str, str, str], Measured] = {
    ("cuda", "float16", "base"): Measured(
        318.0, "one NVIDIA H200 restricted to 4 cores (a g5.xlarge's shape), 2.3 h of long episodes, batch 32; "
               "docs/BENCHMARKS.md, GPU transcription"),
    ("cpu", "int8", "base"): Measured(
        22.7, "2 shared CPU cores (AMD EPYC), long episodes, podrun transcribe; docs/BENCHMARKS.md, transcription"),
    ("cpu", "int8", "tiny.en"): Measured(
        40.6, "2 shared CPU cores (AMD EPYC), long episodes, podrun transcribe; docs/BENCHMARKS.md, transcription"),
}


@dataclass(frozen=True)
class Speed:
    """The real-time factor a projection assumes for one model on one device and compute type, and why."""

    realtime_factor: float
    device: str
    compute_type: str
    model: str
    basis: str  # "measured on ...", "PODINSIGHT_REALTIME_FACTOR", or "the run-book's planning figure"

    def usd_per_audio_second(self, prices: Prices) -> float:
        return prices.per_second(self.device) / self.realtime_factor

    def usd_per_1000_audio_hours(self, prices: Prices) -> float:
        return self.usd_per_audio_second(prices) * 3600 * 1000

    def describe(self) -> str:
        return f"{self.model} on {self.device} {self.compute_type} at {self.realtime_factor:g}x real time ({self.basis})"


def expected_speed(model: str, device: str, compute_type: str, override: float = 0.0) -> Speed:
    """The real-time factor for ``model`` on ``device`` (cuda or cpu) and ``compute_type`` (both resolved, not auto).

    ``override`` > 0 (the setting) wins; else the measurement for exactly this triple; else the run-book's 12x.
    """
    if override > 0:
        return Speed(override, device, compute_type, model, "PODINSIGHT_REALTIME_FACTOR")
    found = MEASURED.get((device, compute_type, model))
    if found is not None:
        return Speed(found.realtime_factor, device, compute_type, model, f"measured: {found.where}")
    return Speed(RUNBOOK_REALTIME_FACTOR, device, compute_type, model,
                 f"not measured for {model} on {device} {compute_type}: the run-book's planning figure")
