"""Prometheus metrics at /metrics: requests per route template, answers, tokens, ingestion.

Each app has its own registry (tests build many apps in one process). Request metrics come from a
middleware, so rejections (413, 429, 503, 504) are counted too; job and document totals are read
from the SQL store at scrape time, so they include what the CLI ingested.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.catalog import JobDocument, JobStatus
from core.models import Answer

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "regulus_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "regulus_http_request_duration_seconds",
            "Time to the last byte of the response, by route template.",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.answers = Counter(
            "regulus_answers",
            "Answers given, by model and whether the corpus did not address the question.",
            ["model", "refused"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "regulus_tokens",
            "Model tokens spent on answers, by model and kind (prompt, completion).",
            ["model", "kind"],
            registry=self.registry,
        )
        self.ingested_documents = Counter(
            "regulus_ingest_documents",
            "Documents processed by ingestion jobs in this process, by outcome.",
            ["status"],
            registry=self.registry,
        )
        self.ingested_chunks = Counter(
            "regulus_ingest_chunks",
            "Chunks written by ingestion jobs in this process.",
            registry=self.registry,
        )
        self.suspect_chunks = Counter(
            "regulus_ingest_injection_suspect_chunks",
            "Chunks flagged by the prompt-injection screen, by whether they were quarantined.",
            ["quarantined"],
            registry=self.registry,
        )

    def observe_answer(self, answer: Answer) -> None:
        self.answers.labels(answer.model, str(answer.refused).lower()).inc()
        if answer.usage is not None:
            self.tokens.labels(answer.usage.model, "prompt").inc(answer.usage.prompt_tokens)
            self.tokens.labels(answer.usage.model, "completion").inc(answer.usage.completion_tokens)

    def observe_document(self, outcome: JobDocument) -> None:
        """An ingestion job's progress callback."""
        self.ingested_documents.labels(outcome.status.value).inc()
        self.ingested_chunks.inc(outcome.chunks if outcome.status.value == "ingested" else 0)
        for suspect in outcome.suspect_chunks:
            self.suspect_chunks.labels(str(suspect.quarantined).lower()).inc()


class _CatalogCollector(Collector):
    """Jobs by status and documents indexed, read from the SQL store when scraped."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        services = getattr(self._app.state, "services", None)
        if services is None:
            return
        jobs = GaugeMetricFamily(
            "regulus_ingest_jobs", "Ingestion jobs by status.", labels=["status"]
        )
        counts = services.catalog.job_counts()
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status.value, 0))
        yield jobs
        yield GaugeMetricFamily(
            "regulus_documents", "Documents indexed.", value=services.catalog.count_documents()
        )


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            # The router records the matched route on the scope: its template keeps the label
            # set small (/v1/documents/{document_id}, not one label per document).
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - started)


def metrics_of(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    operation_id="metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
def metrics(request: Request) -> Response:
    """Prometheus metrics in the text exposition format."""
    return Response(generate_latest(metrics_of(request).registry), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI) -> Metrics:
    metrics = Metrics()
    metrics.registry.register(_CatalogCollector(app))
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(router)
    return metrics
