#!/usr/bin/env bash
# vLLM serving benchmark with RAG-shaped requests, for a GPU host (not run in CI).
#
# Requests: ~3k prompt tokens (PREFIX_LEN shared by every request of a group, as the system
# prompt and common passages are, + SUFFIX_LEN unique tokens), ~200 output tokens, through the
# OpenAI chat endpoint, at concurrencies 1, 8, 32, 64. Three runs per concurrency:
#   cache  prefix caching and chunked prefill on (the compose service's flags)
#   json   the same server, each request constrained to Regulus' answer schema (guided JSON)
#   nocache  prefix caching off
# Prints req/s, output tok/s, TTFT and ITL p50/p95 per run; targets on one H200 with an 8B
# model: >= 10 req/s with TTFT p95 <= 500 ms.
#
# Usage: MODEL=/models/Llama-3.1-8B-Instruct benchmarks/vllm_serving.sh
# Needs a recent vLLM on PATH (flags checked against `vllm bench serve` and `vllm serve` of vLLM's
# main branch: the prefix_repetition dataset, --extra-body, --num-warmups,
# --structured-outputs-config.backend), a GPU, and the model's weights (path or hub id).
# Not run in this project's workplace: its lent GPU machine cannot install vLLM or fetch weights.
set -euo pipefail

MODEL=${MODEL:?set MODEL to an 8B instruct model (path or hub id)}
PORT=${PORT:-8100}
CONCURRENCIES=${CONCURRENCIES:-"1 8 32 64"}
PREFIX_LEN=${PREFIX_LEN:-1024}
SUFFIX_LEN=${SUFFIX_LEN:-2048}
NUM_PREFIXES=${NUM_PREFIXES:-8}
OUTPUT_LEN=${OUTPUT_LEN:-200}
MAX_MODEL_LEN=${MAX_MODEL_LEN:-8192}
RESULTS=${RESULTS:-$(mktemp -d /tmp/vllm-bench.XXXXXX)}
HERE=$(cd "$(dirname "$0")/.." && pwd)

# The answer schema exactly as the API requests it.
JSON_BODY=$(PYTHONPATH="$HERE" python -c '
import json
from generation.structured import StructuredOutput, response_format
print(json.dumps({"response_format": response_format(StructuredOutput.JSON_SCHEMA)}))')

SERVER_PID=""
stop_server() {
  if [[ -n "$SERVER_PID" ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
trap stop_server EXIT

start_server() {  # $1: --enable-prefix-caching or --no-enable-prefix-caching
  vllm serve "$MODEL" --port "$PORT" --max-model-len "$MAX_MODEL_LEN" \
    "$1" --enable-chunked-prefill --structured-outputs-config.backend xgrammar \
    >"$RESULTS/server$1.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 180); do
    if curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "vllm serve exited; see $RESULTS/server$1.log" >&2
      exit 1
    fi
    sleep 5
  done
  echo "vllm serve did not become healthy in 15 minutes" >&2
  exit 1
}

bench() {  # $1: run label, $2: concurrency, then extra `vllm bench serve` flags
  local label=$1 concurrency=$2
  shift 2
  local prompts=$((concurrency * 8 > 32 ? concurrency * 8 : 32))
  vllm bench serve --backend openai-chat --endpoint /v1/chat/completions \
    --base-url "http://127.0.0.1:$PORT" --model "$MODEL" \
    --dataset-name prefix_repetition \
    --prefix-repetition-prefix-len "$PREFIX_LEN" --prefix-repetition-suffix-len "$SUFFIX_LEN" \
    --prefix-repetition-num-prefixes "$NUM_PREFIXES" --prefix-repetition-output-len "$OUTPUT_LEN" \
    --num-prompts "$prompts" --max-concurrency "$concurrency" --num-warmups "$concurrency" \
    --temperature 0 --percentile-metrics ttft,itl --metric-percentiles 50,95 \
    --save-result --result-dir "$RESULTS" --result-filename "$label-c$concurrency.json" \
    "$@" >"$RESULTS/$label-c$concurrency.log" 2>&1 ||
    echo "run $label at concurrency $concurrency failed; see $RESULTS/$label-c$concurrency.log" >&2
}

start_server --enable-prefix-caching
for c in $CONCURRENCIES; do
  bench cache "$c" --ignore-eos
  # Guided decoding ends at the schema's closing brace: outputs may be shorter than OUTPUT_LEN.
  bench json "$c" --extra-body "$JSON_BODY"
done
stop_server

start_server --no-enable-prefix-caching
for c in $CONCURRENCIES; do bench nocache "$c" --ignore-eos; done
stop_server

python - "$RESULTS" <<'PY'
import json, sys
from pathlib import Path

results = Path(sys.argv[1])
print(f"{'run':<9}{'conc':>5}{'req/s':>8}{'out tok/s':>11}{'TTFT p50':>10}{'TTFT p95':>10}"
      f"{'ITL p50':>9}{'ITL p95':>9}{'failed':>8}  target")
for path in sorted(results.glob("*-c*.json"), key=lambda p: (p.stem.split("-c")[0], int(p.stem.split("-c")[1]))):
    label, concurrency = path.stem.split("-c")
    r = json.loads(path.read_text())
    met = r["request_throughput"] >= 10 and r["p95_ttft_ms"] <= 500
    print(f"{label:<9}{concurrency:>5}{r['request_throughput']:>8.2f}{r['output_throughput']:>11.0f}"
          f"{r['p50_ttft_ms']:>10.0f}{r['p95_ttft_ms']:>10.0f}{r['p50_itl_ms']:>9.1f}"
          f"{r['p95_itl_ms']:>9.1f}{r.get('failed', 0):>8}  {'met' if met else '-'}")
print(f"(ms; target: >= 10 req/s with TTFT p95 <= 500 ms; results and logs in {results})")
PY
