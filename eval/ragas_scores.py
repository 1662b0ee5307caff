"""RAGAS metrics for one answer: the non-LLM ones always, the LLM-judged ones with a judge.

The judge is any OpenAI-compatible server (vLLM, llama.cpp); ragas drives it through instructor in
JSON mode. A metric that fails (a judge that returns unparseable JSON, a timeout) is recorded as
None with the reason, so one bad judgement never sinks a run.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, Field

from retrieval.embedder import Embedder, TextRole

# The metric names in per-question records and (as means) in summary.json.
NON_LLM_METRICS = (
    "ragas_non_llm_context_precision",
    "ragas_non_llm_context_recall",
    "ragas_semantic_similarity",
    "ragas_rouge_l",
    "ragas_bleu",
    "ragas_string_similarity",
)
JUDGE_METRICS = (
    "ragas_faithfulness",
    "ragas_response_relevancy",
    "ragas_llm_context_precision",
    "ragas_factual_correctness",
)


class JudgeConfig(BaseModel):
    """An OpenAI-compatible server that judges answers (a strong model; never the one judged)."""

    base_url: str = Field(min_length=1)
    model: str = "default"
    api_key: str = "not-needed"
    timeout_s: float = Field(default=120.0, gt=0)
    max_tokens: int = Field(default=1024, ge=64)
    metric_timeout_s: float = Field(
        default=300.0, gt=0, description="Longest one judged metric may take (several calls)."
    )


def _ragas_embeddings(embedder: Embedder) -> Any:
    """The service's own local embedder behind ragas's interface: no embedding API needed."""
    from ragas.embeddings.base import BaseRagasEmbedding

    class EmbedderForRagas(BaseRagasEmbedding):
        def embed_text(self, text: str, **kwargs: Any) -> list[float]:
            return [float(x) for x in embedder.embed_one(text, TextRole.QUERY)]

        async def aembed_text(self, text: str, **kwargs: Any) -> list[float]:
            return self.embed_text(text)

    return EmbedderForRagas()


class RagasScores(BaseModel):
    values: dict[str, float | None]
    errors: dict[str, str] = Field(default_factory=dict)


class RagasScorer:
    """Imports ragas (and langchain) only when built: the service starts without them."""

    def __init__(self, embedder: Embedder, judge: JudgeConfig | None = None) -> None:
        # ragas reports usage to its authors unless told not to; this service never phones home.
        os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
        from ragas.metrics._context_precision import NonLLMContextPrecisionWithReference
        from ragas.metrics._context_recall import NonLLMContextRecall
        from ragas.metrics.collections import (
            AnswerRelevancy,
            BleuScore,
            ContextPrecisionWithReference,
            FactualCorrectness,
            Faithfulness,
            NonLLMStringSimilarity,
            RougeScore,
            SemanticSimilarity,
        )

        self._loop = asyncio.new_event_loop()
        self._embeddings = _ragas_embeddings(embedder)
        self._context_precision = NonLLMContextPrecisionWithReference()
        self._context_recall = NonLLMContextRecall()
        self._similarity = SemanticSimilarity(embeddings=self._embeddings)
        self._rouge = RougeScore(rouge_type="rougeL", mode="fmeasure")
        self._bleu = BleuScore()
        self._string = NonLLMStringSimilarity()
        self.judge = judge
        self._judge_metrics: dict[str, Any] = {}
        if judge is not None:
            import openai
            from ragas.llms import llm_factory

            client = openai.AsyncOpenAI(
                base_url=judge.base_url, api_key=judge.api_key, timeout=judge.timeout_s
            )
            llm = llm_factory(judge.model, client=client, max_tokens=judge.max_tokens)
            self._judge_metrics = {
                "ragas_faithfulness": Faithfulness(llm=llm),
                "ragas_response_relevancy": AnswerRelevancy(
                    llm=llm, embeddings=self._embeddings, strictness=1
                ),
                "ragas_llm_context_precision": ContextPrecisionWithReference(llm=llm),
                "ragas_factual_correctness": FactualCorrectness(llm=llm),
            }

    @property
    def metric_names(self) -> tuple[str, ...]:
        return NON_LLM_METRICS + (JUDGE_METRICS if self.judge else ())

    def score(
        self,
        question: str,
        response: str,
        contexts: list[str],
        reference_contexts: list[str],
        reference: str | None,
    ) -> RagasScores:
        """The scores the inputs allow: context metrics need gold passages, others a reference."""
        # One loop for the scorer's life: the judge's HTTP client stays bound to the loop it
        # first ran on, so a fresh asyncio.run per question would break its second request.
        return self._loop.run_until_complete(
            self._score(question, response, contexts, reference_contexts, reference)
        )

    async def _score(
        self,
        question: str,
        response: str,
        contexts: list[str],
        reference_contexts: list[str],
        reference: str | None,
    ) -> RagasScores:
        from ragas.dataset_schema import SingleTurnSample

        jobs: dict[str, Callable[[], Awaitable[Any]]] = {}
        if contexts and reference_contexts:
            sample = SingleTurnSample(
                retrieved_contexts=contexts, reference_contexts=reference_contexts
            )
            jobs["ragas_non_llm_context_precision"] = lambda: (
                self._context_precision.single_turn_ascore(sample)
            )
            jobs["ragas_non_llm_context_recall"] = lambda: self._context_recall.single_turn_ascore(
                sample
            )
        if reference and response:
            pair = {"reference": reference, "response": response}
            jobs["ragas_semantic_similarity"] = lambda: self._similarity.ascore(**pair)
            jobs["ragas_rouge_l"] = lambda: self._rouge.ascore(**pair)
            jobs["ragas_bleu"] = lambda: self._bleu.ascore(**pair)
            jobs["ragas_string_similarity"] = lambda: self._string.ascore(**pair)
        judged = self._judge_metrics
        if judged and response and contexts:
            jobs["ragas_faithfulness"] = lambda: judged["ragas_faithfulness"].ascore(
                user_input=question, response=response, retrieved_contexts=contexts
            )
            jobs["ragas_response_relevancy"] = lambda: judged["ragas_response_relevancy"].ascore(
                user_input=question, response=response
            )
        if judged and reference and contexts:
            jobs["ragas_llm_context_precision"] = lambda: judged[
                "ragas_llm_context_precision"
            ].ascore(user_input=question, reference=reference, retrieved_contexts=contexts)
        if judged and reference and response:
            jobs["ragas_factual_correctness"] = lambda: judged["ragas_factual_correctness"].ascore(
                response=response, reference=reference
            )
        scores = RagasScores(values=dict.fromkeys(self.metric_names))
        limit = self.judge.metric_timeout_s if self.judge else None
        for name, job in jobs.items():
            try:
                result = await asyncio.wait_for(job(), limit if name in JUDGE_METRICS else None)
            except TimeoutError:
                scores.errors[name] = f"timed out after {limit} s"
                continue
            except Exception as error:  # a failed judgement is data, not a crash
                scores.errors[name] = f"{type(error).__name__}: {error}"[:300]
                continue
            scores.values[name] = _score_value(result)
        return scores


def _score_value(result: Any) -> float | None:
    """A metric's number; None for NaN (ragas's way of saying it could not score)."""
    value = getattr(result, "value", result)
    return float(value) if isinstance(value, int | float) and value == value else None
