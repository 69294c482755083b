"""JSON answers: the ``json:`` prefix adapters look for, and the ``text.format`` a JSON turn asks the model for.

A pure helper adapters may import. With ``THREADLINE_JSON_SCHEMA_FILE`` the answer follows that schema (Structured
Outputs, strict); otherwise it is any JSON object (JSON mode).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bot.errors import StartupError

TEXT = "text"
JSON = "json"
JSON_INSTRUCTION = "Answer with JSON only: one JSON object, no prose and no code fences."
_PREFIX = re.compile(r"^\s*json:\s*", re.IGNORECASE)


def split_answer_format(text: str) -> tuple[str, str]:
    """("json", the rest) for a message that starts with ``json:``; ("text", the message) otherwise."""
    match = _PREFIX.match(text)
    return (JSON, text[match.end() :]) if match else (TEXT, text)


def json_text_format(schema_file: Path | None) -> dict[str, Any]:
    """The ``text.format`` of a JSON answer; a schema file that is missing or not a JSON object is a start-up
    error naming it."""
    if schema_file is None:
        return {"type": "json_object"}
    try:
        schema = json.loads(schema_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StartupError(f"THREADLINE_JSON_SCHEMA_FILE {schema_file}: {exc}") from exc
    if not isinstance(schema, dict):
        raise StartupError(f"THREADLINE_JSON_SCHEMA_FILE {schema_file}: the schema must be a JSON object")
    name = re.sub(r"[^A-Za-z0-9_-]", "_", schema_file.stem)[:64] or "answer"
    return {"type": "json_schema", "name": name, "schema": schema, "strict": True}
