"""run_per_episode's run-log lines for succeeded episodes: grouped per interval, none lost, in order."""

from podinsight_dagster.assets.episode_runs import SuccessLines


def test_episodes_finishing_within_the_interval_share_one_message():
    said: list[str] = []
    lines = SuccessLines(said.append, total=5, interval_s=3600)
    for i in range(1, 4):
        lines.add(i, f"feed/ep{i}: bytes={i}")
    assert said == []  # within the interval: held
    lines.flush()
    assert said == ["[3/5] 3 episodes succeeded:\nfeed/ep1: bytes=1\nfeed/ep2: bytes=2\nfeed/ep3: bytes=3"]
    lines.flush()
    assert len(said) == 1  # nothing held: nothing said


def test_one_episode_is_one_line_and_a_slow_stream_is_a_message_each():
    said: list[str] = []
    lines = SuccessLines(said.append, total=2, interval_s=0)
    lines.add(1, "feed/ep1: words=10")
    lines.add(2, "feed/ep2: words=12")
    assert said == ["[1/2] feed/ep1: words=10", "[2/2] feed/ep2: words=12"]
