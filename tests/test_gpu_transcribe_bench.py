"""bench/gpu_transcribe_bench.py as anyone runs it: its CPU mode on a tiny input, and its GPU mode where there is no GPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import TEST_MODEL

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "gpu_transcribe_bench.py"


def _bench(tmp_path, model_cache, *args) -> dict:
    out = tmp_path / "report.json"
    subprocess.run([sys.executable, str(BENCH), "--model", TEST_MODEL, "--cache", str(model_cache),
                    "--inputs", str(tmp_path / "inputs"), "--out", str(out), *args],
                   check=True, timeout=600, cwd=ROOT, capture_output=True, text=True)
    return json.loads(out.read_text())


def test_cpu_mode_reports_every_stage_of_both_variants(tmp_path, model_cache):
    # One set of one 24-s file keeps it to seconds; the short set runs the same code on other files.
    report = _bench(tmp_path, model_cache, "--device", "cpu", "--sets", "long", "--long-files", "1",
                    "--long-minutes", "0.4")
    assert (report["device"], report["compute_type"], report["cores"]) == ("cpu", "int8", report["machine"]["cores_available"])
    runs = {(r["set"], r["variant"]): r for r in report["runs"]}
    assert set(runs) == {("long", "bare"), ("long", "project")}
    for (name, variant), r in runs.items():
        assert r["audio_sec"] > 0 and r["wall_s"] > 0 and r["realtime_factor"] > 0 and r["cpu_use"] > 0
        assert r["errors"] == [] and r["words"] > 0
        main = [s for s in r["stages"] if s["thread"] == "main"]
        assert sum(s["share"] for s in main) == pytest.approx(1.0, abs=0.01), (name, variant, main)
        stages = {s["stage"] for s in r["stages"]}
        if variant == "bare":
            assert {"decode", "VAD", "features", "model (encoder + beam search)", "word timings"} <= stages
        else:
            assert {"decode", "VAD", "features", "model: encoder", "model: beam search", "word timings",
                    "speakers", "chapters", "waiting for audio"} <= stages
            assert {s["stage"] for s in r["stages"] if s["thread"] == "background"} == {"decode", "VAD", "features"}
            assert r["wer_vs_bare"] is not None and r["speed_vs_bare"] > 0
            assert 0 < r["transcription_wall_s"] <= r["wall_s"]
        assert r["gpu_samples"] == 0  # no GPU here: nothing sampled, nothing invented


def test_gpu_mode_without_a_gpu_skips_and_says_why(tmp_path, model_cache):
    import ctranslate2

    if ctranslate2.get_cuda_device_count() > 0:
        pytest.skip("this machine has a CUDA device: the GPU mode would run")
    report = _bench(tmp_path, model_cache, "--device", "cuda")
    assert report == {"skipped": report["skipped"]}
    assert "--device cuda needs a GPU" in report["skipped"] and "sees no CUDA device" in report["skipped"]
    assert not (tmp_path / "inputs").exists()  # skipped before building anything
