# Two entry points for a fresh machine (see README):
#   make demo   classify the bundled photos with the real checkpoint; offline, the bundled scenes with shapes:tiny
#   make test   the test suite, notebooks included (executed once, into build/executed)
#   make book   those executed notebooks as static HTML in build/book (runs them first if make test has not)
# Both create .venv with Python 3.12 (ttnn 0.81.1 ships wheels for 3.10 and 3.12 only) when missing.

PYTHON ?= python3.12
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# ttnn logs its configuration at DEBUG while it is imported; deit_tt quiets it from its own import on, and
# this covers an `import ttnn` that comes first (notebook kernels and tests inherit it). Override to see more.
export LOGURU_LEVEL ?= WARNING
# Idle OpenMP threads spin by default: on 2 shared cores that made host forwards up to 10x slower (benchmarks/host_vs_hugging_face.py).
export OMP_WAIT_POLICY ?= PASSIVE

# The suite runs in this many pytest-xdist worker processes, each test file in one of them (its module fixtures built
# once). Two on the 2-core machines CI runs on: much of the suite waits on subprocesses and imports, not on both cores.
# The notebooks run one after another: notebook 05 alone takes most of their time, and two at once only share the cores.
TEST_WORKERS ?= 2
XDIST := --numprocesses=$(TEST_WORKERS) --dist=loadfile

.PHONY: demo lab test test-fast book executed-notebooks clean-venv

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

# Notebooks run as a learner without the hub runs them: no DEIT_TT_MODEL, no hub (HF_HUB_OFFLINE) and an empty
# hub cache, so each takes its offline default (random:tiny or shapes:tiny, named in its banner). Notebook 05
# trains on 300 scenes (its student for 0.3 minutes) and checks 24 held-out scenes per policy unless told
# otherwise. They are executed ONCE, in a copy under build/executed (nbmake --overwrite keeps the outputs there),
# and `make book` renders that copy: the book is the test run, and CI pays for one execution.
EXECUTED := build/executed
NOTEBOOK_ENV := env -u DEIT_TT_MODEL HF_HUB_OFFLINE=1 HF_HUB_CACHE=$(CURDIR)/build/empty-hub-cache \
	DEIT_TT_TRAIN_MINUTES=$${DEIT_TT_TRAIN_MINUTES:-0.3} DEIT_TT_TRAIN_IMAGES=$${DEIT_TT_TRAIN_IMAGES:-300} DEIT_TT_HELD_OUT=$${DEIT_TT_HELD_OUT:-24}

# ttnn-visualizer pins its own pydantic, flask-sqlalchemy and gevent: it gets a venv of its own, whose bin goes at the
# end of PATH for tests/backends/test_visualizer.py (the report opened in the real web app).
VISUALIZER_VENV := .venv-visualizer
$(VISUALIZER_VENV)/.installed: pyproject.toml
	test -x $(VISUALIZER_VENV)/bin/python || $(PYTHON) -m venv $(VISUALIZER_VENV)
	$(VISUALIZER_VENV)/bin/pip install --disable-pip-version-check -q ".[visualizer]"
	touch $@

test: $(STAMP) $(VISUALIZER_VENV)/.installed
	PATH="$$PATH:$(CURDIR)/$(VISUALIZER_VENV)/bin" $(BIN)/python -m pytest -q tests $(XDIST) --timeout=900 --durations=15
	rm -f $(EXECUTED)/.done && $(MAKE) --no-print-directory executed-notebooks

executed-notebooks: $(EXECUTED)/.done
$(EXECUTED)/.done: $(STAMP) $(wildcard notebooks/*.ipynb)
	rm -rf $(EXECUTED) && mkdir -p $(EXECUTED) build/empty-hub-cache && cp notebooks/*.ipynb $(EXECUTED)/
	$(NOTEBOOK_ENV) $(BIN)/python -m pytest -q $(EXECUTED) --nbmake --nbmake-kernel=python3 --overwrite --timeout=900 --durations=0
	touch $@

# The renderer is nbconvert's HTML exporter: already installed (jupyterlab needs it), one page per notebook with
# its figures embedded, no build system or theme to configure. jupyter-book (Sphinx + MyST) and mkdocs-jupyter
# would add a documentation toolchain and would execute notebooks themselves unless told not to; here the
# notebooks are executed once, by the test run, and only rendered. A notebook with an error output is refused.
# Everything but the mock matrix (one subprocess per chip), the browser tests and the notebooks.
test-fast: $(STAMP)
	time $(BIN)/python -m pytest -q tests $(XDIST) --timeout=900 -m "not browser" -k "not every_size_head_batch_and_policy"

book: executed-notebooks
	$(BIN)/python scripts/build_book.py $(EXECUTED) build/book

clean-venv:
	rm -rf $(VENV) $(VISUALIZER_VENV)
