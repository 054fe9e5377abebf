"""Client for OpenAI-compatible chat-completions servers (vLLM, SGLang, TGI, ...).

One job = one chat request whose answer is turned into a value by a ``parse`` function. Jobs run
on asyncio with a semaphore (``concurrency`` requests in flight at most), per-request timeouts,
and retries with exponential backoff and jitter on anything transient: timeouts, connection
errors, HTTP 408/409/429/5xx, a body that is not JSON, a reply without ``choices[0].message
.content``, and a reply ``parse`` rejects (the model may answer better next time). Other HTTP 4xx
errors are not retried. A job that still fails is returned with ``error`` set, never raised, so the
caller can quarantine it with the reason; no job is ever dropped.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import random
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import certifi
import httpx
from PIL import Image

from fgclip_core.annotate.config import EndpointConfig

T = TypeVar("T")
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class EndpointError(RuntimeError):
    def __init__(self, reason: str, retryable: bool):
        super().__init__(reason)
        self.reason, self.retryable = reason, retryable


@dataclass
class ChatJob(Generic[T]):
    messages: list[dict[str, Any]] | Callable[[], list[dict[str, Any]]]  # a callable is built lazily (in a thread)
    parse: Callable[[str], T]
    max_tokens: int | None = None


@dataclass
class JobResult(Generic[T]):
    value: T | None
    error: str | None
    attempts: int


def image_data_url(image: Image.Image, max_side: int, quality: int = 90) -> str:
    """JPEG-encode ``image`` (downscaled so its longer side is <= max_side) as a base64 data URL."""
    img = image.convert("RGB")
    if max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def user_message(text: str, image_urls: Sequence[str] = ()) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": u}} for u in image_urls]
    content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}]


def _content(body: Any) -> str:
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as e:
        raise EndpointError(f"malformed response: no choices[0].message.content ({type(e).__name__})", True) from e
    if isinstance(content, list):  # some servers answer with content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str) or not content.strip():
        raise EndpointError("malformed response: empty message content", True)
    return content


class OpenAICompatClient:
    def __init__(self, cfg: EndpointConfig, *, rng: random.Random | None = None):
        self.cfg = cfg
        self._rng = rng or random.Random()
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self._ssl: ssl.SSLContext | None = None  # built once: about 40 ms each time otherwise

    def provenance(self, prompt_version: str) -> dict[str, Any]:
        return {"backend": "openai", "model": self.cfg.model, "prompt_version": prompt_version,
                "endpoint": self.cfg.base_url}

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.cfg.api_key_env) if self.cfg.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def backoff_s(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based): exponential, capped, with equal jitter."""
        d = min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * (2 ** (attempt - 1)))
        return d / 2 + self._rng.uniform(0, d / 2)

    async def _once(self, client: httpx.AsyncClient, payload: dict[str, Any]) -> str:
        try:
            resp = await client.post(self.url, json=payload)
        except httpx.TimeoutException as e:
            raise EndpointError(f"timeout after {self.cfg.timeout_s}s ({type(e).__name__})", True) from e
        except httpx.TransportError as e:
            raise EndpointError(f"connection error: {type(e).__name__}: {e}", True) from e
        if resp.status_code != 200:
            snippet = resp.text[:200].replace("\n", " ")
            raise EndpointError(f"HTTP {resp.status_code}: {snippet}", resp.status_code in RETRYABLE_STATUS)
        try:
            body = resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EndpointError(f"malformed JSON response: {e}", True) from e
        return _content(body)

    async def _job(self, client: httpx.AsyncClient, sem: asyncio.Semaphore, job: ChatJob[T]) -> JobResult[T]:
        attempts, last = 0, "not attempted"
        try:  # built (images encoded) outside the semaphore, so that a slot only waits on the server
            messages = job.messages if isinstance(job.messages, list) else await asyncio.to_thread(job.messages)
        except Exception as e:  # an unreadable image must not take the batch down
            return JobResult(None, f"request could not be built: {type(e).__name__}: {e}", 0)
        async with sem:
            payload = {"model": self.cfg.model, "messages": messages,
                       "max_tokens": job.max_tokens or self.cfg.max_tokens, "temperature": self.cfg.temperature}
            for attempt in range(1, self.cfg.max_retries + 2):
                attempts = attempt
                try:
                    text = await self._once(client, payload)
                    try:
                        return JobResult(job.parse(text), None, attempts)
                    except ValueError as e:
                        raise EndpointError(f"unusable answer: {e}", True) from e
                except EndpointError as e:
                    last = e.reason
                    if not e.retryable or attempt > self.cfg.max_retries:
                        break
                    await asyncio.sleep(self.backoff_s(attempt))
        return JobResult(None, f"{last} (after {attempts} attempt{'s' if attempts != 1 else ''})", attempts)

    async def arun(self, jobs: Sequence[ChatJob[T]], on_done: Callable[[JobResult[T]], None] | None = None
                   ) -> list[JobResult[T]]:
        sem = asyncio.Semaphore(self.cfg.concurrency)
        timeout = httpx.Timeout(self.cfg.timeout_s, connect=self.cfg.connect_timeout_s)
        limits = httpx.Limits(max_connections=self.cfg.concurrency, max_keepalive_connections=self.cfg.concurrency)
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=certifi.where())
        async with httpx.AsyncClient(timeout=timeout, limits=limits, headers=self._headers(), verify=self._ssl) as client:
            async def run_one(job: ChatJob[T]) -> JobResult[T]:
                res = await self._job(client, sem, job)
                if on_done is not None:
                    on_done(res)
                return res

            return list(await asyncio.gather(*(run_one(j) for j in jobs)))

    def run(self, jobs: Sequence[ChatJob[T]], on_done: Callable[[JobResult[T]], None] | None = None
            ) -> list[JobResult[T]]:
        """Run jobs to completion (results in job order). Must not be called from a running event loop."""
        if not jobs:
            return []
        return asyncio.run(self.arun(jobs, on_done))
