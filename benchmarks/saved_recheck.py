"""What re-checking saved answers costs the ingestion job when a document they cite changes.

The GDPR is parsed and chunked as ingestion does; `--answers` saved answers each cite
`--citations` random chunks of it. A second version edits a word in 5% of the chunks, moves 2%
to another article and drops 2%; `SavedAnswers.document_changed` (what the job calls) is timed on
it, then again on the same version (the idempotent case: nothing new to flag), on SQLite and,
when given, PostgreSQL.

Run: .venv/bin/python benchmarks/saved_recheck.py [--answers 1000] [--postgres URL]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import sqlalchemy

from core.db import make_engine, make_session_factory
from core.models import Chunk, Principal
from core.saved import AnsweredQuery, SavedAnswers, SavedCitation
from core.settings import Settings
from ingest.chunking import Chunker
from ingest.manifest import Manifest
from ingest.parsers import parse_document
from retrieval.embedder import Embedder

OWNER = Principal(subject="key:bench")
GDPR = Path(__file__).resolve().parent.parent / "corpora" / "sample" / "gdpr_consolidated.xhtml"


def gdpr_chunks() -> list[Chunk]:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    embedder = Embedder(settings.embed_model)
    document = parse_document(GDPR, Manifest.for_folder(GDPR.parent).for_file(GDPR.name))
    chunker = Chunker(settings.chunk_tokens, settings.chunk_overlap, tokenizer=embedder.tokenize)
    return chunker.run(document)


def amended(chunks: list[Chunk], rng: random.Random) -> list[Chunk]:
    """A new version: 5% of chunks edited, 2% moved to another section, 2% dropped."""
    sections = sorted({c.section for c in chunks})
    version = []
    for chunk in chunks:
        roll = rng.random()
        if roll < 0.02:
            continue
        words = chunk.text.split()
        update: dict[str, object] = {"content_hash": "v2"}
        if roll < 0.07:
            words[rng.randrange(len(words))] = "amended"
            update["text"] = " ".join(words)
        elif roll < 0.09:
            update["section"] = rng.choice(sections)
        version.append(chunk.model_copy(update=update))
    return version


def saved_answers(saved: SavedAnswers, chunks: list[Chunk], n: int, per: int, seed: int) -> None:
    rng = random.Random(seed)
    for number in range(n):
        cited = rng.sample(chunks, per)
        query = AnsweredQuery(
            query_id=number + 1,
            actor=OWNER.subject,
            time=dt.datetime.now(dt.UTC),
            question="q",
            answer=" ".join(f"claim [{i + 1}]" for i in range(per)),
            model="extractive",
            parts=[],
            chunk_ids=[c.chunk_id for c in cited],
            citations=[],
        )
        citations = [
            SavedCitation(
                n=i + 1,
                document_id=c.document_id,
                document_title=c.document_title,
                version=c.content_hash,
                section=c.section,
                section_path=c.section_path,
                chunk_id=c.chunk_id,
                text=c.text,
                quote=c.text,
                access_groups=["public"],
            )
            for i, c in enumerate(cited)
        ]
        saved.create(OWNER.subject, f"memo {number}", "", query, citations, [])


def measure(name: str, settings: Settings, chunks: list[Chunk], args: argparse.Namespace) -> None:
    engine = make_engine(settings)
    saved = SavedAnswers(make_session_factory(engine))
    saved_answers(saved, chunks, args.answers, args.citations, args.seed)
    version = amended(chunks, random.Random(args.seed + 1))
    per_thousand = 1000 / args.answers
    started = time.perf_counter()
    flagged = saved.document_changed("gdpr", "v2", version)
    first = time.perf_counter() - started
    started = time.perf_counter()
    again = saved.document_changed("gdpr", "v2", version)
    second = time.perf_counter() - started
    statuses = Counter(c.check.status.value for a in saved.visible_to(OWNER) for c in a.citations)
    print(
        f"{name}: {args.answers} saved answers × {args.citations} citations, "
        f"{len(chunks)} chunks: re-check {first:.2f} s ({first * per_thousand:.2f} s per 1,000), "
        f"{len(flagged)} flagged; same version again {second:.2f} s "
        f"({second * per_thousand:.2f} s per 1,000), {len(again)} flagged; "
        f"citations {dict(sorted(statuses.items()))}"
    )
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--answers", type=int, default=1000)
    parser.add_argument("--citations", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--postgres", help="a PostgreSQL URL whose server may host a scratch database"
    )
    args = parser.parse_args()
    chunks = gdpr_chunks()
    with tempfile.TemporaryDirectory() as folder:
        measure("sqlite", Settings(_env_file=None, data_dir=Path(folder)), chunks, args)  # type: ignore[call-arg]
    if args.postgres:
        server = sqlalchemy.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        name = f"regulus_bench_{uuid.uuid4().hex[:8]}"
        with server.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        try:
            url = sqlalchemy.make_url(args.postgres).set(database=name)
            with tempfile.TemporaryDirectory() as folder:
                settings = Settings(  # type: ignore[call-arg]
                    _env_file=None,
                    data_dir=Path(folder),
                    database_url=url.render_as_string(hide_password=False),
                )
                measure("postgresql", settings, chunks, args)
        finally:
            with server.connect() as connection:
                connection.execute(
                    sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                )
            server.dispose()


if __name__ == "__main__":
    main()
