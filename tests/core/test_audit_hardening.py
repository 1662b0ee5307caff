"""Findings of the adversarial review (issue 20) in the audit log: a chain that anyone with write
access to the database could rewrite, and personal data in filters.

The attacker here holds the database (SQL access to every table) but not the audit key, which
lives outside it (REGULUS_AUDIT_KEY or the data folder's key file); a checkpoint kept by the
operator anchors the head outside both.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from api.cli.main import app
from core.audit import (
    AUDIT_KEY_FILE,
    AuditEvent,
    AuditLog,
    Checkpoint,
    load_audit_key,
    row_hash,
    unkeyed_row_hash,
)
from core.db import make_engine, make_session_factory
from core.models import Principal, Role, SearchFilters
from core.settings import get_settings
from tests.helpers import make_settings

ALICE = Principal(subject="key:alice", groups=["public"], role=Role.ANALYST)
KEY = b"k" * 32


@pytest.fixture
def audit(engine: Engine) -> AuditLog:
    return AuditLog(make_session_factory(engine), key=KEY)


def _fill(audit: AuditLog, n: int) -> None:
    for i in range(n):
        audit.append(AuditEvent.DOCUMENT_ADDED, "cli", target=f"doc-{i}", detail={"i": i})


def _rows(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as connection:
        result = connection.execute(text("SELECT * FROM audit_log ORDER BY id"))
        return [dict(row._mapping) for row in result]


def _rewrite_from(engine: Engine, first: int, hasher: object) -> None:
    """What a forger does after editing row `first`: recompute every later hash and the head."""
    from core.audit import AuditEntry

    rows = _rows(engine)
    previous = rows[first - 2]["hash"] if first > 1 else "0" * 64
    with engine.begin() as connection:
        for row in rows[first - 1 :]:
            entry = AuditEntry.model_validate(
                row
                | {
                    "detail": json.loads(row["detail"])
                    if isinstance(row["detail"], str)
                    else row["detail"]
                }
            ).model_dump()
            entry["prev_hash"] = previous
            digest = hasher(entry)  # type: ignore[operator]
            connection.execute(
                text("UPDATE audit_log SET prev_hash = :p, hash = :h WHERE id = :id"),
                {"p": previous, "h": digest, "id": row["id"]},
            )
            previous = digest
        connection.execute(
            text("UPDATE audit_head SET last_id = :i, last_hash = :h"),
            {"i": rows[-1]["id"], "h": previous},
        )


class TestKeyedChain:
    def test_an_edit_with_every_later_hash_recomputed_is_caught(
        self, audit: AuditLog, engine: Engine
    ) -> None:
        _fill(audit, 5)
        with engine.begin() as connection:
            connection.execute(text("UPDATE audit_log SET target = 'forged' WHERE id = 2"))
        _rewrite_from(engine, 2, unkeyed_row_hash)  # the forger has no key: plain SHA-256
        report = audit.verify()
        assert (report.ok, report.first_bad_id) == (False, 2)
        assert "audit key" in (report.problem or "")

    def test_a_guessed_key_does_not_help_either(self, audit: AuditLog, engine: Engine) -> None:
        _fill(audit, 3)
        with engine.begin() as connection:
            connection.execute(text("UPDATE audit_log SET actor = 'nobody' WHERE id = 1"))
        _rewrite_from(engine, 1, lambda entry: row_hash(entry, b"guess" * 8))
        assert audit.verify().first_bad_id == 1

    def test_a_cut_tail_with_the_head_moved_back_is_caught_by_a_checkpoint(
        self, audit: AuditLog, engine: Engine
    ) -> None:
        _fill(audit, 5)
        checkpoint = audit.checkpoint()
        _fill(audit, 2)  # rows after the checkpoint are fine
        assert audit.verify(against=checkpoint).ok
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM audit_log WHERE id >= 4"))
            row3 = connection.execute(text("SELECT hash FROM audit_log WHERE id = 3")).scalar()
            connection.execute(
                text("UPDATE audit_head SET last_id = 3, last_hash = :h"), {"h": row3}
            )
        assert audit.verify().ok  # without an anchor outside the database, a cut tail is invisible
        report = audit.verify(against=checkpoint)
        assert (report.ok, report.first_bad_id) == (False, 4)
        assert "checkpoint" in (report.problem or "")

    def test_a_rewrite_by_a_key_holder_before_the_checkpoint_is_caught(
        self, audit: AuditLog, engine: Engine
    ) -> None:
        _fill(audit, 5)
        checkpoint = audit.checkpoint()
        with engine.begin() as connection:
            connection.execute(text("UPDATE audit_log SET target = 'forged' WHERE id = 2"))
        _rewrite_from(engine, 2, lambda entry: row_hash(entry, KEY))
        assert audit.verify().ok  # the key holder's chain is consistent ...
        report = audit.verify(against=checkpoint)
        assert (report.ok, report.first_bad_id) == (False, 5)  # ... but not the checkpointed head

    def test_a_forged_checkpoint_is_refused(self, audit: AuditLog) -> None:
        _fill(audit, 2)
        checkpoint = audit.checkpoint()
        forged = checkpoint.model_copy(update={"last_id": 1})
        report = audit.verify(against=forged)
        assert not report.ok and "signature" in (report.problem or "")
        other = AuditLog(audit._sessions, key=b"x" * 32)  # a checkpoint of another key
        assert not other.verify(against=checkpoint).ok
        assert Checkpoint.model_validate_json(checkpoint.model_dump_json()) == checkpoint

    def test_an_unkeyed_chain_from_before_the_key_is_adopted_once(
        self, audit: AuditLog, engine: Engine
    ) -> None:
        _fill(audit, 3)
        _rewrite_from(engine, 1, unkeyed_row_hash)  # as rows were hashed before the key existed
        report = audit.verify()
        assert (report.ok, report.first_bad_id) == (False, 1)
        assert "regulus audit rekey" in (report.problem or "")
        adopted = audit.rekey()
        assert adopted.ok and adopted.checked == 3
        assert audit.verify().ok and audit.verify().checked == 4  # plus the rekey's own row
        assert audit.entries(limit=1)[0][0].event == AuditEvent.AUDIT_REKEYED

    def test_a_tampered_unkeyed_chain_is_not_adopted(self, audit: AuditLog, engine: Engine) -> None:
        _fill(audit, 3)
        _rewrite_from(engine, 1, unkeyed_row_hash)
        with engine.begin() as connection:
            connection.execute(text("UPDATE audit_log SET target = 'forged' WHERE id = 2"))
        refused = audit.rekey()
        assert (refused.ok, refused.first_bad_id) == (False, 2)
        assert not audit.verify().ok


class TestKey:
    def test_the_key_file_is_made_once_private_and_never_in_the_database(
        self, tmp_path: Path
    ) -> None:
        settings = make_settings(tmp_path)
        key = load_audit_key(settings)
        assert load_audit_key(settings) == key and len(key) >= 32
        mode = stat.S_IMODE(os.stat(tmp_path / AUDIT_KEY_FILE).st_mode)
        assert mode == 0o600
        engine = make_engine(settings)
        try:
            log = AuditLog.from_settings(make_session_factory(engine), settings)
            _fill(log, 3)
            assert log.verify().ok
        finally:
            engine.dispose()
        database = (tmp_path / "regulus.db").read_bytes() + b"".join(
            p.read_bytes() for p in tmp_path.glob("regulus.db-*")
        )
        assert key not in database and key.hex().encode() not in database

    def test_a_configured_key_wins_and_a_short_one_is_refused(self, tmp_path: Path) -> None:
        configured = make_settings(tmp_path, audit_key=SecretStr("s" * 40))
        assert load_audit_key(configured) == b"s" * 40
        assert not (tmp_path / AUDIT_KEY_FILE).exists()
        with pytest.raises(ValueError, match="at least 32"):
            load_audit_key(make_settings(tmp_path, audit_key=SecretStr("short")))

    def test_a_key_file_others_can_read_is_refused(self, tmp_path: Path) -> None:
        load_audit_key(make_settings(tmp_path))
        os.chmod(tmp_path / AUDIT_KEY_FILE, 0o644)
        with pytest.raises(PermissionError, match="chmod 600"):
            load_audit_key(make_settings(tmp_path))


class TestCli:
    def test_checkpoint_then_verify_against_it(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("REGULUS_DATA_DIR", str(tmp_path))
        monkeypatch.delenv("REGULUS_DATABASE_URL", raising=False)
        monkeypatch.delenv("REGULUS_AUDIT_KEY", raising=False)
        get_settings.cache_clear()
        runner = CliRunner()
        try:
            for _ in range(3):
                assert runner.invoke(app, ["keys", "create", "--name", "x"]).exit_code == 0
            saved = tmp_path / "head.json"
            written = runner.invoke(app, ["audit", "checkpoint", "-o", str(saved)])
            assert written.exit_code == 0, written.output
            printed = runner.invoke(app, ["audit", "checkpoint"])
            assert Checkpoint.model_validate_json(printed.stdout.strip()).last_id == 3
            intact = runner.invoke(app, ["audit", "verify", "--against", str(saved)])
            assert intact.exit_code == 0 and "checkpoint" in intact.output, intact.output
            engine = make_engine(get_settings())
            with engine.begin() as connection:
                connection.execute(text("DELETE FROM audit_log WHERE id = 3"))
                row2 = connection.execute(text("SELECT hash FROM audit_log WHERE id = 2")).scalar()
                connection.execute(
                    text("UPDATE audit_head SET last_id = 2, last_hash = :h"), {"h": row2}
                )
            engine.dispose()
            assert runner.invoke(app, ["audit", "verify"]).exit_code == 0
            cut = runner.invoke(app, ["audit", "verify", "--against", str(saved)])
            assert cut.exit_code == 1 and "BROKEN at row 3" in cut.output
            missing = runner.invoke(app, ["audit", "verify", "--against", str(tmp_path / "no")])
            assert missing.exit_code == 2
        finally:
            get_settings.cache_clear()


def test_filters_are_redacted_like_the_question(tmp_path: Path) -> None:
    engine = make_engine(make_settings(tmp_path))
    try:
        audit = AuditLog(make_session_factory(engine), key=KEY)
        filters = SearchFilters(
            document_ids=["gdpr", "jane@example.com"], regulators=["call 0171-1234567"]
        )
        audit.record_query(ALICE, "q?", filters, None, [], 1.0, error="down")
        detail = audit.entries()[0][0].detail
    finally:
        engine.dispose()
    assert detail["filters"] == {
        "document_ids": ["gdpr", "[EMAIL]"],
        "regulators": ["call [PHONE]"],
    }


def test_unkeyed_hash_is_the_plain_sha256_of_before() -> None:
    """The hash of chains written before the key, so that `rekey` can check them."""
    import datetime as dt

    entry = {
        "id": 1,
        "time": dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        "event": "key.created",
        "actor": "cli",
        "detail": {},
        "prev_hash": "0" * 64,
    }
    entry |= {name: None for name in ("role", "target", "question", "answer", "refused", "model")}
    entry |= {n: None for n in ("prompt_tokens", "completion_tokens", "cost_usd", "latency_ms")}
    canonical = json.dumps(
        {**entry, "time": "2025-01-01T00:00:00+00:00"},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    assert unkeyed_row_hash(entry) == hashlib.sha256(canonical.encode()).hexdigest()
