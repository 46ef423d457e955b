"""each_episode_prefetched: prepare runs ahead in threads, step runs in key order, one failure stays one episode's."""

import threading
import time

from podinsight_dagster.assets.episodes import each_episode_prefetched
from podinsight_dagster.errors import StepError


def test_steps_run_in_key_order_on_the_callers_thread_and_failures_stay_per_episode():
    keys = [f"feed/ep-{i}" for i in range(9)]
    caller = threading.get_ident()
    prepared_on, stepped = set(), []

    def prepare(pk):
        prepared_on.add(threading.get_ident())
        time.sleep(0.02 if pk.endswith("0") else 0.001)  # the first is the slowest: order must still hold
        if pk == "feed/ep-3":
            raise StepError(f"{pk}: no transcript yet")
        if pk == "feed/ep-5":
            raise ValueError("bad data")
        return pk.upper()

    def step(pk, prepared):
        assert threading.get_ident() == caller
        stepped.append(pk)
        return {"prepared": prepared}

    out = list(each_episode_prefetched(keys, prepare, step, workers=2, ahead=3))
    assert [pk for pk, _ in out] == keys
    assert stepped == [k for k in keys if k not in ("feed/ep-3", "feed/ep-5")]
    assert caller not in prepared_on
    results = dict(out)
    assert isinstance(results["feed/ep-3"], StepError) and "no transcript" in str(results["feed/ep-3"])
    assert isinstance(results["feed/ep-5"], StepError) and "unexpected ValueError" in str(results["feed/ep-5"])
    assert results["feed/ep-8"] == {"prepared": "FEED/EP-8"}


def test_never_more_than_ahead_prepared_and_not_stepped():
    keys = [str(i) for i in range(12)]
    lock, started, stepped = threading.Lock(), [], []
    peak = []

    def prepare(pk):
        with lock:
            started.append(pk)
        return pk

    def step(pk, prepared):
        with lock:
            peak.append(len(started) - len(stepped))
        stepped.append(pk)
        return {}

    list(each_episode_prefetched(keys, prepare, step, workers=2, ahead=4))
    assert max(peak) <= 4 and stepped == keys
