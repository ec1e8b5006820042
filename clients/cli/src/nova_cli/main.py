"""`nova`: the command line of Nova, over its public REST APIs only.

Endpoints and the token come from options or the environment:
`NOVA_COMMAND_URL` (default http://127.0.0.1:8001), `NOVA_QUERY_URL`
(default http://127.0.0.1:8002) and `NOVA_TOKEN` (`nova token` makes a
development one).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import jwt
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Column, Table

from .api import ApiError, Endpoints, NovaClient

DEV_SECRET = "nova-development-secret-not-for-production"  # noqa: S105 - make run's
DEFAULT_USER = "00000000-0000-4000-8000-000000000001"

app = typer.Typer(
    name="nova",
    help="Upload audio, transcribe it, read and search transcripts.",
    no_args_is_help=True,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)


class State:
    endpoints: Endpoints | None = None
    as_json: bool = False


state = State()


@app.callback()
def options(
    command_url: Annotated[
        str, typer.Option(envvar="NOVA_COMMAND_URL", help="command API base URL")
    ] = "http://127.0.0.1:8001",
    query_url: Annotated[
        str, typer.Option(envvar="NOVA_QUERY_URL", help="query API base URL")
    ] = "http://127.0.0.1:8002",
    token: Annotated[
        str, typer.Option(envvar="NOVA_TOKEN", help="bearer token (`nova token`)")
    ] = "",
    as_json: Annotated[
        bool, typer.Option("--json", help="print the API's JSON answers as they are")
    ] = False,
) -> None:
    state.endpoints = Endpoints(command_url.rstrip("/"), query_url.rstrip("/"), token)
    state.as_json = as_json


def client() -> NovaClient:
    endpoints = state.endpoints
    if endpoints is None or not endpoints.token:
        err.print(
            "[red]no token[/]: set NOVA_TOKEN or pass --token "
            "(for development: export NOVA_TOKEN=$(nova token))"
        )
        raise typer.Exit(2)
    return NovaClient(endpoints)


def fail(exc: Exception) -> typer.Exit:
    if isinstance(exc, ApiError):
        err.print(f"[red]{exc.status} {escape(exc.title)}[/]: {escape(exc.detail)}")
    else:
        err.print(f"[red]error[/]: {escape(str(exc))}")
    return typer.Exit(1)


def show(body: dict[str, Any]) -> None:
    out.print_json(json.dumps(body))


@app.command()
def upload(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    title: Annotated[str | None, typer.Option(help="a title")] = None,
    language: Annotated[
        str | None, typer.Option(help="ja-JP, en-US, ... or auto")
    ] = None,
    transcribe: Annotated[
        bool, typer.Option("--transcribe", help="start transcribing it")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="with --transcribe: wait for the transcript")
    ] = False,
    timeout: Annotated[float, typer.Option(help="seconds --wait waits")] = 600.0,
) -> None:
    """Upload an audio file (WAV, MP3, Ogg, FLAC, M4A)."""
    if wait and not transcribe:
        err.print("[red]--wait needs --transcribe[/]")
        raise typer.Exit(2)
    with client() as nova:
        try:
            created = _upload(nova, file, title, language)
            if not transcribe:
                _done(created, "uploaded")
                return
            started = nova.transcribe(
                created["audio_id"], language=language, version=created["version"]
            )
            if not wait:
                _done(started, "transcribing")
                return
            audio = _wait(nova, started["audio_id"], started["version"], timeout)
        except (ApiError, TimeoutError, OSError) as exc:
            raise fail(exc) from None
    if state.as_json:
        show(audio)
    else:
        _print_audio(audio)
    if audio["status"] == "failed":
        raise typer.Exit(1)


def _upload(
    nova: NovaClient, file: Path, title: str | None, language: str | None
) -> dict[str, Any]:
    with Progress(
        TextColumn("uploading [bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(file.name, total=file.stat().st_size)
        return nova.upload(
            file,
            title=title,
            language=language,
            on_read=lambda n: bar.advance(task, n),
        )


def _wait(
    nova: NovaClient, audio_id: str, version: int, timeout: float
) -> dict[str, Any]:
    with Progress(
        TextColumn("transcribing"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[status]}"),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("", total=1.0, status="queued")

        def report(audio: dict[str, Any]) -> None:
            progress = audio.get("progress") or {}
            fraction = progress.get("fraction")
            if audio["status"] in ("completed", "failed"):
                fraction = 1.0
            bar.update(
                task,
                completed=fraction if fraction is not None else 0.0,
                status=audio["status"],
            )

        return nova.wait(audio_id, version, timeout_s=timeout, on_progress=report)


def _done(answer: dict[str, Any], what: str) -> None:
    if state.as_json:
        show(answer)
    else:
        out.print(f"{what}: {answer['audio_id']} (version {answer['version']})")


@app.command()
def get(audio_id: str) -> None:
    """One audio: its state and, when done, its transcript."""
    with client() as nova:
        try:
            audio = nova.get(audio_id)
        except ApiError as exc:
            raise fail(exc) from None
    if state.as_json:
        show(audio)
    else:
        _print_audio(audio)


def _print_audio(audio: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    for key in ("audio_id", "title", "status", "language", "confidence", "version"):
        if audio.get(key) is not None:
            table.add_row(key, escape(str(audio[key])))
    if audio.get("failure_reason"):
        table.add_row("failure", escape(str(audio["failure_reason"])))
    out.print(table)
    if audio.get("transcription"):
        out.print(escape(audio["transcription"]))


@app.command("list")
def list_audio(
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of a page")] = None,
) -> None:
    """Your audio files, newest first."""
    with client() as nova:
        try:
            page = nova.list(limit=limit, cursor=cursor)
        except ApiError as exc:
            raise fail(exc) from None
    if state.as_json:
        show(page)
        return
    table = Table("title", "status", "created_at")
    table.columns.insert(0, _id_column())
    for item in page["items"]:
        table.add_row(
            item["audio_id"],
            escape(item.get("title") or ""),
            item["status"],
            str(item.get("created_at", "")),
        )
    out.print(table)
    if page.get("next_cursor"):
        out.print(f"more: nova list --cursor {page['next_cursor']}")


def _id_column() -> Column:
    """Ids are copied into other commands: never cut them short."""
    return Column("audio_id", no_wrap=True, min_width=36)


@app.command()
def search(
    query: str,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 10,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of a page")] = None,
) -> None:
    """Full-text search in your transcripts."""
    with client() as nova:
        try:
            page = nova.search(query, limit=limit, cursor=cursor)
        except ApiError as exc:
            raise fail(exc) from None
    if state.as_json:
        show(page)
        return
    table = Table("score", "title", "highlights")
    table.columns.insert(0, _id_column())
    for hit in page["hits"]:
        snippets = " … ".join(hit.get("highlights") or [])
        snippets = snippets.replace("<em>", "[bold]").replace("</em>", "[/bold]")
        table.add_row(
            hit["audio_id"],
            f"{hit.get('score', 0):.2f}",
            escape(hit.get("title") or ""),
            snippets,
        )
    out.print(table)
    out.print(f"{page.get('total', len(page['hits']))} match(es)")


@app.command()
def history(audio_id: str) -> None:
    """The events of one audio, oldest first."""
    with client() as nova:
        try:
            events = nova.history(audio_id)
        except ApiError as exc:
            raise fail(exc) from None
    if state.as_json:
        show(events)
        return
    table = Table("version", "event_type", "occurred_at")
    for event in events["events"]:
        table.add_row(str(event["version"]), event["event_type"], event["occurred_at"])
    out.print(table)


@app.command()
def token(
    user: Annotated[str, typer.Option(help="user id (a UUID)")] = DEFAULT_USER,
    scopes: Annotated[str, typer.Option()] = "audio:read audio:write",
    secret: Annotated[
        str, typer.Option(envvar="NOVA_JWT_SECRET", help="the services' HS256 secret")
    ] = DEV_SECRET,
    ttl: Annotated[int, typer.Option(help="seconds until it expires")] = 3600,
) -> None:
    """A development token (HS256 with the secret `make run` uses)."""
    try:
        uuid.UUID(user)
    except ValueError:
        err.print("[red]--user must be a UUID[/]")
        raise typer.Exit(2) from None
    now = int(time.time())
    claims = {"sub": user, "scope": scopes, "iat": now, "exp": now + ttl}
    out.print(jwt.encode(claims, secret, algorithm="HS256"), soft_wrap=True)
