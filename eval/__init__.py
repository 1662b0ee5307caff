"""Evaluation: retrieval and answer metrics over question sets with gold evidence."""
