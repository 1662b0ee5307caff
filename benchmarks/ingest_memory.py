"""Memory of ingesting one large PDF: a ~1,000-page rulebook made by repeating the 7-page test
fixture (its ruled fee table included), parsed in page batches or, for comparison, in one go.

Prints the resident memory before the document, the peak while ingesting it and the growth.
Each run is one process, so peak figures of two settings never mix: run the script twice.

Run: .venv/bin/python benchmarks/ingest_memory.py [--pages 1000] [--batch-pages 20|0] [--parse-only]
(`--batch-pages 0` parses the whole file at once, as before page batches existed.)
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")

import psutil
import pypdf

from api.services import Services
from core.settings import Settings
from ingest import parsers

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests/fixtures/rulebook.pdf"


def make_pdf(pages: int, out: Path) -> int:
    """The fixture repeated until it has at least `pages` pages; returns the page count."""
    source = pypdf.PdfReader(FIXTURE)
    writer = pypdf.PdfWriter()
    while len(writer.pages) < pages:
        for page in source.pages:
            writer.add_page(page)
    with out.open("wb") as file:
        writer.write(file)
    return len(writer.pages)


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--batch-pages", type=int, default=parsers.PDF_PAGES_PER_BATCH)
    parser.add_argument("--parse-only", action="store_true", help="Parse only, no model or store.")
    args = parser.parse_args()
    parsers.PDF_PAGES_PER_BATCH = args.batch_pages or 10**9

    with tempfile.TemporaryDirectory() as tmp:
        pdf = Path(tmp) / "rulebook-large.pdf"
        pages = make_pdf(args.pages, pdf)
        parsers.parse_document(FIXTURE)  # one-time imports and models count as the baseline
        if args.parse_only:
            before = rss_mb()
            started = time.perf_counter()
            parts = f"{len(parsers.parse_document(pdf).sections)} sections"
        else:
            settings = Settings(_env_file=None, data_dir=Path(tmp) / "data")  # type: ignore[call-arg]
            services = Services(settings)
            services.embedder.embed(["warm up"])  # the model is loaded before the baseline figure
            before = rss_mb()
            started = time.perf_counter()
            job = services.ingestor().run([pdf], requested_by="benchmark")
            services.close()
            if job.documents[0].error:
                raise SystemExit(job.documents[0].error)
            parts = f"{job.documents[0].chunks} chunks"
        elapsed = time.perf_counter() - started
    batch = f"{args.batch_pages}-page batches" if args.batch_pages else "the whole file at once"
    mode = "parse" if args.parse_only else "ingest"
    print(
        f"{mode} of {pages} pages, {batch}: {parts} in {elapsed:.0f} s; RSS before "
        f"{before:.0f} MB, peak {peak_rss_mb():.0f} MB, growth {peak_rss_mb() - before:.0f} MB"
    )


if __name__ == "__main__":
    main()
