"""Wait until a starting backend answers its readiness probe, or fails trying."""

from __future__ import annotations

import asyncio
import time

import httpx
import psutil

from llamactl.backends import Backend, ReadinessProbe
from llamactl.instance.errors import StartFailed, StartTimedOut

FIRST_POLL_DELAY = 0.01
MAX_POLL_DELAY = 0.05
"""Polls stay tens of milliseconds apart: a tiny model is ready in well under a second."""
REQUEST_TIMEOUT = 5.0


async def wait_until_ready(
    probe: ReadinessProbe,
    base_url: str,
    exited: asyncio.Future[int],
    deadline: float,
    name: str,
    listener: int | None = None,
) -> None:
    """Poll fast, backing off, until the probe answers 200.

    Every wait races the process's exit, so a backend that dies while loading
    fails the start at once instead of at the deadline. ``listener``: the root
    of the backend's process tree, which must be what listens on the port when
    the probe passes. A backend that takes long to bind (vLLM: tens of
    seconds) leaves its port free meanwhile, and another program that takes it
    would otherwise answer the probe, and then this instance's requests.
    """
    port = httpx.URL(base_url).port
    delay = FIRST_POLL_DELAY
    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT) as client:
        while True:
            if exited.done():
                raise StartFailed(f"{name} exited with code {exited.result()} while starting")
            if await _probe_passes(client, probe):
                if listener is not None and port is not None and not listens(listener, port):
                    raise StartFailed(
                        f"port {port} of {name} answers, but from another program than {name}'s backend"
                    )
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StartTimedOut(f"{name} did not become ready in time")
            await asyncio.wait([exited], timeout=min(delay, remaining))
            delay = min(delay * 2, MAX_POLL_DELAY)


async def _probe_passes(client: httpx.AsyncClient, probe: ReadinessProbe) -> bool:
    try:
        response = await client.request(probe.method, probe.path, json=probe.json_body)
    except httpx.HTTPError:
        return False  # not listening yet, or reset while loading
    return response.status_code == 200


async def served_context(backend: Backend, base_url: str) -> int | None:
    """The context a ready backend runs with, from its own API; None when it does not say or fails."""
    if backend.context_probe is None:
        return None
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT) as client:
            response = await client.get(backend.context_probe)
        return backend.served_context(response.json()) if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def listens(root: int, port: int) -> bool:
    """Whether process ``root`` or one of its descendants listens on TCP ``port``."""
    try:
        processes = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    for process in processes:
        try:
            connections = process.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in connections):
            return True
    return False
