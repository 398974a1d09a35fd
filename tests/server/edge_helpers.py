"""Helpers for the HTTP-edge tests: raw bytes on a socket, and what the stand-in backend received."""

from __future__ import annotations

import ast
import json
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.instance.helpers import STANDIN
from tests.serve_process import MANAGEMENT_KEY, Serve

KEY_HEADER = f"Authorization: Bearer {MANAGEMENT_KEY}\r\n".encode()
EDGE_BACKENDS = f"""
backends:
  llama-cpp: {{command: {sys.executable}, args: [{STANDIN}]}}
  mlx: {{command: {sys.executable}, args: [{STANDIN}]}}
  vllm: {{command: {sys.executable}, args: [{STANDIN}]}}
instances: {{port_range: [18500, 18599]}}
"""
"""The stand-in as every backend."""
# What llamactl itself asks a backend: its readiness probes, and once ready its context
# (llama-server's /props, vLLM's /v1/models).
READINESS_PROBES = {
    b"GET /health HTTP/1.1",
    b"POST /v1/completions HTTP/1.1",
    b"GET /props HTTP/1.1",
    b"GET /v1/models HTTP/1.1",
}


class RawAnswer:
    def __init__(self, status: int, head: bytes, body: bytes) -> None:
        self.status = status
        self.head = head
        self.body = body


def raw_request(base_url: str, request: bytes, body: bytes = b"", timeout: float = 15) -> RawAnswer:
    """Send ``request`` (a request line and headers, without the final blank line) exactly as given.

    Adds ``Host`` and ``Connection: close``, reads the answer to the end and
    skips interim (1xx) answers.
    """
    address = urlsplit(base_url)
    assert address.hostname is not None and address.port is not None
    with socket.create_connection((address.hostname, address.port), timeout=timeout) as connection:
        connection.sendall(request + f"Host: {address.netloc}\r\nConnection: close\r\n\r\n".encode() + body)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    while True:
        head, _, rest = received.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status >= 200:
            return RawAnswer(status, head, rest)
        received = rest


def recorded(requests: Path, probes: bool = False) -> list[bytes]:
    """The request lines the stand-in read (STANDIN_REQUESTS), llamactl's own probes left out."""
    if not requests.exists():
        return []
    lines = [ast.literal_eval(line) for line in requests.read_text().splitlines()]
    return [line for line in lines if probes or line not in READINESS_PROBES]


def instance_body(serve: Serve, requests: Path, backend: str = "llama_cpp", **options: Any) -> dict[str, Any]:
    backend_options = {
        "llama_cpp": {"model": "/m/tiny.gguf", "alias": "tiny"},
        "mlx_lm": {"model": "/m/mlx"},
        "vllm": {"model": "org/base"},
    }[backend]
    backend_options = {**backend_options, **options.pop("backend_options", {})}
    return {
        "backend_type": backend,
        "backend_options": backend_options,
        "environment": {"STANDIN_PIDS": str(serve.pids), "STANDIN_REQUESTS": str(requests)},
        **options,
    }


def create(
    serve: Serve, name: str, requests: Path, start: bool = True, backend: str = "llama_cpp", **options: Any
) -> None:
    created = serve.client.post(
        f"/api/v1/instances/{name}", json=instance_body(serve, requests, backend, **options)
    )
    assert created.status_code == 201, created.text
    if start:
        started = serve.client.post(f"/api/v1/instances/{name}/start")
        assert started.status_code == 200, started.text


def error_message(body: bytes) -> str:
    """The message of an error in either family's shape."""
    error = json.loads(body)["error"]
    return str(error["message"]) if isinstance(error, dict) else str(json.loads(body)["details"])


def error_code(response: httpx.Response) -> str:
    error = response.json()["error"]
    return str(error["code"] if isinstance(error, dict) else error)
