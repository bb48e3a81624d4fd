"""An optional LLM judge through any OpenAI-compatible endpoint, asked only where the rules abstain.

``mmgeolm-bench score ... --judge-url http://127.0.0.1:8000/v1 --judge-model NAME`` (a local vLLM or
similar). Every request is greedy (temperature 0, seed 0) and its reply is cached by the sha256 of
(model, prompt) in ``judge_cache.jsonl`` beside the results, so a re-score asks nothing again and gives
the same numbers. No judge is used unless asked for; the results say which items it decided.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from mmgeolm_core.errors import InputError, JobError
from mmgeolm_core.io import append_jsonl, iter_jsonl

logger = logging.getLogger(__name__)

CACHE_FILE = "judge_cache.jsonl"
SYSTEM = ("You extract the final answer from a model's response to an exam question. Reply with the answer "
          "only, exactly as asked, or with NONE when the response states no answer.")


def chat_url(url: str) -> str:
    """The chat-completions address of an OpenAI-compatible base URL (``.../v1`` or the full path)."""
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise InputError(f"--judge-url {url!r}: expected an http(s) URL such as http://127.0.0.1:8000/v1")
    return url if url.endswith("/chat/completions") else f"{url}/chat/completions"


@dataclass
class Judge:
    """A cached, deterministic client.

    Args:
        url: the endpoint's base URL (``http://host:port/v1``) or its ``/chat/completions`` address.
        model: the model name the endpoint serves.
        cache: the cache file (JSON lines of ``{"key", "model", "reply"}``); None keeps it in memory.
        timeout: seconds per request.
        max_tokens: reply length limit (answers are short).
    """

    url: str
    model: str
    cache: Path | None = None
    timeout: float = 120.0
    max_tokens: int = 64
    calls: int = 0
    cached: int = 0
    _memo: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.endpoint = chat_url(self.url)
        if not self.model:
            raise InputError("--judge-model: expected the name of the model the judge endpoint serves")
        if self.cache is not None and Path(self.cache).is_file():
            for _, entry in iter_jsonl(self.cache):
                if isinstance(entry, dict) and isinstance(entry.get("reply"), str):
                    self._memo[entry["key"]] = entry["reply"]

    def key(self, prompt: str) -> str:
        return hashlib.sha256(json.dumps([self.model, SYSTEM, prompt]).encode("utf-8")).hexdigest()

    def ask(self, prompt: str) -> str:
        """The judge's reply to ``prompt`` (from the cache when asked before).

        Raises:
            JobError: the endpoint cannot be reached or answers something that is not a chat completion.
        """
        key = self.key(prompt)
        if key in self._memo:
            self.cached += 1
            return self._memo[key]
        body = {"model": self.model, "temperature": 0, "seed": 0, "max_tokens": self.max_tokens,
                "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]}
        headers = {"Content-Type": "application/json"}
        if os.environ.get("OPENAI_API_KEY"):
            headers["Authorization"] = f"Bearer {os.environ['OPENAI_API_KEY']}"
        request = urllib.request.Request(self.endpoint, data=json.dumps(body).encode("utf-8"), headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                data = json.loads(response.read().decode("utf-8"))
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
            raise JobError(f"judge at {self.endpoint}: {exc}") from None
        try:
            reply = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise JobError(f"judge at {self.endpoint}: not a chat completion: {json.dumps(data)[:200]}") from None
        self.calls += 1
        self._memo[key] = reply
        if self.cache is not None:
            append_jsonl(self.cache, {"key": key, "model": self.model, "reply": reply})
        return reply

    def stats(self) -> dict[str, object]:
        return {"url": self.endpoint, "model": self.model, "requests": self.calls, "cache_hits": self.cached}
