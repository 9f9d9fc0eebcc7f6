# Two commands for everyone: `make run` and `make test`. See README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
HOST ?= 127.0.0.1
TCP_DB_PORT ?= 0
LLM_PORT ?= 0
# The demo order API `make run` starts beside Daphne (knowledge/tools/demo_api.py), which the demo tools call.
DEMO_API_PORT ?= 8001
# The demo company site with the chat widget's tag (conversations/demo_host.py), on another origin: localhost, not
# 127.0.0.1, so the widget runs cross-site as on a real company's pages.
DEMO_HOST_PORT ?= 8002
# The site's address in e-mailed replies ("Leave a message"): this run's, unless set.
PUBLIC_URL ?= http://$(HOST):$(PORT)
# The slowest tests at the end of every run: where the suite's time goes (keep it under ~20 min on 2 cores).
PYTEST_ARGS ?= --durations=20
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run run-llm test test-database-url lint venv worker stop-db bench translations messages system-deps

$(VENV)/.installed: requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $@

venv: $(VENV)/.installed

# The translations (locale/*/LC_MESSAGES/*.po, in the repo) compiled to .mo files (not in the repo); needs GNU
# gettext's msgfmt (`apt-get install gettext`). `make messages` collects new strings from the code into the .po files.
translations: venv
	@command -v msgfmt >/dev/null || { echo "msgfmt not found: apt-get install gettext" >&2; exit 1; }
	$(PY) manage.py compilemessages --ignore=.venv -v0

messages: venv
	$(PY) manage.py makemessages -l zh_Hans -l de -l fr -l es --ignore=.venv --ignore=.data --ignore=bench --ignore=tests
	$(PY) manage.py makemessages -d djangojs -l zh_Hans -l de -l fr -l es --ignore=.venv --ignore=.data --ignore=staticfiles

# The kernel's queue of connections not yet accepted: a node that pauses accepting under a burst of handshakes
# (chatsite/handshakes.py) leaves them there; Daphne's -b/-p give Twisted's default of 50.
BACKLOG ?= 1024
# How Daphne runs: pings every 20 s (a socket silent for 30 s is closed), and a WebSocket handshake the app has not
# accepted or refused within 10 s is dropped (Daphne's default, 5 s, is barely above the app's own
# CHAT_HANDSHAKE_LOOKUP_DEADLINE_SECONDS of 3 s: under load its 4013 refusals arrived after Daphne had given up).
# A socket lives at most an hour (--websocket_timeout 3600, Daphne's default is 24 h), then closes with 1000 and the
# page reconnects and resumes: revocation closes sockets at once (conversations/revocation.py); this bounds one
# whose revocation event was lost, and no token socket outlives its token (API_TOKEN_TTL_SECONDS) by more.
DAPHNE = $(VENV)/bin/daphne -e tcp:port=$(PORT):interface=$(HOST):backlog=$(BACKLOG) --ping-interval 20 \
	--ping-timeout 30 --websocket_connect_timeout 10 --websocket_timeout 3600 chatsite.asgi:application

# What `run` and `run-llm` share: the demo tools point at the demo API on DEMO_API_PORT (127.0.0.1, so tools may
# reach private addresses here), and the demo API runs beside the worker, both killed when Daphne exits.
DEMO_ENV = DEMO_API_URL=http://127.0.0.1:$(DEMO_API_PORT)/api TOOLS_ALLOW_PRIVATE_ADDRESSES=1 \
	DEMO_HOST_URL=http://localhost:$(DEMO_HOST_PORT) PUBLIC_URL=$(PUBLIC_URL)
START_DEMO = export $(DEMO_ENV); \
	$(PY) -m knowledge.tools.demo_api --port $(DEMO_API_PORT) & demo=$$!; \
	$(PY) -m conversations.demo_host --port $(DEMO_HOST_PORT) --support http://$(HOST):$(PORT) & host=$$!; \
	$(PY) manage.py supervise_worker & worker=$$!; \
	trap 'kill $$worker $$demo $$host 2>/dev/null' EXIT INT TERM

# Single node: migrate, load the demo KB once, start the demo order API and a worker, and serve with Daphne.
run: venv translations
	$(PY) manage.py migrate --noinput
	$(DEMO_ENV) $(PY) manage.py bootstrap_demo --url http://$(HOST):$(PORT)/
	$(START_DEMO); \
	$(DAPHNE)

# The same, with answers written by a real local LLM: llama.cpp (xllamacpp) serving SmolLM2-135M-Instruct beside
# Daphne, which gets ANSWER_GENERATOR=openai, LLM_BASE_URL and LLM_MODEL pointing at it (chatsite/local_llm.py).
run-llm: venv translations
	$(PY) manage.py migrate --noinput
	$(DEMO_ENV) $(PY) manage.py bootstrap_demo --url http://$(HOST):$(PORT)/
	$(START_DEMO); \
	$(PY) -m chatsite.local_llm run --port $(LLM_PORT) -- \
		$(DAPHNE)

worker: venv
	$(PY) manage.py supervise_worker

# The whole suite on the embedded PostgreSQL, then the DATABASE_URL path on a TCP server.
# The Debian packages the tests need beside Python's: chromium (browser tests, never `playwright install`) and
# gettext (msgfmt for the translations). Installed when missing and allowed (root, or sudo without a password);
# otherwise one line with the command to run.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing=" chromium fonts-dejavu-core"; \
	command -v msgfmt >/dev/null || missing="$$missing gettext"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then sudo=""; \
		elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo"; \
		else echo "make: missing Debian packages; run: sudo apt-get install -y$$missing" >&2; exit 1; fi; \
		echo "make: installing Debian packages:$$missing"; \
		$$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

test: venv system-deps translations
	$(PY) -m pytest $(PYTEST_ARGS)
	$(MAKE) test-database-url

test-database-url: venv
	set -eo pipefail; \
	url=$$($(PY) -m chatsite.embedded_postgres tcp --data .data/pg-tcp --port $(TCP_DB_PORT) | tail -n 1); \
	case "$$url" in postgres://*) ;; *) echo "could not start the TCP PostgreSQL: '$$url'" >&2; exit 1;; esac; \
	trap '$(PY) -m chatsite.embedded_postgres stop --data .data/pg-tcp' EXIT; \
	DATABASE_URL=$$url EXPECT_DATABASE_URL=$$url FAULT_POSTGRES_DATA=.data/pg-tcp $(PY) -m pytest \
		-m "(not e2e and not multinode and not faults) or postgres_faults" \
		tests/test_database_url.py tests/test_health.py tests/test_retrieval.py tests/test_ingest.py tests/test_faults.py

lint: venv
	$(VENV)/bin/ruff check .

stop-db: venv
	$(PY) -m chatsite.embedded_postgres stop --data .data/pg
