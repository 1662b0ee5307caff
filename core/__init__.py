"""Shared settings and domain types used by every Regulus layer."""
