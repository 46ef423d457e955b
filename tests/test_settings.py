"""Settings: every variable read once, in one place; bad values are one sentence; nothing else touches the environment."""

import re
from pathlib import Path

import pytest

from podinsight_dagster.settings import ENV_VARS, Settings, SettingsError

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
    readers = {p.relative_to(PACKAGE).as_posix() for p, text in _sources().items()
               if re.search(r"os\.environ\.get|os\.getenv|os\.environ\[", text)}
    assert readers <= {"settings.py", "definitions.py"}, readers  # definitions: which EnvVars to name


def test_no_code_writes_the_environment_but_the_one_telemetry_switch():
    writes = {}
    for path, text in _sources().items():
        for line in text.splitlines():
            if re.search(r"os\.environ\[[^\]]+\]\s*=|os\.environ\.(update|setdefault|pop)|os\.putenv", line):
                writes.setdefault(path.relative_to(PACKAGE).as_posix(), []).append(line.strip())
    assert writes == {"__init__.py": ['os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")']}


def test_readme_lists_every_setting():
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", README.read_text(), flags=re.M))
    assert documented == {v.name for v in ENV_VARS}


def test_no_assert_in_production_code():
    offenders = [f"{p.relative_to(PACKAGE)}:{i}" for p, text in _sources().items()
                 for i, line in enumerate(text.splitlines(), 1) if re.match(r"\s*assert\b", line)]
    assert offenders == []
