# Two commands on a fresh machine:
#   make run   -> bootstrap .venv and start the gateway (tokenomy up)
#   make test  -> bootstrap .venv (with test extras) and run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock requirements-dev.lock pyproject.toml | sha1sum | cut -c1-12)

.PHONY: run test venv clean

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==26.3"
	$(BIN)/python -m pip install --quiet -r requirements.lock -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

run: venv
	$(BIN)/tokenomy up $(ARGS)

test: venv
	bash scripts/test.sh

clean:
	rm -rf $(VENV) .pytest_cache
