"""Per-folder document metadata: `manifest.json`, `manifest.yaml` or `manifest.yml`.

The manifest maps file names to metadata; the key `"*"` holds defaults for every file of the folder:

    "*": {jurisdiction: EU, regulator: European Commission, access_groups: [public]}
    gdpr.xhtml: {document_id: gdpr, title: GDPR, effective_date: 2018-05-25}
"""

from __future__ import annotations

import datetime as dt
import json
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
            text = path.read_text(encoding="utf-8")
            raw: Any = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
            if not isinstance(raw, dict):
                raise IngestError(f"{path}: a manifest maps file names to metadata")
            return cls(
                entries={str(name): ManifestEntry.model_validate(v) for name, v in raw.items()}
            )
        except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as error:
            raise IngestError(f"{path}: not valid JSON/YAML: {error}") from error
        except ValidationError as error:
            raise IngestError(f"{path}: invalid metadata: {error}") from error

    @classmethod
    def for_folder(cls, folder: Path) -> Manifest:
        for name in MANIFEST_NAMES:
            if (folder / name).is_file():
                return cls.load(folder / name)
        return cls()
