"""The fixed training/held-out split of ObliQA dev used to train the project's own models.

A question is in the training part when the first byte of SHA-256(QuestionID) is below 128: about
half of ObliQA dev, the same half on every machine. Reported figures use only the held-out half
(and sets never trained on: ObliQA-MP val, XRefRAG dev).
"""

from __future__ import annotations

import hashlib


def is_training_question(question_id: str) -> bool:
    return hashlib.sha256(question_id.encode("utf-8")).digest()[0] < 128
