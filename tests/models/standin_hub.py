"""A stand-in for the Hugging Face hub on 127.0.0.1 that huggingface_hub 2.4 downloads from.

It answers the calls the client makes (read in huggingface_hub's
``hf_api.py``, ``HfApi.model_info``, and ``file_download.py``,
``hf_hub_download``):

- ``GET /api/models/{org}/{name}/revision/{rev}`` (``?blobs=true``): the
  commit and the files, ``{"id", "sha", "siblings": [{"rfilename", "size",
  "blobId", "lfs"?}]}``;
- ``HEAD`` and ``GET /{org}/{name}/resolve/{rev}/{path}``: ``X-Repo-Commit``,
  ``ETag`` (the sha256 of an LFS file, the git blob id of others) and
  ``Content-Length``; a ``GET`` with ``Range: bytes=N-`` gets ``206`` and the
  rest. No redirects, and no ``X-Xet-*`` headers, so the client never tries Xet
  and downloads over plain HTTP.

Errors carry the hub's ``X-Error-Code`` (``RepoNotFound``,
``RevisionNotFound``, ``EntryNotFound``), which ``hf_raise_for_status`` turns
into its error classes. A repo added with a ``token`` answers 401 to requests
without ``Authorization: Bearer <token>``.

Faults on demand: ``throttle`` slows every body down (so progress and cancel
can be watched), ``cut_after`` ends a file's next body early and drops the
connection, ``refuse`` answers a file's ``GET`` with an error status. Every
request is logged in ``requests``, with the bytes of body sent and whether the
client went away first.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import unquote, urlsplit

START_DEADLINE = 5.0
"""Seconds the server gets to accept its first connection."""
SLICE = 64 * 1024
"""Bytes written at a time, so a throttle and a cut land where they are asked to."""
LFS_SUFFIXES = (".gguf", ".safetensors", ".bin")
"""Files the stand-in serves as LFS files, as the hub does for weights."""

_INFO = re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)/revision/(?P<revision>[^/]+)")
_RESOLVE = re.compile(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<path>.+)")


@dataclass
class HubRequest:
    """One request the stand-in answered."""

    method: str
    path: str
    """The URL path, unquoted, without the query."""
    range: str | None
    authorization: str | None
    status: int = 0
    bytes_sent: int = 0
    """Bytes of body written to the socket."""
    completed: bool = False
    """The whole body was sent."""
    aborted: bool = False
    """The client closed the connection before the body was sent."""
    cut: bool = False
    """The stand-in dropped the connection mid-body, as ``cut_after`` asked."""


@dataclass
class _Repo:
    token: str | None
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)


class StandinHub:
    """The stand-in hub; use it as a context manager, or call ``start`` and ``close``."""

    def __init__(self) -> None:
        self._repos: dict[str, _Repo] = {}
        self._lock = threading.Lock()
        self.requests: list[HubRequest] = []
        self._bytes_per_second: float | None = None
        self._cuts: dict[str, int] = {}
        self._refusals: dict[str, int] = {}
        self._closing = threading.Event()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="standin-hub", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> StandinHub:
        self._thread.start()
        deadline = time.monotonic() + START_DEADLINE
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self._server.server_port), timeout=1):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(START_DEADLINE)

    def __enter__(self) -> StandinHub:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def add_commit(
        self, repo_id: str, files: Mapping[str, bytes], ref: str = "main", token: str | None = None
    ) -> str:
        """Add a commit of exactly ``files`` (making the repo if new), point ``ref`` at it; its hash."""
        digest = hashlib.sha1(repo_id.encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
        commit = digest.hexdigest()
        with self._lock:
            repo = self._repos.setdefault(repo_id, _Repo(token))
            repo.commits[commit] = dict(files)
            repo.refs[ref] = commit
        return commit

    def throttle(self, bytes_per_second: float | None) -> None:
        """Send every body at about this rate from now on; None: as fast as the socket takes it."""
        self._bytes_per_second = bytes_per_second

    def cut_after(self, path: str, size: int) -> None:
        """The next ``GET`` of file ``path`` (any repo) ends after ``size`` bytes and drops the connection."""
        with self._lock:
            self._cuts[path] = size

    def refuse(self, path: str, status: int | None) -> None:
        """Answer every ``GET`` of the file ``path`` with ``status`` (None: serve it again)."""
        with self._lock:
            if status is None:
                self._refusals.pop(path, None)
            else:
                self._refusals[path] = status

    def file_requests(self, path: str, method: str = "GET") -> list[HubRequest]:
        """The requests for the file ``path`` (any repo, any revision) with this method."""
        with self._lock:
            return [r for r in self.requests if r.method == method and _resolved_file(r.path) == path]

    def transfers_in_flight(self) -> int:
        with self._lock:
            return sum(
                1 for r in self.requests if r.method == "GET" and r.status in (200, 206) and not _ended(r)
            )

    def _answer(self, handler: _Handler) -> None:
        target = urlsplit(handler.path)
        request = HubRequest(
            method=handler.command,
            path=unquote(target.path),
            range=handler.headers.get("Range"),
            authorization=handler.headers.get("Authorization"),
        )
        with self._lock:
            self.requests.append(request)
        if info := _INFO.fullmatch(target.path):
            self._answer_info(handler, request, unquote(info["repo"]), unquote(info["revision"]))
        elif resolve := _RESOLVE.fullmatch(target.path):
            self._answer_file(
                handler,
                request,
                unquote(resolve["repo"]),
                unquote(resolve["revision"]),
                unquote(resolve["path"]),
            )
        else:
            _send_error(handler, request, 404, "no such route", {})

    def _find(
        self, handler: _Handler, request: HubRequest, repo_id: str, revision: str
    ) -> tuple[str, dict[str, bytes]] | None:
        """The commit and files ``revision`` names, or None once an error has been answered."""
        with self._lock:
            repo = self._repos.get(repo_id)
        if repo is None:
            _send_error(handler, request, 404, "Repository not found", {"X-Error-Code": "RepoNotFound"})
            return None
        if repo.token is not None and request.authorization != f"Bearer {repo.token}":
            _send_error(handler, request, 401, "Invalid username or password.", {})
            return None
        commit = revision if revision in repo.commits else repo.refs.get(revision)
        if commit is None:
            _send_error(handler, request, 404, "Revision not found", {"X-Error-Code": "RevisionNotFound"})
            return None
        return commit, repo.commits[commit]

    def _answer_info(self, handler: _Handler, request: HubRequest, repo_id: str, revision: str) -> None:
        found = self._find(handler, request, repo_id, revision)
        if found is None:
            return
        commit, files = found
        siblings = []
        for path, content in sorted(files.items()):
            sibling: dict[str, object] = {
                "rfilename": path,
                "size": len(content),
                "blobId": _git_blob_id(content),
            }
            if path.endswith(LFS_SUFFIXES):
                sibling["lfs"] = {"size": len(content), "sha256": _etag(path, content), "pointerSize": 134}
            siblings.append(sibling)
        body = json.dumps({"id": repo_id, "sha": commit, "siblings": siblings}).encode()
        request.status = 200
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        self._send_body(handler, request, body, throttled=False)

    def _answer_file(
        self, handler: _Handler, request: HubRequest, repo_id: str, revision: str, path: str
    ) -> None:
        found = self._find(handler, request, repo_id, revision)
        if found is None:
            return
        commit, files = found
        if path not in files:
            headers = {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}
            _send_error(handler, request, 404, "Entry not found", headers)
            return
        content = files[path]
        with self._lock:
            refusal = self._refusals.get(path) if request.method == "GET" else None
            cut = self._cuts.pop(path, None) if request.method == "GET" else None
        if refusal is not None:
            _send_error(handler, request, refusal, "refused on purpose", {"X-Repo-Commit": commit})
            return
        start = _range_start(request.range) if request.method == "GET" else 0
        status = 206 if start else 200
        request.status = status
        handler.send_response(status)
        handler.send_header("X-Repo-Commit", commit)
        handler.send_header("ETag", f'"{_etag(path, content)}"')
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Length", str(len(content) - start))
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
        handler.end_headers()
        if request.method == "GET":
            end = len(content) if cut is None else min(len(content), start + cut)
            self._send_body(handler, request, content[start:end], throttled=True)
            if cut is not None and end < len(content):
                request.completed, request.cut = False, True
                handler.close_connection = True

    def _send_body(self, handler: _Handler, request: HubRequest, body: bytes, throttled: bool) -> None:
        try:
            for offset in range(0, len(body), SLICE):
                if self._closing.is_set():
                    handler.close_connection = True
                    return
                piece = body[offset : offset + SLICE]
                handler.wfile.write(piece)
                request.bytes_sent += len(piece)
                rate = self._bytes_per_second
                if throttled and rate:
                    time.sleep(len(piece) / rate)
            handler.wfile.flush()
            request.completed = True
        except (BrokenPipeError, ConnectionResetError):
            request.aborted = True
            handler.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: StandinHub) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hub = hub


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self.server.hub._answer(self)

    def do_HEAD(self) -> None:
        self.server.hub._answer(self)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read ``StandinHub.requests`` instead."""


def _resolved_file(url_path: str) -> str | None:
    """The file a ``/{repo}/resolve/{revision}/{path}`` request asks for; None for other routes."""
    matched = _RESOLVE.fullmatch(url_path)
    return matched["path"] if matched else None


def _ended(request: HubRequest) -> bool:
    return request.completed or request.aborted or request.cut


def _send_error(
    handler: _Handler, request: HubRequest, status: int, message: str, headers: Mapping[str, str]
) -> None:
    body = json.dumps({"error": message}).encode()
    request.status = status
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("X-Error-Message", message)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if request.method != "HEAD":
        handler.wfile.write(body)


def _range_start(header: str | None) -> int:
    """The N of ``bytes=N-``, the only form huggingface_hub sends; 0 without a range."""
    if header is None:
        return 0
    matched = re.fullmatch(r"bytes=(\d+)-", header.strip())
    if matched is None:
        raise ValueError(f"unexpected Range header {header!r}")
    return int(matched[1])


def _git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _etag(path: str, content: bytes) -> str:
    return hashlib.sha256(content).hexdigest() if path.endswith(LFS_SUFFIXES) else _git_blob_id(content)
