"""Malformed requests, drawn at random, against a real `llamactl serve` and the stand-in backend.

Methods, paths with any byte percent-encoded (and some raw), queries, header
sizes, bodies and JSON shapes, ``Expect``, ``HEAD``, ``Origin`` values and keys
in every wrong place. Whatever comes:

- no answer is a 5xx other than the documented 502, 503 and 504;
- the backend receives no request the client did not send: each request line
  it reads is one a keyed request of this run asked for, byte for byte;
- the server keeps answering.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serve_process import MANAGEMENT_KEY, Serve, serve_process
from tests.server.edge_helpers import EDGE_BACKENDS, create, recorded

DOCUMENTED_5XX = {502, 503, 504}
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND", "CONNECT"]
PREFIXES = [
    "/v1/chat/completions",
    "/v1/",
    "/v1/models",
    "/llama-cpp/alpha/",
    "/llama-cpp/gamma/",
    "/llama-cpp/nope/",
    "/api/v1/instances/alpha/proxy/",
    "/api/v1/instances/gamma/proxy/",
    "/api/v1/instances/alpha",
    "/api/v1/instances/alpha/logs",
    "/api/v1/instances/",
    "/api/v1/auth/keys/",
    "/api/v1/backends/llama-cpp/parse-command",
    "/api/v1/openapi.json",
    "/",
]
# The proxied routes, as raw paths: the instance's (still encoded) name and the upstream target.
FORWARDING = [
    re.compile(r"(?P<name>)(?P<target>/v1/.*)", re.DOTALL),
    re.compile(r"/llama-cpp/(?P<name>[^/]+)(?P<target>/.*)", re.DOTALL),
    re.compile(r"/api/v1/instances/(?P<name>[^/]+)/proxy(?P<target>/.*)", re.DOTALL),
]
VALID_KEYS = [f"Authorization: Bearer {MANAGEMENT_KEY}", f"X-API-Key: {MANAGEMENT_KEY}"]
WRONG_KEYS = [
    "",
    f"Authorization: {MANAGEMENT_KEY}",
    f"Authorization: Basic {MANAGEMENT_KEY}",
    f"X-API-Key: Bearer {MANAGEMENT_KEY}",
    f"Cookie: api_key={MANAGEMENT_KEY}",
    f"Authorization: Bearer {MANAGEMENT_KEY}x",
    "Authorization: Bearer " + "k" * 5000,
]

segment_bytes = st.one_of(
    st.integers(0, 255).map(lambda byte: f"%{byte:02x}"),
    st.integers(0, 255).map(lambda byte: f"%{byte:02X}"),
    st.sampled_from(list("abcXYZ019-._~!$&'()*+,;=:@/")),
    st.sampled_from(["..", ".", "%2e%2e", "//", "%", "%g0", "|", "{", '"', "\\", "^", "`"]),
)
paths = st.tuples(st.sampled_from(PREFIXES), st.lists(segment_bytes, max_size=12).map("".join)).map("".join)
queries = st.one_of(
    st.just(""),
    st.lists(segment_bytes, max_size=8).map(lambda parts: "?" + "".join(parts)),
    st.just(f"?api_key={MANAGEMENT_KEY}"),
)
bodies = st.one_of(
    st.just(b""),
    st.sampled_from(["alpha", "alpha/tiny", "alpha/evil/repo", "gamma", "nope", "", "a" * 300]).map(
        lambda model: json.dumps({"model": model, "messages": []}).encode()
    ),
    st.integers(1, 3000).map(lambda depth: b'{"model": "alpha", "x": ' + b"[" * depth + b"]" * depth + b"}"),
    st.sampled_from([b"{nope", b"[1, 2]", b'"x"', b"null", b'{"model": 5}', b'{"model": ["alpha"]}']),
    st.binary(max_size=300),
)
origins = st.sampled_from([None, "http://evil.example", "null", "http://127.0.0.1", ""])
content_types = st.sampled_from(
    [None, "application/json", "text/plain", "application/json; charset=utf-8", "multipart/form-data"]
)


@dataclass
class Run:
    serve: Serve
    requests: Path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp_path = tmp_path_factory.mktemp("fuzz")
    with serve_process(tmp_path, EDGE_BACKENDS) as serve:
        requests = tmp_path / "requests"
        create(serve, "alpha", requests)
        create(serve, "gamma", requests, start=False, on_demand_start=False)
        yield Run(serve, requests)


def send(base_url: str, head: bytes, body: bytes) -> int | None:
    """The status of the answer to raw bytes; None when the server closed without answering."""
    address = urlsplit(base_url)
    assert address.hostname is not None and address.port is not None
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        with contextlib.suppress(OSError):  # refused while still sending: what it answered counts
            connection.sendall(head + body)
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := connection.recv(65536):
                received += chunk
    while received:
        head, _, received = received.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status >= 200:  # else an interim 100 Continue: the answer follows
            return status
    return None


@settings(
    max_examples=800,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(METHODS),
    path=paths,
    query=queries,
    key=st.one_of(st.sampled_from(VALID_KEYS), st.sampled_from(WRONG_KEYS)),
    origin=origins,
    content_type=content_types,
    expect=st.booleans(),
    padding=st.sampled_from([0, 0, 0, 1000, 70_000]),
    body=bodies,
)
def test_malformed_requests_never_get_an_undocumented_5xx_nor_reach_a_backend_unasked(
    run: Run,
    method: str,
    path: str,
    query: str,
    key: str,
    origin: str | None,
    content_type: str | None,
    expect: bool,
    padding: int,
    body: bytes,
) -> None:
    address = urlsplit(run.serve.base_url).netloc
    lines = [f"{method} {path}{query} HTTP/1.1", f"Host: {address}", "Connection: close"]
    lines += [key] if key else []
    lines += [f"Origin: {origin}"] if origin is not None else []
    lines += [f"Content-Type: {content_type}"] if content_type is not None else []
    lines += ["Expect: 100-continue"] if expect else []
    lines += [f"X-Padding: {'p' * padding}"] if padding else []
    lines += [f"Content-Length: {len(body)}"]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    expected = set()
    if key in VALID_KEYS:
        for route in FORWARDING:
            if (match := route.fullmatch(path)) and unquote(match["name"]) in ("", "alpha"):
                # An empty query ("?" alone) is no query: uvicorn gives none, none is forwarded.
                sent_query = query if query != "?" else ""
                expected.add(f"{method} {match['target']}{sent_query} HTTP/1.1".encode("latin-1"))
    before = len(recorded(run.requests))
    status = send(run.serve.base_url, head, body)
    assert status is None or status < 500 or status in DOCUMENTED_5XX, (head[:300], status)
    # The backend has read the request line before it answers, and llamactl answers after it.
    reached = recorded(run.requests)[before:]
    assert set(reached) <= expected and len(reached) <= 1, (head[:300], reached)


def test_the_server_still_answers_after_the_random_requests(run: Run) -> None:
    assert run.serve.client.get("/api/v1/version").status_code == 200
    assert run.serve.client.get("/llama-cpp/alpha/health").json() == {"status": "ok"}
    assert recorded(run.requests), "no random request reached the backend: the test proved nothing"
    stderr = run.serve.serving.stderr_text()
    assert "Traceback" not in stderr and "Exception in ASGI application" not in stderr, stderr[-3000:]
