"""Citation verification on real answers: XRefRAG DPEL dev gold answers (never trained on).

Each answer's sentences cite their passage ([#SRC] / [#TGT] become [1] / [2]); the verifier sees
those two passages plus `--distractors` BM25-near corpus passages, as retrieval would hand them
over. Three runs per answer:
- as written: share of gold sentences found supported (the rest would be flagged: false alarms);
- citations swapped (sentences citing [1] now cite [2] and back): share re-attributed to the
  passage the gold answer cites;
- perturbed (must -> must not, numbers, defined terms): share of changed sentences caught.
Prints per-answer verification latency on this CPU (one predict call per answer, 1 thread).

    OMP_NUM_THREADS=1 python benchmarks/verification.py --answers 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from core.models import Answer, Chunk, RetrievedChunk
from eval.training.common import DEFAULT_CORPUS_DIR
from eval.training.train_support import (
    collect_defined_terms,
    indexed_passages,
    perturb,
    read_jsonl,
    tagged_sentences,
)
from generation.citations import citations_for
from generation.verification import CitationVerifier, CrossEncoderSupportJudge


def retrieved(chunk_id: str, text: str) -> RetrievedChunk:
    chunk = Chunk(
        document_id="obliqa",
        document_title="ADGM",
        chunk_id=chunk_id,
        section="",
        text=text,
        source="obliqa",
        content_hash="",
    )
    return RetrievedChunk(chunk=chunk, score=0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--corpus-dir", type=Path, default=DEFAULT_CORPUS_DIR)
    parser.add_argument("--answers", type=int, default=20)
    parser.add_argument("--distractors", type=int, default=3)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    corpus_dir = args.corpus_dir.resolve()
    passages, bm25 = indexed_passages(corpus_dir)
    terms = collect_defined_terms(read_jsonl(corpus_dir / "xrefrag" / "SCHEMA_train.jsonl"))
    records = [
        r
        for r in read_jsonl(corpus_dir / "xrefrag" / "DPEL_dev.jsonl")
        if all(len(ids & {r["source_passage_id"], r["target_passage_id"]}) == 1
               for _, ids in tagged_sentences(r["answer"]))
    ]  # fmt: skip
    rng = random.Random(args.seed)
    records = rng.sample(records, min(args.answers, len(records)))
    verifier = CitationVerifier(CrossEncoderSupportJudge())
    counts = {"sentences": 0, "supported": 0, "swapped": 0, "reattributed": 0}
    counts |= {"perturbed": 0, "caught": 0}
    timings: list[float] = []
    for record in records:
        gold = [record["source_passage_id"], record["target_passage_id"]]
        near = [
            i
            for i in bm25.search(record["question"], 10)
            if i not in gold and passages[i] not in (passages.get(g) for g in gold)
        ][: args.distractors]
        order = [*gold, *near]
        pool = [retrieved(i, passages.get(i, "")) for i in order]
        pool[0] = retrieved(gold[0], record["source_passage_text"])
        pool[1] = retrieved(gold[1], record["target_passage_text"])
        sentences = [(text, order.index(next(iter(cited))) + 1) for text, cited in
                     tagged_sentences(record["answer"])]  # fmt: skip

        def verify(parts: list[tuple[str, int]], pool: list[RetrievedChunk] = pool) -> Answer:
            text = " ".join(f"{sentence} [{n}]" for sentence, n in parts)
            answer = Answer(text=text, citations=citations_for(text, pool), model="gold")
            started = time.perf_counter()
            result = verifier.run(answer, pool)
            timings.append((time.perf_counter() - started) * 1000)
            return result

        as_written = verify(sentences)
        counts["sentences"] += len(sentences)
        counts["supported"] += sum(bool(s.supported) for s in as_written.sentences)
        swapped = verify([(text, 3 - n) for text, n in sentences])
        counts["swapped"] += len(sentences)
        counts["reattributed"] += sum(
            s.citations == [n] for s, (_, n) in zip(swapped.sentences, sentences, strict=True)
        )
        changed = [(perturb(text, rng, terms), n) for text, n in sentences]
        kept = [(text, n) for text, n in changed if text is not None]
        if kept:
            perturbed = verify([(str(text), n) for text, n in kept])
            counts["perturbed"] += len(kept)
            counts["caught"] += sum(s.supported is False for s in perturbed.sentences)
    report = {
        "answers": len(records),
        "passages_per_answer": 2 + args.distractors,
        **counts,
        "supported_share_as_written": round(counts["supported"] / counts["sentences"], 3),
        "reattributed_share_when_swapped": round(counts["reattributed"] / counts["swapped"], 3),
        "perturbed_caught_share": round(counts["caught"] / max(1, counts["perturbed"]), 3),
        "ms_per_answer_median": round(statistics.median(timings), 1),
        "ms_per_answer_p90": round(sorted(timings)[int(0.9 * (len(timings) - 1))], 1),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
