"""A small synchronous client of the command and query REST APIs.

It knows the public routes and the problem documents (RFC 9457) they answer
with, nothing internal: what it can do, any HTTP client can do.
"""

from __future__ import annotations

import mimetypes
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

CHUNK = 64 * 1024


class ApiError(Exception):
    """A problem document (or another error answer) from a Nova API."""

    def __init__(self, status: int, title: str, detail: str, body: Any) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.body = body


@dataclass(frozen=True)
class Endpoints:
    command_url: str
    query_url: str
    token: str


class ProgressReader:
    """A file that reports how many bytes were read, for an upload bar."""

    def __init__(self, file: IO[bytes], on_read: Callable[[int], None]) -> None:
        self._file = file
        self._on_read = on_read

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        self._on_read(len(chunk))
        return chunk

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(CHUNK):
            yield chunk


class NovaClient:
    def __init__(self, endpoints: Endpoints, timeout_s: float = 60.0) -> None:
        self._endpoints = endpoints
        self._http = httpx.Client(
            timeout=timeout_s,
            headers={"Authorization": f"Bearer {endpoints.token}"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> NovaClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- commands ---------------------------------------------------------

    def upload(
        self,
        path: Path,
        *,
        title: str | None = None,
        language: str | None = None,
        on_read: Callable[[int], None] = lambda _: None,
    ) -> dict[str, Any]:
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        data = {k: v for k, v in {"title": title, "language": language}.items() if v}
        with path.open("rb") as file:
            reader = ProgressReader(file, on_read)
            response = self._http.post(
                f"{self._endpoints.command_url}/commands/audio",
                files={"file": (path.name, reader, content_type)},  # type: ignore[dict-item]
                data=data,
            )
        return _json(response)

    def transcribe(
        self, audio_id: str, *, language: str | None = None, version: int | None = None
    ) -> dict[str, Any]:
        headers = {"If-Match": f'"{version}"'} if version is not None else {}
        body = {"language": language} if language else {}
        response = self._http.post(
            f"{self._endpoints.command_url}/commands/audio/{audio_id}/transcribe",
            json=body,
            headers=headers,
        )
        return _json(response)

    # --- queries ----------------------------------------------------------

    def get(self, audio_id: str, *, min_version: int | None = None) -> dict[str, Any]:
        params = {"min_version": min_version} if min_version else {}
        response = self._http.get(
            f"{self._endpoints.query_url}/queries/audio/{audio_id}", params=params
        )
        return _json(response)

    def list(self, *, limit: int = 20, cursor: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        response = self._http.get(
            f"{self._endpoints.query_url}/queries/audio", params=params
        )
        return _json(response)

    def search(
        self, query: str, *, limit: int = 10, cursor: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"q": query, "limit": limit}
        if cursor:
            params["cursor"] = cursor
        response = self._http.get(
            f"{self._endpoints.query_url}/queries/search", params=params
        )
        return _json(response)

    def history(self, audio_id: str) -> dict[str, Any]:
        response = self._http.get(
            f"{self._endpoints.query_url}/queries/audio/{audio_id}/history"
        )
        return _json(response)

    def wait(
        self,
        audio_id: str,
        min_version: int,
        *,
        timeout_s: float = 600.0,
        interval_s: float = 0.5,
        on_progress: Callable[[dict[str, Any]], None] = lambda _: None,
    ) -> dict[str, Any]:
        """Poll the audio until its transcription ended (completed or failed)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                audio = self.get(audio_id, min_version=min_version)
            except ApiError as exc:
                if exc.status != 503:  # 503: the projection is not there yet
                    raise
            else:
                on_progress(audio)
                if audio["status"] in ("completed", "failed"):
                    return audio
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"audio {audio_id} did not finish within {timeout_s:g} s; "
                    f"look again later with `nova get {audio_id}`"
                )
            time.sleep(interval_s)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success and isinstance(body, dict):
        return body
    if isinstance(body, dict):
        raise ApiError(
            response.status_code,
            str(body.get("title", response.reason_phrase)),
            str(body.get("detail", "")),
            body,
        )
    raise ApiError(
        response.status_code, response.reason_phrase, response.text[:500], None
    )
