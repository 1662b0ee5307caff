"""Support model backends side by side on the same pairs: speed, and agreement with PyTorch.

The pairs and answers are those of `benchmarks/verification.py` (perturbed gold answers from
XRefRAG SCHEMA and DPEL dev and the golden set, with BM25-near distractors), built by its
functions. Each backend (torch, onnx, onnx-int8) scores every (sentence, passage window) pair the
verifier asks for; against torch's scores: the max and mean absolute difference, and the share of
pairs decided alike at the shipped thresholds (`threshold`: the model alone;
`threshold_with_checks`: beside the deterministic checks, the service's). Then the per-kind flag
rates (catches, false alarms) of the service's verifier (checks, calibrated threshold) and of the
model alone with each backend, and the median time per untouched answer of the service's
verifier, the backends alternating on each answer, one thread, scores uncached.

    OMP_NUM_THREADS=1 python benchmarks/support_backends.py --answers 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from verification import CachedJudge, flagged_shares, perturbed_splits, timing

from core.models import EmbedBackend
from eval.training.common import DEFAULT_CORPUS_DIR
from generation.checks import FactChecker
from generation.verification import CitationVerifier, CrossEncoderSupportJudge


def agreement(reference: list[float], scores: list[float], thresholds: dict[str, float]) -> dict:
    """How far `scores` are from the `reference` scores of the same pairs, and how alike they
    decide at each threshold."""
    ref, other = np.asarray(reference), np.asarray(scores)
    difference = np.abs(other - ref)
    out: dict[str, object] = {
        "pairs": len(ref),
        "max_abs_diff": round(float(difference.max()), 5),
        "mean_abs_diff": round(float(difference.mean()), 5),
    }
    for name, threshold in thresholds.items():
        same = (ref >= threshold) == (other >= threshold)
        out[f"same_decision_at_{name}_{threshold}"] = f"{int(same.sum())}/{len(ref)}"
        out[f"same_decision_share_at_{name}"] = round(float(same.mean()), 5)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--corpus-dir", type=Path, default=DEFAULT_CORPUS_DIR)
    parser.add_argument("--answers", type=int, default=20, help="per split at most")
    parser.add_argument("--distractors", type=int, default=3)
    parser.add_argument("--splits", nargs="+", default=["SCHEMA", "DPEL", "golden"])
    parser.add_argument("--timed-answers", type=int, default=20)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--cache-dir", type=Path, help="ONNX exports; default: a temporary one")
    args = parser.parse_args()
    torch.set_num_threads(1)
    splits = perturbed_splits(
        args.corpus_dir, args.splits, args.answers, args.distractors, args.seed
    )
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="support-onnx-"))
    judges = {
        backend.value: CrossEncoderSupportJudge(backend=backend, cache_dir=cache_dir)
        for backend in EmbedBackend
    }
    reference = judges[EmbedBackend.TORCH.value]
    thresholds = {"threshold": reference.threshold, "with_checks": reference.checked_threshold}
    checker = FactChecker()
    flags: dict[str, dict] = {}
    scores: dict[str, dict[tuple[str, str], float]] = {}
    for name, judge in judges.items():
        cached = CachedJudge(judge)
        service = CitationVerifier(cached, checker=checker, threshold=judge.checked_threshold)
        alone = CitationVerifier(cached)
        flags[name] = {
            split: {
                "checked": flagged_shares(service, variants),
                "model_alone": flagged_shares(alone, variants),
            }
            for split, variants in splits.items()
        }
        scores[name] = cached.cache
    pairs = list(scores[reference.backend.value])
    torch_scores = [scores["torch"][pair] for pair in pairs]
    report: dict[str, object] = {
        "answers_per_split": args.answers,
        "thresholds": thresholds,
        "agreement_with_torch": {
            name: agreement(torch_scores, [scores[name][pair] for pair in pairs], thresholds)
            for name in judges
            if name != "torch"
        },
    }
    rates: dict[str, dict] = {}
    largest_move = 0.0
    for split in splits:
        for verifier in ("checked", "model_alone"):
            table = {}
            for kind, (flagged, total) in sorted(flags["torch"][split][verifier].items()):
                row = {"torch": f"{flagged}/{total}"}
                for name in judges:
                    if name == "torch":
                        continue
                    other = flags[name][split][verifier][kind][0]
                    row[name] = f"{other}/{total}"
                    largest_move = max(largest_move, abs(other - flagged) / total * 100)
                table[kind] = row
            rates[f"{split} ({verifier})"] = table
    report["flag_rates"] = rates
    report["largest_flag_rate_move_points"] = round(largest_move, 2)
    timed_split = "DPEL" if "DPEL" in splits else list(splits)[-1]  # verification.py's
    timed = splits[timed_split]
    verifiers = {
        name: CitationVerifier(judge, checker=checker, threshold=judge.checked_threshold)
        for name, judge in judges.items()
    }
    timing(verifiers, timed, 2)  # warm-up: sessions created, first batches run
    report["ms_per_answer_median"] = timing(verifiers, timed, args.timed_answers)
    report["timed_split"] = timed_split
    report["load_average"] = os.getloadavg()
    untouched = timed.answers["untouched"][: args.timed_answers]
    report["mean_sentences_per_timed_answer"] = statistics.fmean(
        len(answer.sentences or []) for answer, _ in untouched
    )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
