"""Evaluation runs as background jobs of the API: one at a time, in folders under the data dir.

Each job keeps its uploaded questions (`dataset.jsonl`) and its parameters (`request.json`) beside
the run files, so a job cut short by a restart is resumed at the next start where it stopped.

A run is its owner's: only they (and admins) list, read or cancel it, since its figures name the
documents and sections it was scored on. Gold is matched only within what the owner may read.
A run stops between two questions when it is cancelled (a `cancelled` marker in its folder, so a
restart does not resume it) or when the server shuts down (interrupted: resumed at the next start).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import threading
import uuid
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from core.model_files import file_sha256
from core.models import Principal, Role
from core.settings import Settings
from eval.datasets import DatasetFormat, load_questions
from eval.ragas_scores import JudgeConfig, RagasScorer
from eval.run import (
    EvalRunner,
    RunFolder,
    RunInfo,
    RunStatus,
    load_eval_questions,
)
from generation.pipeline import QueryPipeline
from retrieval.embedder import Embedder
from retrieval.store import VectorStore

DATASET_FILE = "dataset.jsonl"
REQUEST_FILE = "request.json"
CANCELLED_MARKER = "cancelled"
_RESUMED = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.INTERRUPTED)


class RunFinishedError(ValueError):
    """The run has already ended; there is nothing to cancel."""


class EvalJobRequest(BaseModel):
    """What to evaluate; stored with the run so that an interrupted job can be resumed."""

    name: str = Field(default="dataset", max_length=200)
    format: DatasetFormat | None = None
    limit: int | None = Field(default=None, ge=1)
    k: int = Field(default=10, ge=1, le=100)
    top_k: int | None = Field(default=None, ge=1, le=50)
    judge: bool = False
    ragas: bool = True


def judge_config(settings: Settings) -> JudgeConfig | None:
    if not settings.eval_judge_url:
        return None
    return JudgeConfig(
        base_url=settings.eval_judge_url,
        model=settings.eval_judge_model,
        api_key=settings.eval_judge_api_key.get_secret_value(),
    )


class EvalJobs:
    def __init__(
        self,
        root: Path,
        pipeline: QueryPipeline,
        store: VectorStore,
        embedder: Embedder,
        executor: Executor,
        judge: JudgeConfig | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        self.root = root
        self.pipeline = pipeline
        self.store = store
        self.embedder = embedder
        self.executor = executor
        self.judge = judge
        self.stopping = stopping or threading.Event()

    def submit(
        self, request: EvalJobRequest, records: list[dict[str, Any]], principal: Principal
    ) -> RunInfo:
        """Check the questions and queue the run; raises ValueError when they are unusable."""
        if request.judge and self.judge is None:
            raise ValueError("no judge configured: set REGULUS_EVAL_JUDGE_URL")
        run_id = uuid.uuid4().hex[:12]
        folder = RunFolder(self.root / run_id)
        folder.path.mkdir(parents=True)
        dataset = folder.path / DATASET_FILE
        dataset.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
        )
        try:
            fmt, questions = load_questions(dataset, request.format)  # bad input fails now
        except ValueError:
            shutil.rmtree(folder.path)
            raise
        info = RunInfo(
            run_id=run_id,
            dataset=request.name,
            dataset_sha256=file_sha256(dataset),
            format=fmt,
            k=request.k,
            top_k=request.top_k,
            judge_model=self.judge.model if request.judge and self.judge else None,
            requested_by=principal.subject,
            groups=principal.groups,
            total=min(len(questions), request.limit or len(questions)),
        )
        (folder.path / REQUEST_FILE).write_text(request.model_dump_json())
        folder.save_info(info)
        self.executor.submit(self._run, folder, info, request, principal)
        return info

    def resume_interrupted(self) -> list[str]:
        """Queue again the runs a stop cut short; they continue from their last record."""
        resumed = []
        for folder in self._folders():
            info = folder.info()
            if info is None or info.status not in _RESUMED:
                continue
            if _cancelled(folder):
                _end_cancelled(folder, info)
                continue
            request = EvalJobRequest.model_validate_json((folder.path / REQUEST_FILE).read_text())
            principal = Principal(subject=info.requested_by, groups=info.groups)
            self.executor.submit(self._run, folder, info, request, principal)
            resumed.append(info.run_id)
        return resumed

    def _run(
        self, folder: RunFolder, info: RunInfo, request: EvalJobRequest, principal: Principal
    ) -> None:
        if _cancelled(folder):  # cancelled while queued
            _end_cancelled(folder, folder.info() or info)
            return
        if self.stopping.is_set():  # the server stops before the run started: next start
            return
        try:
            _, questions, chunks, _ = load_eval_questions(
                folder.path / DATASET_FILE, request.format, self.store, groups=principal.groups
            )
            judge = self.judge if request.judge else None
            scorer = RagasScorer(self.embedder, judge) if request.ragas else None
            runner = EvalRunner(
                self.pipeline, principal, chunks, scorer, k=request.k, top_k=request.top_k
            )
            runner.run(
                questions[: request.limit],
                folder,
                info,
                should_stop=lambda: self._stop_reason(folder),
            )
        except Exception as error:  # recorded on the run; the worker thread must survive
            failed = folder.info() or info
            failed.status, failed.error = RunStatus.FAILED, f"{type(error).__name__}: {error}"
            folder.save_info(failed)

    def _stop_reason(self, folder: RunFolder) -> RunStatus | None:
        if _cancelled(folder):
            return RunStatus.CANCELLED
        return RunStatus.INTERRUPTED if self.stopping.is_set() else None

    def cancel(self, run_id: str, principal: Principal) -> RunInfo | None:
        """Stop a run after its current question (a queued one at once); None when the caller
        cannot see it; raises RunFinishedError when it has ended."""
        found = self._visible_folder(run_id, principal)
        if found is None:
            return None
        folder, info = found
        if info.status not in _RESUMED:
            raise RunFinishedError(f"run {run_id} has already {info.status.value}")
        (folder.path / CANCELLED_MARKER).write_text(principal.subject)
        if info.status is not RunStatus.RUNNING:  # nothing is working on it
            info = _end_cancelled(folder, info)
        return info

    def _visible_folder(
        self, run_id: str, principal: Principal
    ) -> tuple[RunFolder, RunInfo] | None:
        if not run_id.isalnum():
            return None
        folder = RunFolder(self.root / run_id)
        info = folder.info()
        if info is None or not _may_see(principal, info):
            return None
        return folder, info

    def _folders(self) -> list[RunFolder]:
        if not self.root.is_dir():
            return []
        return [RunFolder(p) for p in self.root.iterdir() if (p / "run.json").is_file()]

    def list(self, limit: int, offset: int, principal: Principal) -> tuple[list[RunInfo], int]:
        """The runs `principal` may see (their own; every run for admins), newest first."""
        infos = [
            info
            for f in self._folders()
            if (info := f.info()) is not None and _may_see(principal, info)
        ]
        infos.sort(key=lambda i: i.created_at, reverse=True)
        return infos[offset : offset + limit], len(infos)

    def get(
        self, run_id: str, principal: Principal
    ) -> tuple[RunInfo, dict[str, Any] | None] | None:
        """A run and its summary; None when there is none `principal` may see."""
        found = self._visible_folder(run_id, principal)
        return None if found is None else (found[1], found[0].summary())


def _may_see(principal: Principal, info: RunInfo) -> bool:
    return principal.role is Role.ADMIN or info.requested_by == principal.subject


def _cancelled(folder: RunFolder) -> bool:
    return (folder.path / CANCELLED_MARKER).is_file()


def _end_cancelled(folder: RunFolder, info: RunInfo) -> RunInfo:
    info = info.model_copy(
        update={"status": RunStatus.CANCELLED, "finished_at": dt.datetime.now(dt.UTC)}
    )
    folder.save_info(info)
    return info
