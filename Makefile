# Everything runs from the project's own virtualenv, which these targets create.
#   make run    the whole stack in the foreground (Ctrl-C stops it)
#   make test   the test suite; extra pytest options: make test PYTEST_ARGS="-k runner"

PYTHON ?= python3
VENV ?= .venv
# Touched after each install: pip runs again only when pyproject.toml is newer.
STAMP := $(VENV)/.installed

.PHONY: run test venv install

run: install
	exec $(VENV)/bin/ticker run

test: install
	@$(VENV)/bin/python -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$status

venv: $(VENV)/bin/python

install: $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install --editable '.[embedded,test]'
	touch $@
