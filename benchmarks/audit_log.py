"""What the audit trail costs: append latency (one query row each, sequential and from concurrent
writers) and `verify` throughput, on SQLite and, when reachable, PostgreSQL.

Run: .venv/bin/python benchmarks/audit_log.py [--rows 500] [--writers 8] [--postgres URL]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import sqlalchemy

from core.audit import AuditLog
from core.db import make_engine, make_session_factory
from core.models import (
    Answer,
    Chunk,
    Citation,
    Principal,
    RetrievedChunk,
    Role,
    SearchFilters,
    Usage,
)
from core.settings import Settings

KEY = b"benchmark-audit-key-" * 2  # HMAC-SHA256 chain, as served
PRINCIPAL = Principal(subject="key:bench", groups=["public"], role=Role.ANALYST)
QUESTION = "Within how many hours must a breach be notified? Reply to jane@example.com"


def _query_parts() -> tuple[Answer, list[RetrievedChunk]]:
    passages = [
        RetrievedChunk(
            chunk=Chunk(
                document_id="gdpr",
                document_title="GDPR",
                chunk_id=str(uuid.uuid4()),
                section="Article 33",
                text="x",
                source="s",
                content_hash="h",
            ),
            score=0.5,
        )
        for _ in range(5)
    ]
    citation = Citation(
        n=1,
        document_id="gdpr",
        document_title="GDPR",
        section="Article 33",
        section_path="Article 33 > (1)",
        chunk_id=passages[0].chunk.chunk_id,
        quote="q",
    )
    answer = Answer(
        text="Without undue delay and within 72 hours [1]. " * 5,
        citations=[citation],
        model="m",
        usage=Usage(model="m", prompt_tokens=900, completion_tokens=80, cost_usd=0.001),
    )
    return answer, passages


def measure(name: str, settings: Settings, rows: int, writers: int) -> None:
    engine = make_engine(settings)
    audit = AuditLog(make_session_factory(engine), key=KEY)
    answer, passages = _query_parts()
    filters = SearchFilters(document_ids=["gdpr"])
    timings = []
    for _ in range(rows):
        started = time.perf_counter()
        audit.record_query(PRINCIPAL, QUESTION, filters, answer, passages, 12.0)
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    p50, p95 = statistics.median(timings), timings[int(len(timings) * 0.95) - 1]
    print(f"{name}: sequential append p50 {p50:.2f} ms, p95 {p95:.2f} ms ({rows} rows)")

    connect_args = {"timeout": 30} if engine.dialect.name == "sqlite" else {}
    engines = [
        sqlalchemy.create_engine(engine.url, connect_args=connect_args) for _ in range(writers)
    ]
    logs = [AuditLog(make_session_factory(e), key=KEY) for e in engines]
    per_writer = max(1, rows // writers)
    started = time.perf_counter()
    threads = [
        threading.Thread(
            target=lambda log=log: [
                log.record_query(PRINCIPAL, QUESTION, filters, answer, passages, 12.0)
                for _ in range(per_writer)
            ]
        )
        for log in logs
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    total = per_writer * writers
    print(
        f"{name}: {writers} concurrent writers (own engines, as separate processes): "
        f"{total / elapsed:.0f} appends/s ({total} rows)"
    )
    started = time.perf_counter()
    report = audit.verify()
    elapsed = time.perf_counter() - started
    print(f"{name}: verify {report.checked} rows in {elapsed:.2f} s, ok={report.ok}")
    for e in engines:
        e.dispose()
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument(
        "--postgres", help="a PostgreSQL URL whose server may host a scratch database"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(_env_file=None, data_dir=Path(folder))  # type: ignore[call-arg]
        measure("sqlite", settings, args.rows, args.writers)
    if args.postgres:
        server = sqlalchemy.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        name = f"regulus_bench_{uuid.uuid4().hex[:8]}"
        with server.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        try:
            url = sqlalchemy.make_url(args.postgres).set(database=name)
            settings = Settings(  # type: ignore[call-arg]
                _env_file=None,
                data_dir=Path(tempfile.gettempdir()),
                database_url=url.render_as_string(hide_password=False),
            )
            measure("postgresql", settings, args.rows, args.writers)
        finally:
            with server.connect() as connection:
                connection.execute(sqlalchemy.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            server.dispose()


if __name__ == "__main__":
    main()
