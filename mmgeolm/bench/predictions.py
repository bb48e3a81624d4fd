"""Model responses to score: ours (``{"id", "response"}`` per line) or the reference's (the item plus ``text``).

Accepted files: JSON lines, a JSON list, or a JSON object keyed by id (MathVista's output format, whose
values carry ``response``). A record's id is its ``id``, else the benchmark's own id key (We-Math:
``ID`` and ``key``); its response is ``response``, else ``text``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mmgeolm.bench.base import Benchmark
from mmgeolm_core.io import FormatError, iter_jsonl, read_records

RESPONSE_KEYS = ("response", "text")


def _keyed(records: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """A single JSON object whose values are all records (``{pid: {...}}``) becomes those records."""
    if len(records) == 1 and records[0][0] == "record 0":
        data = records[0][1]
        if isinstance(data, dict) and data and "response" not in data and "text" not in data \
                and all(isinstance(v, dict) for v in data.values()):
            return [(f"key {k!r}", {"id": str(k), **v} if "id" not in v else v) for k, v in data.items()]
    return records


def read_predictions(path: str | os.PathLike, bench: Benchmark, known_ids: set[str]) -> dict[str, str]:
    """``{item id: response}`` from a predictions file.

    Raises:
        FormatError: no prediction at all, a record without an id or a response string, a duplicate id, or an
            id that the question file does not have (naming file, line and key).
    """
    path = Path(path)
    out: dict[str, str] = {}
    first: dict[str, str] = {}
    if path.suffix == ".jsonl":
        records = [(f"line {n}", value) for n, value in iter_jsonl(path)]
    else:
        records = _keyed(read_records(path))
    for where, record in records:
        if not isinstance(record, dict):
            raise FormatError(path, f"expected a JSON object, got {type(record).__name__}", where=where)
        item_id = str(record["id"]) if record.get("id") is not None else bench.record_id(record)
        if item_id is None:
            raise FormatError(path, f"no id (expected 'id' or the benchmark's {bench.id_key!r})", where=where, key="id")
        key = next((k for k in RESPONSE_KEYS if k in record), None)
        if key is None:
            raise FormatError(path, "no response (expected 'response', or the reference's 'text')", where=where,
                              key="response")
        if not isinstance(record[key], str):
            raise FormatError(path, f"expected a string, got {type(record[key]).__name__}", where=where, key=key)
        if item_id not in known_ids:
            raise FormatError(path, f"prediction for unknown id {item_id!r} (not in the question file)", where=where,
                              key="id")
        if item_id in out:
            raise FormatError(path, f"second prediction for id {item_id!r} (first at {first[item_id]})", where=where,
                              key="id")
        out[item_id], first[item_id] = record[key], where
    if not out:
        raise FormatError(path, "no predictions (expected JSON lines of {\"id\", \"response\"})")
    return out
