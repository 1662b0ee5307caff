"""Retrieval: the vector index (embedder + Qdrant collection) and the retrievers that query it."""
