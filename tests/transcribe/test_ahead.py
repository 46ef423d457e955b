"""Work done ahead for the speakers and chapters steps (transcribe/ahead.py): handed out once, only for the very
input it was made from, never waited for when it has not started, and the same numbers as the step's own."""

import threading

import numpy as np

from podinsight_dagster.transcribe.ahead import Ahead


def _speech_like(seconds: float, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    voiced = np.sin(2 * np.pi * 140 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (0.3 * voiced + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def test_sentence_vectors_are_handed_out_once_and_only_for_the_same_texts():
    ahead = Ahead()
    ahead.submit_sentences(["One.", "Two."], lambda texts: np.full((len(texts), 2), 7.0, dtype=np.float32))
    assert ahead.sentences(["One.", "Three."]) is None          # other texts: the step encodes them itself
    ahead.submit_sentences(["One.", "Two."], lambda texts: np.ones((len(texts), 2), dtype=np.float32))
    got = ahead.sentences(["One.", "Two."])
    assert got is not None and got.shape == (2, 2)
    assert ahead.sentences(["One.", "Two."]) is None             # handed out once


def test_work_not_started_yet_is_left_to_the_step_and_a_failure_is_no_result():
    ahead = Ahead()
    release, started = threading.Event(), threading.Event()

    def blocking(texts):
        started.set()
        release.wait(10)
        return np.zeros((len(texts), 1), dtype=np.float32)

    ahead.submit_sentences(["first"], blocking)
    started.wait(10)
    ahead.submit_sentences(["second"], lambda texts: np.zeros((1, 1), dtype=np.float32))
    assert ahead.sentences(["second"]) is None                   # queued behind "first": not waited for
    release.set()
    assert ahead.sentences(["first"]) is not None                # under way: waited for

    def broken():
        raise OSError("disk gone")

    ahead.submit_voices("ep", [(0.0, 1.0)], broken)
    assert ahead.voices("ep", [(0.0, 1.0)]) is None              # the step meets (or not) the error itself


def test_voices_made_ahead_are_the_speakers_steps_own_numbers_for_the_same_spans():
    from podinsight_dagster.speakers.encoder import load_encoder
    from podinsight_dagster.speakers.overlap import segment_and_screen_voices

    audio = _speech_like(6.0)
    spans = [(0.0, 2.5), (2.5, 6.0)]
    ahead = Ahead()

    def submitted() -> None:
        started = threading.Event()
        ahead.submit_voices("ep", spans, lambda: started.set() or audio)
        started.wait(10)  # under way (work not yet started is left to the step)

    submitted()
    assert ahead.voices("ep", [(0.0, 2.4), (2.5, 6.0)]) is None  # another transcript's segments: not these voices
    submitted()
    got = ahead.voices("ep", spans)
    encoder = load_encoder()
    emb, screen = segment_and_screen_voices(encoder, audio, spans)
    assert got is not None and np.array_equal(got.emb, emb) and np.array_equal(got.screen, screen)
    assert np.array_equal(got.feats, encoder.log_mel(audio))
    # The screening voices that share a segment's windows are those windows' voices: the same as encoding them apart.
    from podinsight_dagster.speakers.overlap import screen_windows

    apart = screen_windows(encoder, audio, spans)
    assert apart.shape == screen.shape and np.allclose(apart, screen, atol=0.05)


def test_a_head_start_only_where_the_runs_later_steps_run_in_this_process():
    from types import SimpleNamespace

    from dagster import AssetKey

    from podinsight_dagster.transcribe.transcriber import later_steps_here

    def context(execution: dict, executor: str, assets: list[str]):
        run = SimpleNamespace(run_config={"execution": execution} if execution else {},
                              asset_selection={AssetKey(a) for a in assets})
        return SimpleNamespace(run=run, job_def=SimpleNamespace(executor_def=SimpleNamespace(name=executor)))

    steps = ["transcript", "speakers", "chapters", "segments"]
    assert later_steps_here(context({}, "execute_in_process_executor", steps))           # podrun's runs
    assert later_steps_here(context({"config": {"in_process": {}}}, "multi_or_in_process_executor", steps))
    assert not later_steps_here(context({}, "multi_or_in_process_executor", steps))       # a process per step
    assert not later_steps_here(context({"config": {"multiprocess": {}}}, "multi_or_in_process_executor", steps))
    assert not later_steps_here(context({}, "execute_in_process_executor", ["transcript", "segments"]))
    assert not later_steps_here(object())                                                # not a step context
