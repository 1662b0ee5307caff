"""Training scripts for the project's own retrieval models."""
