# speechq: the two commands a new user needs.
#
#   make demo   set up, then run the main job (a TTS job and an ASR job through the queue)
#   make test   set up, install the system packages the tests use, start Redis, run pytest
#
# `make setup` alone builds the virtual environment in .venv; it is idempotent and does
# nothing once .venv is up to date with pyproject.toml.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH := torch==2.14.1 torchaudio==2.11.0
# extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=

# Debian/Ubuntu packages: voices for the corpus, Festival's held-out voices, PocketSphinx's
# test clips, WordNet's text, and the service's Redis and compose file
APT_PACKAGES := espeak-ng flite festival festvox-kallpc16k festvox-us-slt-hts \
	pocketsphinx-testdata wordnet-base sox ffmpeg docker-compose
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
REDIS_HOST := 127.0.0.1
REDIS_PORT := 6379

.PHONY: setup system-packages corpus-voices recorded-speech redis test demo clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS) $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

system-packages:
	@missing=(); \
	for pkg in $(APT_PACKAGES); do \
		dpkg -s "$$pkg" >/dev/null 2>&1 || missing+=("$$pkg"); \
	done; \
	if (( $${#missing[@]} )); then \
		echo "apt-get install $${missing[*]}"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$${missing[@]}"; \
	fi

# more voices for training corpora (docs/data.md), not needed by the tests: espeak-ng's MBROLA
# voices (the synthesiser is in Debian's contrib, its diphone databases in non-free) and SVOX
# Pico's (non-free)
CORPUS_VOICE_PACKAGES := mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 libttspico-utils
corpus-voices: system-packages
	@if ! dpkg -s $(CORPUS_VOICE_PACKAGES) >/dev/null 2>&1; then \
		echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $$(. /etc/os-release && echo $$VERSION_CODENAME) contrib non-free" \
			| $(SUDO) tee /etc/apt/sources.list.d/speechq-contrib-non-free.list >/dev/null; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(CORPUS_VOICE_PACKAGES); \
	fi

# recorded human speech for training corpora (pipeline.data.recorded, docs/data.md): the Asterisk
# PBX's English prompts and their transcripts (CC BY-SA 3.0), not needed by the tests
RECORDED_PACKAGES := asterisk-core-sounds-en asterisk-core-sounds-en-wav
recorded-speech:
	@dpkg -s $(RECORDED_PACKAGES) >/dev/null 2>&1 || { \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(RECORDED_PACKAGES); }

# start a throwaway Redis when nothing answers on 127.0.0.1:6379
redis:
	@ping() { timeout 2 bash -c 'exec 3<>/dev/tcp/$(REDIS_HOST)/$(REDIS_PORT) && printf "PING\r\n" >&3 && head -c 5 <&3' 2>/dev/null | grep -q PONG; }; \
	if ! ping; then \
		command -v redis-server >/dev/null || $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server; \
		echo "starting redis-server on $(REDIS_HOST):$(REDIS_PORT)"; \
		redis-server --daemonize yes --bind $(REDIS_HOST) --port $(REDIS_PORT) --save '' --appendonly no >/dev/null; \
		for _ in $$(seq 50); do ping && break; sleep 0.1; done; \
		ping || { echo "redis did not start on $(REDIS_HOST):$(REDIS_PORT)" >&2; exit 1; }; \
	fi

# PYTEST_ARGS narrows a run: make test PYTEST_ARGS="tests/pipeline -x"
PYTEST_ARGS ?=

test: setup system-packages redis
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: setup system-packages redis
	$(VENV)/bin/speechq demo

clean-venv:
	rm -rf $(VENV)
