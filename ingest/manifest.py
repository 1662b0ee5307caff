"""Per-folder document metadata: `manifest.json`, `manifest.yaml` or `manifest.yml`.

The manifest maps file names to metadata; the key `"*"` holds defaults for every file of the folder:

    "*": {jurisdiction: EU, regulator: European Commission, access_groups: [public]}
    gdpr.xhtml: {document_id: gdpr, title: GDPR, effective_date: 2018-05-25}
    eprivacy.html: {document_id: eprivacy, aliases: [cookie law]}
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from ingest.errors import IngestError

MANIFEST_NAMES = ("manifest.json", "manifest.yaml", "manifest.yml")
DEFAULTS_KEY = "*"


class ManifestEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document_id: str | None = None
    title: str | None = None
    jurisdiction: str | None = None
    regulator: str | None = None
    document_type: str | None = None
    effective_date: dt.date | None = None
    version: str | None = None
    access_groups: list[str] | None = None
    aliases: list[str] | None = None

    def merged_over(self, defaults: ManifestEntry) -> ManifestEntry:
        return defaults.model_copy(update=self.model_dump(exclude_none=True))


class Manifest(BaseModel):
    entries: dict[str, ManifestEntry] = {}

    def for_file(self, name: str) -> ManifestEntry:
        defaults = self.entries.get(DEFAULTS_KEY, ManifestEntry())
        return self.entries.get(name, ManifestEntry()).merged_over(defaults)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            return cls.parse(path.read_text(encoding="utf-8"), origin=str(path))
        except UnicodeDecodeError as error:
            raise IngestError(f"{path}: not UTF-8 text") from error

    @classmethod
    def parse(cls, text: str, origin: str = "manifest") -> Manifest:
        """JSON or YAML (YAML is a superset of JSON)."""
        try:
            raw: Any = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise IngestError(f"{origin}: not valid JSON/YAML: {error}") from error
        if not isinstance(raw, dict):
            raise IngestError(f"{origin}: a manifest maps file names to metadata")
        try:
            return cls(entries={str(k): ManifestEntry.model_validate(v) for k, v in raw.items()})
        except ValidationError as error:
            raise IngestError(f"{origin}: invalid metadata: {error}") from error

    @classmethod
    def for_folder(cls, folder: Path) -> Manifest:
        for name in MANIFEST_NAMES:
            if (folder / name).is_file():
                return cls.load(folder / name)
        return cls()
