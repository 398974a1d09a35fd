"""A smoke check: an instance's own command, started on another loopback port and asked one chat.

The steps of dlm's export smoke check (``src/dlm/export/smoke.py``), with the
gates measurements call for (shared/reference/serving-formats.md §8):

1. reserve a loopback port and launch exactly what a start of the instance
   runs (``launch_command``) there, under the watchdog like any backend;
2. wait for the backend's readiness probe (llama-server and vLLM: /health;
   mlx_lm.server: a first completion, since its /health is 200 before its
   model is loaded);
3. poll ``/v1/models`` until it lists the served model, found by its served
   name, never as the first entry: mlx_lm lists the hub cache's models first;
4. POST one chat naming that model and keep the first non-empty line of the answer.

An answer other than 200 while the process lives (an adapter mlx_lm cannot
load gives 503 or 404) fails the check, with the log's last lines. The run is
a process of its own on a port of its own, so the instance, running or not,
is untouched; and whatever ends it (the answer, a failure, its deadline, a
cancellation) stops its process group before the outcome goes into the
instance's history.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass
from typing import Any

import httpx

from llamactl.backends import Backend, ReadinessProbe, get_backend
from llamactl.errors import LlamactlError
from llamactl.instance.errors import InstanceConflict, NotStartable
from llamactl.instance.launch import LaunchCommand, launch_command
from llamactl.instance.log_file import InstanceLog
from llamactl.instance.manager import InstanceInfo, InstanceManager
from llamactl.instance.process import BackendProcess, start_ticks
from llamactl.instance.readiness import wait_until_ready
from llamactl.store import ProcessRecord, SmokeEntry, SmokeTimings, Store

LOOPBACK = "127.0.0.1"
DEFAULT_TIMEOUT = 300.0
"""Seconds a whole run may take, the model's load included."""
MAX_TIMEOUT = 3600.0
PROMPT = "Hello."
MAX_TOKENS = 64
"""Enough for a first line; a reasoning model may spend them all thinking, and its reasoning is the answer."""
LIST_POLL = 0.1
"""Seconds between two looks at ``/v1/models``, as dlm's."""
REQUEST_TIMEOUT = 5.0
LOG_TAIL_LINES = 20
MAX_TEXT_CHARS = 500
"""Characters kept of the first line, of a failing answer and of each log line: the history is bounded."""
LEDGER_SUFFIX = " (smoke)"
"""The run's name in the process ledger: no instance name holds a space, so none can clash with it."""


class _Failed(LlamactlError):
    """The check failed; the message says why."""


@dataclass
class _Progress:
    """How far a run came, for its timings and for what a timeout says."""

    spawned: float
    stage: str = "starting the backend"
    ready: float | None = None
    listed: float | None = None
    chat: float | None = None


class SmokeRunner:
    """The owner of smoke runs: one at a time per instance, each a task that outlives its caller."""

    def __init__(self, manager: InstanceManager, store: Store) -> None:
        self._manager = manager
        self._store = store
        self._runs: dict[str, asyncio.Task[SmokeEntry]] = {}
        self._ended = False

    async def run(self, name: str, timeout: float = DEFAULT_TIMEOUT) -> SmokeEntry:
        """Smoke-check ``name`` within ``timeout`` seconds; the entry returned is in its history too.

        A caller that goes away leaves the run to finish, so its outcome is still recorded.
        """
        info = self._manager.get(name)
        if self._ended:
            raise NotStartable("llamactl is shutting down")
        if name in self._runs:
            raise InstanceConflict(f"a smoke check of {name} is already running", field="name")
        task = asyncio.ensure_future(self._smoke(info, timeout))
        self._runs[name] = task
        task.add_done_callback(lambda _: self._runs.pop(name, None))
        return await asyncio.shield(task)

    def end_runs(self) -> None:
        """llamactl is stopping: each run under way stops its process group now, records that it was
        cancelled, and answers its caller so, rather than hold the shutdown for its whole grace."""
        self._ended = True
        for task in self._runs.values():
            task.cancel()

    async def close(self) -> None:
        """End the runs under way and wait until their processes are gone."""
        runs = list(self._runs.values())
        self.end_runs()
        for task in runs:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _smoke(self, info: InstanceInfo, timeout: float) -> SmokeEntry:
        settings = self._manager.settings
        backend = get_backend(info.options.backend_type)
        served = backend.served_model_name(info.options.backend_options)
        when, began = time.time(), time.monotonic()
        progress = _Progress(spawned=began)
        log = InstanceLog(
            settings.logs_dir / "smoke" / f"{info.name}.log", settings.log_max_bytes, settings.log_backups
        )
        process: BackendProcess | None = None
        first_line: str | None = None
        failure: str | None = None
        try:
            async with asyncio.timeout(timeout):
                port = _reserve_port()
                command = launch_command(
                    # Named apart from the instance: in Docker mode the name is the container's.
                    f"{info.name}-smoke",
                    info.options,
                    settings.backends[info.options.backend_type],
                    LOOPBACK,
                    port,
                )
                process = await _spawn(command, log, settings.stop_grace)
                progress.spawned = time.monotonic()
                self._remember(info.name, process)
                base_url = f"http://{LOOPBACK}:{port}"
                first_line = await _check(process, backend, served, base_url, progress, began + timeout)
        except LlamactlError as error:
            failure = error.message
        except TimeoutError:  # before OSError, of which it is one
            failure = f"not done within {timeout:g} s: stopped while {progress.stage}"
        except OSError as error:
            failure = f"cannot start: {error}"
        except asyncio.CancelledError:
            # Only ``end_runs`` cancels the run (its deadline is a TimeoutError by now), and the
            # entry recorded below is the answer then.
            failure = f"cancelled while {progress.stage}: llamactl is stopping"
        finally:
            if process is not None:
                await asyncio.shield(process.stop(settings.stop_grace))
                self._store.forget_process(info.name + LEDGER_SUFFIX)
            ok = first_line is not None
            tail = [] if ok else [line[:MAX_TEXT_CHARS] for line in log.tail(LOG_TAIL_LINES)]
            log.close()
            entry = self._store.add_history(
                info.id,
                SmokeEntry(
                    time=when,
                    ok=ok,
                    model=served,
                    first_line=first_line,
                    timings=SmokeTimings(
                        ready_seconds=progress.ready,
                        listed_seconds=progress.listed,
                        chat_seconds=progress.chat,
                        total_seconds=time.monotonic() - began,
                    ),
                    reason=failure,  # on a failure, None only when llamactl broke: its own log says how
                    log_tail=tail,
                ),
            )
        return entry

    def _remember(self, name: str, process: BackendProcess) -> None:
        """In the ledger: a llamactl killed before it could stop the run kills it at its next start."""
        ticks = start_ticks(process.pid)
        if ticks is not None:
            self._store.record_process(ProcessRecord(name + LEDGER_SUFFIX, process.pid, ticks))


async def _spawn(command: LaunchCommand, log: InstanceLog, stop_grace: float) -> BackendProcess:
    """Spawn whole even when cancelled meanwhile, then stop: cut short, a spawn leaves no watchdog."""
    spawning = asyncio.ensure_future(BackendProcess.spawn(command, log, stop_grace))
    try:
        return await asyncio.shield(spawning)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await (await spawning).stop(stop_grace)
        raise


async def _check(
    process: BackendProcess,
    backend: Backend,
    served: str | None,
    base_url: str,
    progress: _Progress,
    deadline: float,
) -> str:
    """Steps 2 to 4; the first non-empty line of the answer."""
    progress.stage = "waiting for the readiness probe"
    listener = process.pid if process.native else None
    await wait_until_ready(
        backend.readiness_probe, base_url, process.exited, deadline, "the smoke run", listener
    )
    progress.ready = time.monotonic() - progress.spawned
    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT) as client:
        await _until_listed(client, served, _answered_for(backend.readiness_probe, served), process, progress)
        progress.listed = time.monotonic() - progress.spawned
        progress.stage = "waiting for the chat's answer"
        asked = time.monotonic()
        text = await _chat(client, served, process)
        progress.chat = time.monotonic() - asked
    line = first_line(text)
    if line is None:
        raise _Failed("the chat's answer holds no text")
    return line[:MAX_TEXT_CHARS]


def _answered_for(probe: ReadinessProbe, served: str | None) -> bool:
    """Whether the readiness probe that passed asked for the served model itself."""
    return served is not None and probe.json_body is not None and probe.json_body.get("model") == served


async def _until_listed(
    client: httpx.AsyncClient,
    served: str | None,
    answered: bool,
    process: BackendProcess,
    progress: _Progress,
) -> None:
    """Poll ``/v1/models`` until it lists ``served`` (any model, when the backend takes any name).

    A backend whose readiness probe named the served model has answered for it
    already and need only answer the listing: mlx_lm.server serves its model as
    ``default_model`` and lists it by its path.
    """
    progress.stage = f"waiting for /v1/models to list {served}"
    while True:
        if process.exited.done():
            raise _Failed(f"exited with code {process.exited.result()} before /v1/models listed {served}")
        listed = await _listed_models(client)
        if listed is not None:
            if served is None or served in listed or answered:
                return
            progress.stage = (
                f"waiting for /v1/models to list {served} (it lists {', '.join(listed) or 'none'})"
            )
        await asyncio.wait([process.exited], timeout=LIST_POLL)


async def _listed_models(client: httpx.AsyncClient) -> list[str] | None:
    """The ids ``/v1/models`` lists; None while it does not answer 200 with a list."""
    try:
        response = await client.get("/v1/models")
        document = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    models = document.get("data") if isinstance(document, dict) else None
    if not isinstance(models, list):
        return None
    return [
        str(model["id"])[:MAX_TEXT_CHARS] for model in models if isinstance(model, dict) and "id" in model
    ]


async def _chat(client: httpx.AsyncClient, served: str | None, process: BackendProcess) -> str:
    """The text of the answer to one chat, raced with the process's exit."""
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": False,
    }
    if served is not None:
        body["model"] = served
    # No timeout of its own: a first answer may take long on a CPU, and the run's deadline bounds it.
    request = asyncio.ensure_future(client.post("/v1/chat/completions", json=body, timeout=None))
    try:
        racing: list[asyncio.Future[Any]] = [request, process.exited]
        await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        request.cancel()
        raise
    if not request.done():
        request.cancel()
        raise _Failed(f"exited with code {process.exited.result()} before the chat was answered")
    try:
        response = request.result()
    except httpx.HTTPError as error:
        raise _Failed(f"the chat failed: {error!r}") from None
    if response.status_code != 200:
        raise _Failed(f"the chat answered {response.status_code}: {response.text[:MAX_TEXT_CHARS]}")
    try:
        message = response.json()["choices"][0]["message"]
        return str(message.get("content") or message.get("reasoning_content") or "")
    except (ValueError, LookupError, TypeError, AttributeError):
        raise _Failed(
            f"the chat's answer is not a chat completion: {response.text[:MAX_TEXT_CHARS]}"
        ) from None


def first_line(text: str) -> str | None:
    """The first line of ``text`` with more than white space, stripped."""
    return next((line.strip() for line in text.splitlines() if line.strip()), None)


def _reserve_port() -> int:
    """A free loopback port, as dlm takes one: from the OS, outside ``instances.port_range``, so no
    instance's start is refused for it. It is free again once this returns; another program that
    takes it meanwhile is caught by the readiness check, which asks who listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port
