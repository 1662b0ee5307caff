"""The local models as support judges (`REGULUS_VERIFIER=llm`), beside the shipped cross-encoder.

Labelled pairs from `benchmarks/verification.py`'s gold answers (XRefRAG dev by default, never
trained on): a gold sentence with the passage it cites is supported ("untouched", and its faithful
"paraphrase"); the same sentence with a BM25-near passage that does not back it ("unrelated"), and
its versions with a changed number, duration, modal, actor or reference, are not. Each judge scores
a sentence against every window of its cited passage(s), as the verifier does, and a sentence is
judged supported when its best window is. Per kind: the share judged supported, each judge's
agreement with the labels (balanced accuracy over the kinds, as the verification benchmark
computes it), agreement between the judges, and seconds per sentence.

Each model in `--models` is served by `regulus local-llm` (installed and verified once) in turn;
`--url URL --model NAME` judges with a server already running instead. The same first
`--per-kind` sentences of each kind go to every judge.

    .venv/bin/python benchmarks/llm_judge.py --models qwen-0.5b,qwen-1.5b --per-kind 15
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from local_llm_speed import start_server
from verification import FALSE_ALARMS, TARGETED, balanced, perturbed_splits

from core.models import RetrievedChunk
from eval.training.common import DEFAULT_CORPUS_DIR
from generation.verification import (
    CitationVerifier,
    CrossEncoderSupportJudge,
    LLMJudgeVerifier,
    SupportJudge,
    claim_of,
)

KINDS = (*FALSE_ALARMS, "unrelated", *TARGETED)


@dataclass(frozen=True)
class Item:
    kind: str
    claim: str
    passages: list[RetrievedChunk]
    cited: list[int]


def items_of(split: str, answers: int, per_kind: int, seed: int) -> list[Item]:
    """The first `per_kind` sentences of each kind, each with its passages and citations."""
    variants = perturbed_splits(DEFAULT_CORPUS_DIR, [split], answers, 3, seed)[split]
    items: list[Item] = []
    for kind in KINDS:
        taken = 0
        for answer, passages in variants.answers.get(kind, []):
            for sentence in answer.sentences:
                if taken == per_kind:
                    break
                items.append(Item(kind, claim_of(sentence.text), passages, sentence.citations))
                taken += 1
    return items


def judged(judge: SupportJudge, items: list[Item]) -> tuple[list[bool], list[float]]:
    """Each item's verdict (the judge's support by its cited passages' best window, as the
    verifier scores it, at or above the judge's threshold) and seconds."""
    verifier = CitationVerifier(judge)
    verdicts, seconds = [], []
    for item in items:
        started = time.perf_counter()
        scores = verifier.scores([item.claim], item.passages, [item.cited])
        seconds.append(time.perf_counter() - started)
        verdicts.append(bool(scores.max() >= judge.threshold))
    return verdicts, seconds


def report(name: str, items: list[Item], verdicts: list[bool], seconds: list[float]) -> dict:
    shares: dict[str, tuple[int, int]] = {}
    for item, verdict in zip(items, verdicts, strict=True):
        flagged, total = shares.get(item.kind, (0, 0))
        shares[item.kind] = (flagged + (not verdict), total + 1)
    supported = {kind: f"{total - flagged}/{total}" for kind, (flagged, total) in shares.items()}
    return {
        "judge": name,
        "judged supported": supported,
        "balanced accuracy": round(balanced(shares), 3),
        "s per sentence (median)": round(statistics.median(seconds), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--models", default="qwen-0.5b,qwen-1.5b")
    parser.add_argument("--url", help="an OpenAI-compatible server to judge with instead")
    parser.add_argument("--model", help="the model name to ask for at --url")
    parser.add_argument("--split", default="DPEL", help="SCHEMA, DPEL or golden")
    parser.add_argument("--answers", type=int, default=30)
    parser.add_argument("--per-kind", type=int, default=15)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    if args.url and not args.model:
        parser.error("--url needs --model")
    torch.set_num_threads(1)
    items = items_of(args.split, args.answers, args.per_kind, args.seed)
    print(f"{len(items)} sentences", flush=True)
    cross = CrossEncoderSupportJudge()
    results = {"cross-encoder": judged(cross, items)}
    if args.url:
        results[args.model] = judged(LLMJudgeVerifier(args.url, args.model, timeout_s=600), items)
    else:
        from tests.helpers import stop

        with tempfile.TemporaryDirectory(prefix="llm-judge-") as scratch:
            for name in args.models.split(","):
                server = start_server(name, args.threads, Path(scratch))
                try:
                    judge = LLMJudgeVerifier(server.url, server.alias, timeout_s=600)
                    results[name] = judged(judge, items)
                finally:
                    stop(server.process)
                print(f"{name} done", flush=True)
    reference = results["cross-encoder"][0]
    for name, (verdicts, seconds) in results.items():
        row = report(name, items, verdicts, seconds)
        same = sum(a == b for a, b in zip(verdicts, reference, strict=True))
        row["same verdict as the cross-encoder"] = f"{same}/{len(items)}"
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
