from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Request, UploadFile, status

from api.deps import AdminPrincipal, CatalogDep, IngestorDep, SettingsDep
from api.errors import ApiError
from api.metrics import metrics_of
from api.pagination import Page, Pagination
from api.schemas import ErrorResponse, JobOut
from ingest.errors import IngestError
from ingest.manifest import Manifest

router = APIRouter(prefix="/v1/ingest/jobs", tags=["ingest"])
_COPY_BLOCK = 1 << 20
_MANIFEST_LIMIT = 1 << 20


def _safe_name(name: str | None, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name or "upload").name).strip("._") or "upload"
    candidate, n = base, 1
    while candidate in taken:
        stem, dot, suffix = base.rpartition(".")
        candidate = f"{stem}-{n}.{suffix}" if dot else f"{base}-{n}"
        n += 1
    taken.add(candidate)
    return candidate


async def _save(upload: UploadFile, target: Path, limit: int) -> None:
    """Stream to disk, stopping a byte past the limit: the job then reports the file as too big."""
    written = 0
    with target.open("wb") as out:
        while written <= limit and (block := await upload.read(_COPY_BLOCK)):
            out.write(block[: limit + 1 - written])
            written += len(block)


@router.post(
    "",
    operation_id="create_ingest_job",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
)
async def create_job(
    request: Request,
    ingestor: IngestorDep,
    catalog: CatalogDep,
    settings: SettingsDep,
    admin: AdminPrincipal,
    files: Annotated[list[UploadFile], File(description="Documents to ingest.")],
    manifest: Annotated[
        UploadFile | None, File(description="Metadata by file name (JSON or YAML).")
    ] = None,
) -> JobOut:
    """Upload documents and ingest them as a background job (admins); poll the job for progress."""
    loaded = Manifest()
    if manifest is not None:
        raw = await manifest.read(_MANIFEST_LIMIT + 1)
        if len(raw) > _MANIFEST_LIMIT:
            raise ApiError(413, "too_large", "the manifest is over 1 MB")
        try:
            loaded = Manifest.parse(raw.decode("utf-8", errors="strict"), origin="manifest")
        except (IngestError, UnicodeDecodeError) as error:
            raise ApiError(422, "invalid_manifest", str(error)) from error
    taken: set[str] = set()
    names = [_safe_name(upload.filename, taken) for upload in files]
    job_id = ingestor.create_job(names, requested_by=admin.subject)
    job_dir = settings.data_dir / "uploads" / job_id
    job_dir.mkdir(parents=True)
    limit = int(settings.max_file_mb * 2**20)
    paths = [job_dir / name for name in names]
    for upload, path in zip(files, paths, strict=True):
        await _save(upload, path, limit)
    # Metadata is looked up by the name the admin uploaded, before it was made safe.
    metadata = {
        path: loaded.for_file(Path(upload.filename or path.name).name)
        for upload, path in zip(files, paths, strict=True)
    }
    request.app.state.ingest_worker.submit(
        ingestor.run,
        paths,
        requested_by=admin.subject,
        metadata=metadata,
        job_id=job_id,
        on_document=metrics_of(request).observe_document,
    )
    job = catalog.job(job_id)
    assert job is not None
    return JobOut.from_job(job)


@router.get("", operation_id="list_ingest_jobs")
def list_jobs(
    catalog: CatalogDep,
    _admin: AdminPrincipal,
    pagination: Pagination,
) -> Page[JobOut]:
    """Ingestion jobs, newest first (admins)."""
    jobs = [JobOut.from_job(job) for job in catalog.jobs(pagination.limit, pagination.offset)]
    return pagination.page(jobs, catalog.count_jobs())


@router.get(
    "/{job_id}",
    operation_id="get_ingest_job",
    responses={404: {"model": ErrorResponse, "description": "No such job"}},
)
def get_job(job_id: str, catalog: CatalogDep, _admin: AdminPrincipal) -> JobOut:
    """One job with per-document status, chunk counts, errors and timings (admins)."""
    job = catalog.job(job_id)
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    return JobOut.from_job(job)
