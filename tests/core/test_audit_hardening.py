"""Findings of the adversarial review (issue 20) in the audit log: personal data in filters."""

from __future__ import annotations

from pathlib import Path

from core.audit import AuditLog
from core.db import make_engine, make_session_factory
from core.models import Principal, Role, SearchFilters
from tests.helpers import make_settings

ALICE = Principal(subject="key:alice", groups=["public"], role=Role.ANALYST)


def test_filters_are_redacted_like_the_question(tmp_path: Path) -> None:
    engine = make_engine(make_settings(tmp_path))
    try:
        audit = AuditLog(make_session_factory(engine))
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
