"""Training scripts for the generation models (the support cross-encoder)."""
