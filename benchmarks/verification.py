"""Citation verification against perturbed gold answers: today's verifier and the checked one.

Gold answers never trained on: XRefRAG DPEL and SCHEMA dev (the support model was trained on
SCHEMA train) and the golden set's reference answers (checked against their gold sections of the
sample corpus). Each gold sentence cites its passage(s); the verifier also sees `--distractors`
BM25-near passages, as retrieval would hand them over. Per sentence, the variants:
- untouched, and a faithful paraphrase (shall <-> must, numbers spelt out, "Art." for Article,
  synonyms such as "prior to" -> "before"): a flag is a false alarm;
- a changed number, a changed duration, a flipped modal (must -> may / must not, may -> must), a
  dropped exception, a swapped actor, a wrong article/rule reference (one the cited passages do
  not name), and the untouched sentence citing a BM25-near passage that does not back it, with
  only such passages retrieved ("unrelated"): a flag is a catch.
Two verifiers score the same sentences: today's (the support model alone, its shipped threshold)
and the checked one (deterministic checks beside the model, one threshold). The threshold of the
checked one is calibrated on `--calibrate` (SCHEMA dev by default: the best balanced accuracy of
catches and false alarms) and reported on the other splits, and so is its lower threshold for
sentences whose modal phrases and actors the checks confirm in the cited passage (the best below
the first, or none). Verification time per answer is measured apart on the untouched answers, the
two verifiers alternating, the model uncached. `--write-threshold` saves the calibrated thresholds
with the shipped model (`support.json`, `threshold_with_checks` and `threshold_confirmed`), where
the service reads them. `--show-misses` prints each catch the checked verifier misses and each
false alarm it raises.

    OMP_NUM_THREADS=1 python benchmarks/verification.py --answers 30 --write-threshold
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from core.models import Answer, AnswerSentence, Chunk, RetrievedChunk
from core.sentences import split_sentences
from eval.training.common import DEFAULT_CORPUS_DIR, BM25Index
from eval.training.train_support import (
    _STRICT_MODAL,
    collect_defined_terms,
    indexed_passages,
    overlap,
    read_jsonl,
    tagged_sentences,
)
from generation.checks import FactChecker
from generation.verification import (
    CHECKED_THRESHOLD_KEY,
    CONFIRMED_THRESHOLD_KEY,
    DEFAULT_SUPPORT_MODEL,
    SUPPORT_SETTINGS_FILE,
    CitationVerifier,
    CrossEncoderSupportJudge,
    SupportJudge,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "corpora" / "sample"
CATCHES = ("number", "duration", "modal", "exception", "actor", "reference", "unrelated")
TARGETED = ("number", "duration", "modal", "actor", "reference")  # the >= 90 % target
FALSE_ALARMS = ("untouched", "paraphrase")

# --- perturbations -------------------------------------------------------------------------------

_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30, "sixty": 60,
    "ninety": 90,
}  # fmt: skip
_SPELT = {v: k for k, v in _WORDS.items()} | {72: "seventy-two", 48: "forty-eight"}
_NUM = r"\d+(?:[.,]\d+)?|" + "|".join(_WORDS)
_UNIT = r"(?:calendar |working |business )?(?:hours?|days?|weeks?|months?|years?)"
_DURATION = re.compile(rf"\b({_NUM})\s+({_UNIT})\b", re.I)
_REFERENCE = re.compile(
    r"\b(Articles?|Art\.|Rules?|Sections?|Paragraphs?)\s+(\d+(?:\.\d+)*)", re.IGNORECASE
)
_BARE = re.compile(rf"(?<![\w.(/-])({_NUM})(?![\w.)/-]|\.\d)", re.I)
_EXCEPTION = re.compile(
    r",?\s*\b(?:unless|except(?: where| when| if| for)?|save where|other than)\b[^.;]*", re.I
)
_FLIP = {"must": "may", "shall": "may", "should": "may", "may": "must", "can": "must"}
EU_ACTORS = [
    "controller", "processor", "supervisory authority", "Member State", "Commission",
    "provider", "deployer", "data subject", "importer", "distributor", "Board", "recipient",
]  # fmt: skip
_ACTOR_HEAD = re.compile(r"(Person|Entity|Authority|Manager|Firm|Regulator|Issuer|Body|Operator)$")
_PARAPHRASES = [
    (r"\bshall\b", "must"), (r"\bmust\b", "shall"), (r"\bis required to\b", "must"),
    (r"\bare required to\b", "must"), (r"\bprior to\b", "before"),
    (r"\bin accordance with\b", "in line with"), (r"\bensure that\b", "make sure that"),
    (r"\bin order to\b", "to"), (r"\bsuch as\b", "for example"), (r"\bobtain\b", "get"),
    (r"\bAdditionally, ", "Also, "), (r"\bFurthermore, ", "Moreover, "),
    (r"\bappropriate\b", "suitable"), (r"\bimmediately\b", "at once"),
    (r"\bregarding\b", "about"), (r"\bspecified\b", "set out"), (r"\bHowever, ", "But "),
    (r"\bin the event that\b", "if"), (r"\ba number of\b", "several"),
]  # fmt: skip


def _number(token: str) -> float:
    return float(_WORDS.get(token.lower(), 0) or token.replace(",", ""))


def _changed(token: str, rng: random.Random) -> str:
    value = _number(token)
    new = rng.choice([value * 2, value + rng.randint(1, 9), max(0.0, value - 1) or 3])
    return str(int(new)) if new == int(new) else f"{new:.1f}"


def _at(sentence: str, match: re.Match[str], group: int, new: str) -> str:
    return sentence[: match.start(group)] + new + sentence[match.end(group) :]


def _unstated(prefix: str, last: int, evidence: str) -> str:
    """The reference `prefix` + the nearest number after `last` that the cited passages do not
    mention (a wrong reference the passages also name elsewhere is no detectable error)."""
    for candidate in (last + step for step in (*range(1, 20), -1, -2) if last + step > 0):
        if not re.search(rf"(?<![\w.]){re.escape(prefix)}{candidate}(?![\w]|\.\d)", evidence):
            return f"{prefix}{candidate}"
    return f"{prefix}{last + 1}"


def perturbations(
    sentence: str, rng: random.Random, actors: Sequence[str], evidence: str = ""
) -> dict[str, str]:
    """Each kind of error this sentence can carry, as the sentence with that error; changed
    references point where the cited passages (`evidence`) do not."""
    out: dict[str, str] = {}
    durations = list(_DURATION.finditer(sentence))
    if durations:
        m = rng.choice(durations)
        if rng.random() < 0.5:
            out["duration"] = _at(sentence, m, 1, _changed(m.group(1), rng))
        else:
            unit = m.group(2).lower()
            other = "days" if "hour" in unit else "months" if "day" in unit else "days"
            out["duration"] = _at(sentence, m, 2, other if unit.endswith("s") else other[:-1])
    spans = [(m.start(), m.end()) for p in (_DURATION, _REFERENCE) for m in p.finditer(sentence)]
    numbers = [
        m for m in _BARE.finditer(sentence)
        if not any(a <= m.start() < b for a, b in spans) and m.group(1).lower() != "one"
    ]  # fmt: skip
    if numbers:
        m = rng.choice(numbers)
        out["number"] = _at(sentence, m, 1, _changed(m.group(1), rng))
    modals = list(_STRICT_MODAL.finditer(sentence))
    if modals:
        m = rng.choice(modals)
        word = m.group(1)
        if m.group(2) or word.lower() not in _FLIP or rng.random() < 0.5:
            out["modal"] = _at(sentence, m, 0, word if m.group(2) else f"{word} not")
        else:
            new = _FLIP[word.lower()]
            out["modal"] = _at(sentence, m, 1, new.capitalize() if word[0].isupper() else new)
    exception = _EXCEPTION.search(sentence)
    if exception and len(sentence[: exception.start()].split()) >= 5:
        out["exception"] = (sentence[: exception.start()] + sentence[exception.end() :]).strip()
    present = [a for a in actors if re.search(rf"\b{re.escape(a)}s?\b", sentence)]
    if present:
        old = rng.choice(present)
        new = rng.choice([a for a in actors if a != old and a not in present] or [old])
        if new != old:
            out["actor"] = re.sub(rf"\b{re.escape(old)}\b", new, sentence, count=1)
    references = list(_REFERENCE.finditer(sentence))
    if references:
        m = rng.choice(references)
        *head, last = m.group(2).split(".")
        prefix = "".join(f"{part}." for part in head)
        out["reference"] = _at(sentence, m, 2, _unstated(prefix, int(last), evidence))
    return out


def paraphrase(sentence: str) -> str | None:
    """A faithful rewrite (same facts, other words), or None when no rule applies."""
    text = sentence
    for pattern, replacement in _PARAPHRASES:
        text = re.sub(pattern, replacement, text, count=1)
    text = _DURATION.sub(
        lambda m: f"{_SPELT.get(int(_number(m.group(1))), m.group(1))} {m.group(2)}"
        if m.group(1).isdigit() else m.group(0),
        text,
    )  # fmt: skip
    text = re.sub(r"\bArticle (\d)", r"Art. \1", text)
    return text if text != sentence else None


# --- gold answers --------------------------------------------------------------------------------


@dataclass
class GoldAnswer:
    source: str
    passages: list[RetrievedChunk]  # cited ones first, then distractors
    sentences: list[tuple[str, list[int]]]  # text, cited passage numbers


def retrieved(chunk_id: str, text: str, ref: str | None = None) -> RetrievedChunk:
    chunk = Chunk(
        document_id="doc", document_title="", chunk_id=chunk_id, section="",
        section_ref=ref, text=text, source="", content_hash="",
    )  # fmt: skip
    return RetrievedChunk(chunk=chunk, score=0.0)


def kept_sentences(
    pairs: list[tuple[str, list[int]]], texts: list[str]
) -> list[tuple[str, list[int]]]:
    """Sentences of six words or more that rest on a passage (connectives back nothing)."""
    return [
        (text, cited)
        for text, cited in pairs
        if len(text.split()) >= 6 and max(overlap(text, texts[n - 1]) for n in cited) >= 0.3
    ]


def xrefrag_answers(corpus: Path, split: str, limit: int, distractors: int, seed: int) -> list:
    passages, bm25 = indexed_passages(corpus)
    refs: dict[str, str] = {}
    for path in (corpus / "obliqa" / "documents").glob("*.json"):
        refs |= {item["ID"]: item["PassageID"] for item in json.loads(path.read_text())}
    records = read_jsonl(corpus / "xrefrag" / f"{split}_dev.jsonl")
    random.Random(seed).shuffle(records)
    answers = []
    for record in records:
        gold = [record["source_passage_id"], record["target_passage_id"]]
        texts = [record["source_passage_text"], record["target_passage_text"]]
        pairs = []
        for text, ids in tagged_sentences(record["answer"]):
            cited = [gold.index(i) + 1 for i in ids if i in gold]
            pairs.append((text, cited if split == "DPEL" else [1, 2]))
        if split == "DPEL" and not all(len(c) == 1 for _, c in pairs):
            continue
        sentences = kept_sentences(pairs, texts)
        if not sentences:
            continue
        near = [
            i for i in bm25.search(record["question"], 10)
            if i not in gold and passages[i] not in texts
        ][:distractors]  # fmt: skip
        pool = [retrieved(g, t, ref=refs.get(g)) for g, t in zip(gold, texts, strict=True)]
        pool += [retrieved(i, passages[i], ref=refs.get(i)) for i in near]
        answers.append(GoldAnswer(split, pool, sentences))
        if len(answers) == limit:
            break
    return answers


def golden_answers(limit: int, distractors: int) -> list[GoldAnswer]:
    from eval.datasets import GoldSection, section_chunk_ids
    from ingest.manifest import Manifest
    from ingest.parsers import parse_document

    manifest = Manifest.load(SAMPLE / "manifest.json")
    chunks: list[Chunk] = []
    for name in ("gdpr_consolidated.xhtml", "aia.xhtml", "eprivacy_consolidated.html",
                 "sp800-53r5-moderate-catalog.json"):  # fmt: skip
        document = parse_document(SAMPLE / name, manifest.for_file(name))
        for n, section in enumerate(document.sections):
            path = " > ".join(section.path)
            chunks.append(Chunk(
                **document.model_dump(exclude={"sections", "source", "content_hash"}),
                chunk_id=f"{document.document_id}-{n}", section=path, section_path=path,
                section_ref=section.ref, text=section.text, source=name, content_hash="",
            ))  # fmt: skip
    by_id = {c.chunk_id: c for c in chunks}
    bm25 = BM25Index([c.chunk_id for c in chunks], [f"{c.section}\n{c.text}" for c in chunks])
    answers = []
    for record in read_jsonl(SAMPLE / "golden.jsonl"):
        if not record.get("answer") or not record.get("gold_sections"):
            continue
        sections = [GoldSection(**g) for g in record["gold_sections"]]
        ids = [i for section in sections for i in section_chunk_ids(section, chunks)]
        if not ids:
            continue
        near = [i for i in bm25.search(record["question"], 20) if i not in ids][:distractors]
        pool = [RetrievedChunk(chunk=by_id[i], score=0.0) for i in [*ids, *near]]
        cited = list(range(1, len(ids) + 1))
        gold_text = "\n".join(by_id[i].text for i in ids)
        sentences = kept_sentences(
            [(s, [1]) for s in split_sentences(record["answer"])], [gold_text]
        )
        if sentences:
            answers.append(GoldAnswer("golden", pool, [(s, cited) for s, _ in sentences]))
        if len(answers) == limit:
            break
    return answers


# --- measurement ---------------------------------------------------------------------------------


class CachedJudge:
    """The same scores for both verifiers and every threshold, each pair scored once."""

    def __init__(self, judge: SupportJudge) -> None:
        self.judge = judge
        self.cache: dict[tuple[str, str], float] = {}

    @property
    def name(self) -> str:
        return self.judge.name

    @property
    def threshold(self) -> float:
        return self.judge.threshold

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        missing = list(dict.fromkeys(p for p in pairs if p not in self.cache))
        self.cache.update(zip(missing, self.judge.score(missing), strict=True))
        return [self.cache[p] for p in pairs]


def answer_of(sentences: list[tuple[str, list[int]]]) -> Answer:
    items = [AnswerSentence(text=text, citations=cited) for text, cited in sentences]
    text = " ".join(f"{t} {''.join(f'[{n}]' for n in c)}" for t, c in sentences)
    return Answer(text=text, citations=[], model="gold", sentences=items)


@dataclass
class Variants:
    """Per variant kind: the answers (one per gold answer) made of that kind's sentences."""

    answers: dict[str, list[tuple[Answer, list[RetrievedChunk]]]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )


def variants_of(answers: list[GoldAnswer], actors: Sequence[str], seed: int) -> Variants:
    rng = random.Random(seed)
    out = Variants()
    for gold in answers:
        kinds: dict[str, list[tuple[str, list[int]]]] = collections.defaultdict(list)
        for text, cited in gold.sentences:
            kinds["untouched"].append((text, cited))
            rewritten = paraphrase(text)
            if rewritten:
                kinds["paraphrase"].append((rewritten, cited))
            evidence = "\n".join(
                f"{p.chunk.section_ref or ''}\n{p.chunk.text}"
                for p in (gold.passages[n - 1] for n in cited)
            )
            for kind, changed in perturbations(text, rng, actors, evidence).items():
                if changed != text:
                    kinds[kind].append((changed, cited))
        for kind, sentences in kinds.items():
            out.answers[kind].append((answer_of(sentences), gold.passages))
        # The untouched sentences citing a passage that does not back them, with only such
        # passages retrieved (nothing to move the citation to): what the support model is for.
        cited = {n for _, numbers in gold.sentences for n in numbers}
        others = [p for n, p in enumerate(gold.passages, start=1) if n not in cited]
        if others:
            unrelated = [(text, [1]) for text, _ in gold.sentences]
            out.answers["unrelated"].append((answer_of(unrelated), others))
    return out


def flagged_shares(
    verifier: CitationVerifier, variants: Variants, misses: list[dict] | None = None
) -> dict[str, tuple[int, int]]:
    """Per kind: (sentences flagged, sentences). With `misses`, each catch left unflagged and each
    false alarm is appended to it (kind, sentence, citations before and after, support, reason)."""
    shares = {}
    for kind, items in variants.answers.items():
        flagged = total = 0
        for answer, passages in items:
            verified = verifier.run(answer, passages)
            flagged += sum(s.supported is False for s in verified.sentences)
            total += len(verified.sentences)
            if misses is None:
                continue
            for before, after in zip(answer.sentences, verified.sentences, strict=True):
                if (after.supported is False) == (kind in FALSE_ALARMS):
                    misses.append({
                        "kind": kind, "sentence": before.text, "cited": before.citations,
                        "citations": after.citations, "support": round(after.support or 0, 3),
                        "check": str(after.check), "reason": after.reason,
                    })  # fmt: skip
        shares[kind] = (flagged, total)
    return shares


def balanced(shares: dict[str, tuple[int, int]]) -> float:
    def rate(kinds: Sequence[str]) -> float:
        present = [shares[k] for k in kinds if shares.get(k, (0, 0))[1]]
        return statistics.fmean(flagged / total for flagged, total in present)

    return (rate(CATCHES) + 1 - rate(FALSE_ALARMS)) / 2


def calibrate(make: Callable[[float], CitationVerifier], variants: Variants) -> float:
    best, best_value = 0.5, -1.0
    for threshold in np.round(np.arange(0.05, 0.96, 0.05), 2):
        value = balanced(flagged_shares(make(float(threshold)), variants))
        if value > best_value:
            best, best_value = float(threshold), value
    return best


def calibrate_confirmed(
    make: Callable[[float | None], CitationVerifier], variants: Variants, threshold: float
) -> float | None:
    """The lower threshold for sentences the checks confirm: the best balanced accuracy below
    `threshold`, the highest of equals; None where no lower one does better than none."""
    best, best_value = None, balanced(flagged_shares(make(None), variants))
    for value in np.round(np.arange(threshold - 0.05, 0.04, -0.05), 2):
        accuracy = balanced(flagged_shares(make(float(value)), variants))
        if accuracy > best_value:
            best, best_value = float(value), accuracy
    return best


def timing(verifiers: dict[str, CitationVerifier], variants: Variants, answers: int) -> dict:
    """Milliseconds per untouched answer, the verifiers alternating on each answer."""
    times: dict[str, list[float]] = {name: [] for name in verifiers}
    for answer, passages in variants.answers["untouched"][:answers]:
        for name, verifier in verifiers.items():
            started = time.perf_counter()
            verifier.run(answer, passages)
            times[name].append((time.perf_counter() - started) * 1000)
    return {name: round(statistics.median(values), 1) for name, values in times.items() if values}


def perturbed_splits(
    corpus_dir: Path, names: Sequence[str], answers: int, distractors: int, seed: int
) -> dict[str, Variants]:
    """Each split's gold answers ("golden" or an XRefRAG split) with their perturbed variants."""
    corpus = corpus_dir.resolve()
    terms = collect_defined_terms(read_jsonl(corpus / "xrefrag" / "SCHEMA_train.jsonl"))
    actors = EU_ACTORS + [t for t in terms if _ACTOR_HEAD.search(t)]

    def load(split: str) -> list[GoldAnswer]:
        if split == "golden":
            return golden_answers(answers, distractors)
        return xrefrag_answers(corpus, split, answers, distractors, seed)

    return {name: variants_of(load(name), actors, seed) for name in names}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--corpus-dir", type=Path, default=DEFAULT_CORPUS_DIR)
    parser.add_argument("--answers", type=int, default=60, help="per split at most")
    parser.add_argument("--distractors", type=int, default=3)
    parser.add_argument("--calibrate", default="SCHEMA", help="the split thresholds are fit on")
    parser.add_argument("--report", nargs="+", default=["DPEL", "golden"])
    parser.add_argument("--timed-answers", type=int, default=20, help="0: no timing")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--splits",
        nargs="+",
        help="report only these of the calibration and report splits (calibration still runs)",
    )
    parser.add_argument(
        "--show-misses",
        action="store_true",
        help="print the checked verifier's missed catches and false alarms per split and kind",
    )
    parser.add_argument(
        "--write-threshold",
        action="store_true",
        help="save the calibrated threshold beside the shipped model's weights (support.json)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    splits = perturbed_splits(
        args.corpus_dir, [args.calibrate, *args.report], args.answers, args.distractors, args.seed
    )
    model = CrossEncoderSupportJudge()
    judge = CachedJudge(model)
    today = CitationVerifier(judge)
    checker = FactChecker()

    def checked(threshold: float, confirmed: float | None = None) -> CitationVerifier:
        return CitationVerifier(
            judge, checker=checker, threshold=threshold, confirmed_threshold=confirmed
        )

    threshold = calibrate(checked, splits[args.calibrate])
    confirmed = calibrate_confirmed(
        lambda value: checked(threshold, value), splits[args.calibrate], threshold
    )
    if args.write_threshold:
        settings = DEFAULT_SUPPORT_MODEL / SUPPORT_SETTINGS_FILE
        shipped = json.loads(settings.read_text(encoding="utf-8"))
        shipped |= {CHECKED_THRESHOLD_KEY: threshold}
        shipped.pop(CONFIRMED_THRESHOLD_KEY, None)
        if confirmed is not None:
            shipped[CONFIRMED_THRESHOLD_KEY] = confirmed
        settings.write_text(json.dumps(shipped) + "\n")
    report: dict[str, object] = {
        "calibrated_on": args.calibrate,
        "threshold_today": model.threshold,
        "threshold_checked": threshold,
        "threshold_confirmed": confirmed,
        "splits": {},
    }
    misses: dict[str, list[dict]] = {}
    for name, variants in splits.items():
        if args.splits and name not in args.splits:
            continue
        table = {}
        for verifier_name, verifier in (
            ("today", today),
            ("checked", checked(threshold, confirmed)),
        ):
            wrong = misses.setdefault(name, []) if verifier_name == "checked" else None
            shares = flagged_shares(verifier, variants, wrong if args.show_misses else None)
            table[verifier_name] = {
                kind: f"{flagged}/{total} = {flagged / total:.0%}"
                for kind, (flagged, total) in sorted(shares.items())
            }
        report["splits"][name] = table  # type: ignore[index]
    report_split = splits[args.report[0]]
    if args.timed_answers < 1:  # no timing asked for
        report_split = Variants()
    uncached_today = CitationVerifier(model)
    uncached_checked = CitationVerifier(
        model, checker=checker, threshold=threshold, confirmed_threshold=confirmed
    )
    report["ms_per_answer_median"] = timing(
        {"today": uncached_today, "checked": uncached_checked}, report_split, args.timed_answers
    )
    report["load_average"] = os.getloadavg()
    print(json.dumps(report, indent=2))
    if args.show_misses:
        for name, wrong in misses.items():
            for item in sorted(wrong, key=lambda m: (m["kind"] in FALSE_ALARMS, m["kind"])):
                what = "false alarm" if item["kind"] in FALSE_ALARMS else "missed"
                moved = f" -> {item['citations']}" if item["citations"] != item["cited"] else ""
                print(
                    f"[{name}] {what} {item['kind']}: {item['sentence']}\n"
                    f"    cited {item['cited']}{moved}, support {item['support']}, "
                    f"{item['check']}: {item['reason']}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
