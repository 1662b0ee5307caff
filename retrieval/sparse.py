"""BM25-style sparse vectors for keyword search inside Qdrant.

Documents get saturated, length-normalised term frequencies; queries get a weight of one per term.
The collection's sparse vector uses Qdrant's IDF modifier, so inverse document frequencies come
from the collection itself and stay right as documents are added or removed: nothing to refit.
Terms are hashed to indices (CRC32), so no vocabulary has to be stored or shared.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from functools import lru_cache

from nltk.stem.snowball import SnowballStemmer
from qdrant_client import models
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

# Rule and article references ("7.2.1", "2016/679", "ac-2") stay single terms.
_TOKEN = re.compile(r"[a-z0-9]+(?:[./\-][a-z0-9]+)*")
_stemmer = SnowballStemmer("english")


@lru_cache(maxsize=200_000)
def _term_index(token: str) -> int:
    stem = _stemmer.stem(token) if token.isalpha() else token
    return zlib.crc32(stem.encode("utf-8"))


def terms(text: str) -> list[int]:
    return [
        _term_index(token)
        for token in _TOKEN.findall(text.lower())
        if token not in ENGLISH_STOP_WORDS
    ]


class BM25Encoder:
    def __init__(self, k1: float = 1.2, b: float = 0.75, average_length: float = 100.0) -> None:
        if k1 <= 0 or not 0 <= b <= 1 or average_length <= 0:
            raise ValueError("BM25 needs k1 > 0, 0 <= b <= 1 and a positive average length")
        self.k1 = k1
        self.b = b
        self.average_length = average_length

    def encode_document(self, text: str) -> models.SparseVector:
        counts = Counter(terms(text))
        length_norm = self.k1 * (1 - self.b + self.b * sum(counts.values()) / self.average_length)
        indices = list(counts)
        values = [counts[i] * (self.k1 + 1) / (counts[i] + length_norm) for i in indices]
        return models.SparseVector(indices=indices, values=values)

    def encode_query(self, text: str) -> models.SparseVector:
        indices = sorted(set(terms(text)))
        return models.SparseVector(indices=indices, values=[1.0] * len(indices))
