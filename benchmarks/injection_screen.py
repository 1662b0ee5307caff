"""False positives of the prompt-injection screen on real regulation, and its speed.

Screens every ObliQA passage (ADGM rulebooks, 13k passages) and every section the project's parser
reads from the EU and NIST texts: any hit there is a false positive, since none of them addresses
a model. Prints counts, the passages hit, and microseconds per passage.

    python benchmarks/injection_screen.py [--corpora ../shared/corpora]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from core.injection import InjectionScreen
from ingest.manifest import ManifestEntry
from ingest.parsers import parse_document


def texts(root: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"obliqa": []}
    for path in sorted((root / "obliqa" / "documents").glob("*.json")):
        found["obliqa"].extend(p["Passage"] for p in json.loads(path.read_text()) if p["Passage"])
    for folder in ("eu", "nist"):
        found[folder] = [
            section.text
            for path in sorted((root / folder).iterdir())
            for section in parse_document(path, ManifestEntry()).sections
        ]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpora", type=Path, default=Path("../shared/corpora"))
    args = parser.parse_args()
    screen = InjectionScreen()
    for name, items in texts(args.corpora).items():
        started = time.perf_counter()
        results = [screen.run(text) for text in items]
        elapsed = time.perf_counter() - started
        hits = [(r, t) for r, t in zip(results, items, strict=True) if r.suspect]
        partial = sum(1 for r in results if r.reasons and not r.suspect)
        print(
            f"{name}: {len(items)} texts, {len(hits)} suspect ({len(hits) / len(items):.3%}), "
            f"{partial} with a sub-threshold hit; {elapsed / len(items) * 1e6:.0f} µs per text"
        )
        for result, text in hits:
            print(f"    {result.reasons}: {' '.join(text.split())[:160]!r}")


if __name__ == "__main__":
    main()
