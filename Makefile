# Two entry points for a fresh machine (see README):
#   make demo   classify the bundled photos with the real checkpoint; offline, the bundled scenes with shapes:tiny
#   make test   the test suite, notebooks included
# Both create .venv with Python 3.12 (ttnn 0.81.1 ships wheels for 3.10 and 3.12 only) when missing.

PYTHON ?= python3.12
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# ttnn logs its configuration at DEBUG while it is imported; deit_tt quiets it from its own import on, and
# this covers an `import ttnn` that comes first (notebook kernels and tests inherit it). Override to see more.
export LOGURU_LEVEL ?= WARNING

.PHONY: demo lab test test-fast clean-venv

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/pip install --disable-pip-version-check -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m deit_tt demo

# .jupyter/jupyter_server_config.json raises the websocket message limit (Tornado's default is 10 MiB),
# so that the upload widget of notebook 03 receives large photos; other Jupyter config still applies.
lab: $(STAMP)
	JUPYTER_CONFIG_PATH=$(CURDIR)/.jupyter$${JUPYTER_CONFIG_PATH:+:$$JUPYTER_CONFIG_PATH} $(BIN)/jupyter lab notebooks/

# Notebooks run with random DeiT-tiny weights unless DEIT_TT_MODEL says otherwise (CI cannot reach the hub);
# notebook 05 trains for 0.3 minutes and checks 24 held-out scenes per policy unless told otherwise.
test: $(STAMP)
	DEIT_TT_MODEL=$${DEIT_TT_MODEL:-random:tiny} DEIT_TT_TRAIN_MINUTES=$${DEIT_TT_TRAIN_MINUTES:-0.3} DEIT_TT_HELD_OUT=$${DEIT_TT_HELD_OUT:-24} $(BIN)/python -m pytest -q tests notebooks --nbmake --nbmake-kernel=python3 --timeout=900

clean-venv:
	rm -rf $(VENV)
