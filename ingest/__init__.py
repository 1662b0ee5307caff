"""Ingestion: parse regulatory documents, chunk them along their structure, embed and store."""
