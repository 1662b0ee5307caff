"""Ingestion jobs over HTTP: uploads (streamed to disk), progress, and resuming a job that a stop
cut short. Each upload is kept as `uploads/<job>/<n>/<its own name>`, so a document's id and the
file name it shows come from the name it was uploaded under, whatever its letters."""

from __future__ import annotations

import unicodedata
from contextlib import suppress
from pathlib import Path, PurePath
from typing import Annotated, Any

from fastapi import APIRouter, File, Request, UploadFile, status

from api.deps import AdminPrincipal, CatalogDep, IngestorDep, SettingsDep
from api.errors import ApiError
from api.metrics import metrics_of
from api.pagination import Page, Pagination
from api.schemas import ErrorResponse, JobOut
from core.catalog import new_job_id
from ingest.errors import IngestError
from ingest.manifest import Manifest
from ingest.pipeline import Ingestor, JobNotResumableError

router = APIRouter(prefix="/v1/ingest/jobs", tags=["ingest"])
_COPY_BLOCK = 1 << 20
_MANIFEST_LIMIT = 1 << 20
_NAME_BYTES = 255  # what file systems allow


def upload_name(name: str | None) -> str:
    """The uploaded file's own name, safe to write: no folders, no control characters, NFC."""
    base = PurePath((name or "").replace("\\", "/")).name
    base = "".join(
        c for c in unicodedata.normalize("NFC", base) if unicodedata.category(c)[0] != "C"
    )
    base = base.strip()
    if base in ("", ".", ".."):
        return "upload"
    path = PurePath(base)
    stem, suffix = path.stem, path.suffix
    while len((stem + suffix).encode()) > _NAME_BYTES:
        stem = stem[:-1]
    return stem + suffix


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
    names = [upload_name(upload.filename) for upload in files]
    # Metadata is looked up by the name the admin uploaded, before it was made safe.
    entries = [
        loaded.for_file(PurePath(upload.filename or name).name)
        for upload, name in zip(files, names, strict=True)
    ]
    job_id = new_job_id()
    job_dir = settings.data_dir / "uploads" / job_id
    paths = [job_dir / str(n) / name for n, name in enumerate(names)]
    ingestor.create_job(
        names, requested_by=admin.subject, paths=paths, entries=entries, job_id=job_id
    )
    limit = int(settings.max_file_mb * 2**20)
    for upload, path in zip(files, paths, strict=True):
        path.parent.mkdir(parents=True)
        await _save(upload, path, limit)
    request.app.state.ingest_worker.submit(
        ingestor.run,
        paths,
        requested_by=admin.subject,
        metadata=dict(zip(paths, entries, strict=True)),
        job_id=job_id,
        on_document=metrics_of(request).observe_document,
        stop=request.app.state.stopping,
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


@router.post(
    "/{job_id}/resume",
    operation_id="resume_ingest_job",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        404: {"model": ErrorResponse, "description": "No such job"},
        409: {"model": ErrorResponse, "description": "The job is not interrupted or failed"},
    },
)
def resume_job(
    job_id: str, request: Request, ingestor: IngestorDep, catalog: CatalogDep, admin: AdminPrincipal
) -> JobOut:
    """Finish the documents an interrupted (or failed) job left, as that job (admins); it is
    queued at once, then runs like any job."""
    job = catalog.job(job_id)
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    if not ingestor.resumable(job):
        raise ApiError(
            409, "not_resumable", f"job {job_id} is {job.status.value}: nothing to resume"
        )
    queued = ingestor.queue_resume(job_id)
    request.app.state.ingest_worker.submit(
        _resume,
        ingestor,
        job_id,
        admin.subject,
        metrics_of(request).observe_document,
        request.app.state.stopping,
    )
    return JobOut.from_job(queued)


def _resume(ingestor: Ingestor, job_id: str, *args: Any) -> None:
    """The worker's side: a job that is no longer resumable by the time it runs is left alone."""
    with suppress(JobNotResumableError):
        ingestor.resume(job_id, *args)
