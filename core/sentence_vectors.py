"""The vectors of passage sentences, stored at ingestion so that answering never embeds them.

An extractive answer compares a question with every sentence of its top passages. Embedding those
sentences on the query path was most of a cold answer's time; ingestion embeds each document's
sentences once, beside its chunks, and the query path reads them here. Rows are keyed by the
embedder's signature (vectors of two models never mix) and the sentence's hash, per document, so
that deleting or replacing a document removes exactly its sentences.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np
from sqlalchemy import Index, LargeBinary, String, delete, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from core.db import Base

# SQLite accepts at most 32,766 bound parameters per statement; lookups go in slices of this.
_IN_SLICE = 500


class SentenceVectorRow(Base):
    __tablename__ = "sentence_vectors"
    __table_args__ = (Index("ix_sentence_vectors_lookup", "embedder", "text_hash"),)

    embedder: Mapped[str] = mapped_column(String(200), primary_key=True)
    document_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    text_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class SentenceVectors:
    """Sentence -> vector per embedder, in the SQL store (float32, as the embedder made them)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def get(self, embedder: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors of those of `texts` any document holds."""
        by_hash = {text_hash(text): text for text in texts}
        hashes = list(by_hash)
        found: dict[str, np.ndarray] = {}
        with self._sessions() as session:
            for start in range(0, len(hashes), _IN_SLICE):
                rows = session.execute(
                    select(SentenceVectorRow.text_hash, SentenceVectorRow.vector).where(
                        SentenceVectorRow.embedder == embedder,
                        SentenceVectorRow.text_hash.in_(hashes[start : start + _IN_SLICE]),
                    )
                )
                for digest, vector in rows:
                    found[by_hash[digest]] = np.frombuffer(vector, dtype=np.float32)
        return found

    def holds(self, embedder: str, document_id: str) -> bool:
        """Whether the document has any sentence vector of this embedder."""
        query = (
            select(SentenceVectorRow.text_hash)
            .where(
                SentenceVectorRow.embedder == embedder,
                SentenceVectorRow.document_id == document_id,
            )
            .limit(1)
        )
        with self._sessions() as session:
            return session.scalar(query) is not None

    def missing(self, embedder: str, document_id: str, texts: Iterable[str]) -> list[str]:
        """Those of `texts` (distinct, in order) this document holds no vector of yet."""
        wanted = {text_hash(text): text for text in texts}
        with self._sessions() as session:
            held = _held(session, embedder, document_id)
        return [text for digest, text in wanted.items() if digest not in held]

    def save(self, embedder: str, document_id: str, vectors: dict[str, np.ndarray]) -> None:
        """Add a document's sentence vectors (texts it already holds are left as they are)."""
        if not vectors:
            return
        with self._sessions.begin() as session:
            held = _held(session, embedder, document_id)
            session.add_all(
                SentenceVectorRow(
                    embedder=embedder,
                    document_id=document_id,
                    text_hash=digest,
                    vector=np.asarray(vector, dtype=np.float32).tobytes(),
                )
                for text, vector in vectors.items()
                if (digest := text_hash(text)) not in held
            )

    def keep_only(self, embedder: str, document_id: str, texts: Iterable[str]) -> None:
        """Drop the document's other vectors: an older version's sentences, another embedder's."""
        kept = {text_hash(text) for text in texts}
        with self._sessions.begin() as session:
            session.execute(
                delete(SentenceVectorRow).where(
                    SentenceVectorRow.document_id == document_id,
                    SentenceVectorRow.embedder != embedder,
                )
            )
            old = sorted(_held(session, embedder, document_id) - kept)
            for start in range(0, len(old), _IN_SLICE):
                session.execute(
                    delete(SentenceVectorRow).where(
                        SentenceVectorRow.document_id == document_id,
                        SentenceVectorRow.embedder == embedder,
                        SentenceVectorRow.text_hash.in_(old[start : start + _IN_SLICE]),
                    )
                )

    def delete_document(self, document_id: str) -> None:
        with self._sessions.begin() as session:
            session.execute(
                delete(SentenceVectorRow).where(SentenceVectorRow.document_id == document_id)
            )

    def count(self, embedder: str | None = None) -> int:
        query = select(func.count()).select_from(SentenceVectorRow)
        if embedder is not None:
            query = query.where(SentenceVectorRow.embedder == embedder)
        with self._sessions() as session:
            return int(session.scalar(query) or 0)


def _held(session: Session, embedder: str, document_id: str) -> set[str]:
    """The hashes of the sentences a document holds vectors of, for this embedder."""
    return set(
        session.scalars(
            select(SentenceVectorRow.text_hash).where(
                SentenceVectorRow.embedder == embedder,
                SentenceVectorRow.document_id == document_id,
            )
        )
    )
