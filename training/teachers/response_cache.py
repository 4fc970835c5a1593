"""A resumable on-disk cache of HTTP teacher responses: one JSON file per request key, written atomically.

The key is the sha256 of the canonical JSON of ``(endpoint, request body)``; the body holds the model name,
the prompt and every sampling parameter, and never credentials. Files live at ``DIR/ab/abcdef....json``. A
file is written to a temporary name in the same directory, fsynced and renamed, so a crash leaves either the
whole response or nothing; an unreadable file counts as a miss and is fetched again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def request_key(endpoint: str, body: dict[str, Any]) -> str:
    """Hex sha256 of ``{"endpoint", "body"}`` as sorted, compact JSON."""
    payload = json.dumps({"endpoint": endpoint, "body": body}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ResponseCache:
    """``get(key)`` / ``put(key, response)`` over a directory of JSON files."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored response, or None when absent or unreadable (a corrupt file is logged and ignored)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            response = record["response"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            logger.warning("ignoring unreadable cached response %s (%s)", path, type(exc).__name__)
            return None
        return response if isinstance(response, dict) else None

    def put(self, key: str, endpoint: str, response: dict[str, Any]) -> Path:
        """Write atomically: temporary file in the same directory, fsync, rename."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:8]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"endpoint": endpoint, "response": response}, fh, separators=(",", ":"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*/*.json"))
