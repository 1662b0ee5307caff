"""Errors a single document can fail with; a job records them and carries on."""


class IngestError(Exception):
    """A document could not be ingested; the message says why in words an admin can act on."""


class UnsupportedFormatError(IngestError):
    pass


class EmptyDocumentError(IngestError):
    pass
