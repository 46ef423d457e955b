"""Settings: every variable read once, in one place; bad values are one sentence; nothing else touches the environment."""

import re
from pathlib import Path

import pytest

from podinsight_dagster.settings import ENV_VARS, Settings, SettingsError, readme_rows

PACKAGE = Path(__file__).resolve().parents[1] / "podinsight_dagster"
README = Path(__file__).resolve().parents[1] / "README.md"

VALID = {
    "PODINSIGHT_DEPLOYMENT": ("aws", "aws"), "PODINSIGHT_MODEL": ("tiny.en", "tiny.en"),
    "PODINSIGHT_ALLOW_MODEL_DOWNLOAD": ("1", True), "PODINSIGHT_DEVICE": ("cpu", "cpu"),
    "PODINSIGHT_COMPUTE_TYPE": ("int8", "int8"), "PODINSIGHT_BATCH_SIZE": ("3", 3),
    "PODINSIGHT_CPU_THREADS": ("2", 2), "PODINSIGHT_PACK_GAP_SEC": ("0", 0.0), "PODINSIGHT_TRANSCRIPT_SOURCE": ("both", "both"),
    "PODINSIGHT_LANGUAGE_CHECK_MODEL": ("base", "base"), "PODINSIGHT_TRANSCRIBE_VIA": ("batch", "batch"),
    "PODINSIGHT_DIARIZATION": ("off", "off"), "PODINSIGHT_SPEAKERS": ("2", 2),
    "PODINSIGHT_EPISODES_PER_RUN": ("5", 5),
    "PODINSIGHT_BATCH_JOB_QUEUE": ("q", "q"), "PODINSIGHT_BATCH_JOB_DEFINITION": ("d", "d"),
    "PODINSIGHT_ALLOW_PRIVATE_NETWORKS": ("10.0.0.0/8", "10.0.0.0/8"), "PODINSIGHT_DEFAULT_HOST_LIMIT": ("4", 4),
    "PODINSIGHT_HTTP_MAX_ATTEMPTS": ("2", 2), "PODINSIGHT_MAX_AUDIO_BYTES": ("1000", 1000),
    "PODINSIGHT_CLAIM_LEASE_SEC": ("5", 5.0),
    "PODINSIGHT_DOWNLOAD_ATTEMPTS": ("3", 3), "PODINSIGHT_DOWNLOAD_BACKOFF_MAX_S": ("0.5", 0.5),
    "PODINSIGHT_FEED_MAX_PAGES": ("12", 12),
    "PODINSIGHT_PUBLISH_BASE_URL": ("https://cdn.example/stage", "https://cdn.example/stage"),
    "PODINSIGHT_COST_CEILING_USD": ("12.5", 12.5), "PODINSIGHT_PRICE_GPU_HOUR": ("1.2", 1.2),
    "PODINSIGHT_PRICE_CPU_HOUR": ("0.1", 0.1), "PODINSIGHT_REALTIME_FACTOR": ("250", 250.0),
    "PODINSIGHT_RAW_BUCKET": ("r", "r"),
    "PODINSIGHT_PRICE_CPU_HOUR": ("0.1", 0.1), "PODINSIGHT_RAW_BUCKET": ("r", "r"),
    "PODINSIGHT_NEW_EPISODES_INTERVAL_SEC": ("60", 60), "PODINSIGHT_AUTO_TRANSCRIBE_INTERVAL_SEC": ("5", 5),
    "PODINSIGHT_STAGE_BUCKET": ("s", "s"), "PODINSIGHT_MANIFEST_BUCKET": ("m", "m"),
    "PODINSIGHT_ARCHIVE_BUCKET": ("a", "a"),
    "PODINSIGHT_STATUS_TABLE": ("t", "t"), "PODINSIGHT_METRICS_NAMESPACE": ("n", "n"),
    "PODINSIGHT_GPU_COMPUTE_ENV": ("g", "g"), "AWS_REGION": ("eu-west-1", "eu-west-1"),
    "AWS_ENDPOINT_URL": ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    "DAGSTER_CLOUD_API_TOKEN": ("user:abc", "user:abc"), "PODINSIGHT_DAGSTER_TOKEN": ("t0k3n", "t0k3n"),
}


def test_every_variable_reaches_its_field(tmp_path):
    env = {name: raw for name, (raw, _) in VALID.items()}
    env.update(PODINSIGHT_HOME=str(tmp_path / "h"), PODINSIGHT_FEEDS_DIR=str(tmp_path / "f"),
               PODINSIGHT_MODEL_CACHE=str(tmp_path / "c"), PODINSIGHT_INDEX_PATH=str(tmp_path / "i.sqlite"))
    s = Settings.from_env(env)
    for var in ENV_VARS:
        if var.name in VALID:
            assert getattr(s, var.field) == VALID[var.name][1], var.name
    assert (s.home, s.feeds_dir, s.model_cache) == (tmp_path / "h", tmp_path / "f", tmp_path / "c")
    assert s.index_db == tmp_path / "i.sqlite"
    assert Settings.from_env({"PODINSIGHT_HOME": str(tmp_path)}).index_db == tmp_path / "transcript_index.sqlite"
    assert set(VALID) | {"PODINSIGHT_HOME", "PODINSIGHT_FEEDS_DIR", "PODINSIGHT_MODEL_CACHE",
                         "PODINSIGHT_INDEX_PATH"} == {
        v.name for v in ENV_VARS}


def test_defaults_follow_the_run_book(tmp_path):
    s = Settings.from_env({"PODINSIGHT_HOME": str(tmp_path)})
    assert (s.deployment, s.model, s.cost_ceiling_usd, s.price_gpu_hour, s.default_host_limit) == (
        "local", "base", 40.0, 0.30, 10)
    assert (s.raw_bucket, s.stage_bucket, s.manifest_bucket, s.status_table) == (
        "pod-insights-raw", "pod-insights-stage", "pod-insights-manifests", "podinsights-status")
    assert s.feeds_dir == tmp_path / "feeds"
    assert (s.new_episodes_interval_sec, s.auto_transcribe_interval_sec) == (900, 30)


@pytest.mark.parametrize("name,value,message", [
    ("PODINSIGHT_BATCH_SIZE", "eight", "PODINSIGHT_BATCH_SIZE='eight' is not a whole number"),
    ("PODINSIGHT_BATCH_SIZE", "0", "PODINSIGHT_BATCH_SIZE=0: must be at least 1"),
    ("PODINSIGHT_DOWNLOAD_ATTEMPTS", "0", "PODINSIGHT_DOWNLOAD_ATTEMPTS=0: must be at least 1"),
    ("PODINSIGHT_DOWNLOAD_BACKOFF_MAX_S", "-1", "PODINSIGHT_DOWNLOAD_BACKOFF_MAX_S=-1.0: 0 up to 600 seconds"),
    ("PODINSIGHT_EPISODES_PER_RUN", "0", "PODINSIGHT_EPISODES_PER_RUN=0: must be at least 1"),
    ("PODINSIGHT_PACK_GAP_SEC", "one", "PODINSIGHT_PACK_GAP_SEC='one' is not a number"),
    ("PODINSIGHT_PACK_GAP_SEC", "9", "PODINSIGHT_PACK_GAP_SEC=9.0: 0 (off) up to 5 seconds"),
    ("PODINSIGHT_CLAIM_LEASE_SEC", "0", "PODINSIGHT_CLAIM_LEASE_SEC=0.0: must be more than 0 seconds"),
    ("PODINSIGHT_COST_CEILING_USD", "forty", "PODINSIGHT_COST_CEILING_USD='forty' is not an amount in USD"),
    ("PODINSIGHT_PRICE_GPU_HOUR", "-1", "PODINSIGHT_PRICE_GPU_HOUR='-1' is negative"),
    ("PODINSIGHT_ALLOW_MODEL_DOWNLOAD", "maybe", "PODINSIGHT_ALLOW_MODEL_DOWNLOAD='maybe' is not a yes/no value"),
    ("PODINSIGHT_DEPLOYMENT", "gcp", "PODINSIGHT_DEPLOYMENT='gcp': choose one of local, aws"),
    ("PODINSIGHT_TRANSCRIPT_SOURCE", "x", "PODINSIGHT_TRANSCRIPT_SOURCE='x': choose one of"),
    ("PODINSIGHT_DIARIZATION", "pyannote", "PODINSIGHT_DIARIZATION='pyannote': choose one of voice, off"),
    ("PODINSIGHT_SPEAKERS", "12", "PODINSIGHT_SPEAKERS=12: 0 (from the feed or estimated) up to 8"),
    ("PODINSIGHT_AUTO_TRANSCRIBE_INTERVAL_SEC", "0", "PODINSIGHT_AUTO_TRANSCRIBE_INTERVAL_SEC=0: must be at least 1"),
    ("PODINSIGHT_NEW_EPISODES_INTERVAL_SEC", "15m", "PODINSIGHT_NEW_EPISODES_INTERVAL_SEC='15m' is not a whole number"),
    ("PODINSIGHT_TRANSCRIBE_VIA", "lambda", "PODINSIGHT_TRANSCRIBE_VIA='lambda': choose one of in-process, subprocess"),
])
def test_bad_values_are_one_sentence_naming_the_variable(tmp_path, name, value, message):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"PODINSIGHT_HOME": str(tmp_path), name: value})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_settings_round_trip_through_the_environment_a_worker_gets(tmp_path):
    s = Settings.from_env({"PODINSIGHT_HOME": str(tmp_path), "PODINSIGHT_MODEL": "tiny.en",
                           "PODINSIGHT_ALLOW_MODEL_DOWNLOAD": "1", "PODINSIGHT_TRANSCRIBE_VIA": "subprocess"})
    assert Settings.from_env(s.to_env()) == s
    remote = s.to_env(paths=False)
    assert "PODINSIGHT_HOME" not in remote and "PODINSIGHT_MODEL_CACHE" not in remote
    assert remote["PODINSIGHT_MODEL"] == "tiny.en" and remote["PODINSIGHT_ALLOW_MODEL_DOWNLOAD"] == "1"


def test_credentials_never_show_in_repr(tmp_path):
    s = Settings.from_env({"PODINSIGHT_HOME": str(tmp_path), "PODINSIGHT_DAGSTER_TOKEN": "t0k3n",
                           "DAGSTER_CLOUD_API_TOKEN": "user:abc"})
    assert (s.dagster_token, s.dagster_cloud_api_token) == ("t0k3n", "user:abc")
    assert "t0k3n" not in repr(s) and "user:abc" not in repr(s)


def test_flags_override_explicitly_and_none_keeps_the_setting(tmp_path):
    s = Settings.from_env({"PODINSIGHT_HOME": str(tmp_path), "PODINSIGHT_MODEL": "base"})
    assert s.replace(model="tiny.en").model == "tiny.en"
    assert s.replace(model=None).model == "base"


def _sources():
    return {p: p.read_text() for p in PACKAGE.rglob("*.py")}


def test_only_settings_reads_the_environment():
    """Any mention of the environment outside settings.py (definitions.py read it three times) is a reader."""
    telemetry = 'os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")'  # the one write, checked below
    readers = {p.relative_to(PACKAGE).as_posix() for p, text in _sources().items()
               for line in text.splitlines()
               if re.search(r"\bos\.environ|\bgetenv\b|\benviron\b\s*(\[|\.get)", line) and line.strip() != telemetry}
    assert readers == {"settings.py"}, readers


def test_no_code_writes_the_environment_but_the_one_telemetry_switch():
    writes = {}
    for path, text in _sources().items():
        for line in text.splitlines():
            if re.search(r"os\.environ\[[^\]]+\]\s*=|os\.environ\.(update|setdefault|pop)|os\.putenv", line):
                writes.setdefault(path.relative_to(PACKAGE).as_posix(), []).append(line.strip())
    assert writes == {"__init__.py": ['os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")']}


def _readme_rows(text: str) -> list[str]:
    return re.findall(r"^\| `[A-Z_]+` \|.*$", text, flags=re.M)


def test_readme_lists_every_setting():
    """README's settings table is the one table's rows: each variable, its default and its text, in order."""
    documented = _readme_rows(README.read_text())
    assert [re.match(r"\| `([A-Z_]+)`", row)[1] for row in documented] == [v.name for v in ENV_VARS]
    assert documented == readme_rows(ENV_VARS)


def test_no_assert_in_production_code():
    offenders = [f"{p.relative_to(PACKAGE)}:{i}" for p, text in _sources().items()
                 for i, line in enumerate(text.splitlines(), 1) if re.match(r"\s*assert\b", line)]
    assert offenders == []


def test_a_setting_declared_in_one_place_reaches_settings_the_readme_table_and_the_resource(tmp_path):
    """Issue 19: a new setting is one field; Settings, README's table and the `config` resource follow from it."""
    from dataclasses import dataclass

    from dagster import asset, materialize

    from podinsight_dagster.resources.config import config_resource_class
    from podinsight_dagster.settings import at_least, setting, settings_table

    @dataclass(frozen=True, kw_only=True)
    class WithOneMore(Settings):  # the one place: a field of the settings table
        feed_poll_jitter_sec: float = setting("PODINSIGHT_FEED_POLL_JITTER_SEC", 2.5,
                                              "seconds of random delay before each feed poll", check=at_least(0))

    env = {"PODINSIGHT_HOME": str(tmp_path), "PODINSIGHT_FEED_POLL_JITTER_SEC": "4"}
    # Settings: read, typed, defaulted and checked like every other variable
    settings = WithOneMore.from_env(env)
    assert settings.feed_poll_jitter_sec == 4.0 and settings.batch_size == 8
    assert WithOneMore.from_env({"PODINSIGHT_HOME": str(tmp_path)}).feed_poll_jitter_sec == 2.5
    with pytest.raises(SettingsError, match=r"^PODINSIGHT_FEED_POLL_JITTER_SEC='soon' is not a number$"):
        WithOneMore.from_env({**env, "PODINSIGHT_FEED_POLL_JITTER_SEC": "soon"})
    with pytest.raises(SettingsError, match=r"^PODINSIGHT_FEED_POLL_JITTER_SEC=-1.0: must be at least 0$"):
        WithOneMore.from_env({**env, "PODINSIGHT_FEED_POLL_JITTER_SEC": "-1"})
    assert settings.to_env()["PODINSIGHT_FEED_POLL_JITTER_SEC"] == "4.0"
    # README's table: the row it must have, which today's README lacks (the README test would name it)
    row = "| `PODINSIGHT_FEED_POLL_JITTER_SEC` | `2.5` | seconds of random delay before each feed poll |"
    table = settings_table(WithOneMore)
    assert readme_rows(table) == readme_rows(ENV_VARS) + [row]
    assert set(readme_rows(table)) - set(_readme_rows(README.read_text())) == {row}
    # the resource: a typed field with its variable and default, carrying the value in force through a run
    config_class = config_resource_class(WithOneMore, name="WithOneMoreConfig", module=__name__)
    field = config_class.model_fields["feed_poll_jitter_sec"]
    assert field.annotation is float and field.default == 2.5
    assert field.description.startswith("PODINSIGHT_FEED_POLL_JITTER_SEC (default 2.5): seconds of random delay")
    config = config_class.from_settings(settings)
    assert config.feed_poll_jitter_sec == 4.0 and config.batch_size == 8
    seen = {}

    @asset
    def probe(config: config_class):  # type: ignore[valid-type]
        seen["settings"] = config.settings()

    assert materialize([probe], resources={"config": config}).success
    assert seen["settings"] == settings
