"""Download jobs: models fetched from the Hugging Face hub into its cache, Go-llamactl compatible.

``DownloadJobs`` is the one owner of the jobs. ``start`` returns at once with a
queued job; each job runs in a worker thread of its own (at most
``max_running`` at a time, the rest wait queued) and calls huggingface_hub, the
field's own client, so the cache layout (``models--org--name/{blobs,refs,
snapshots}``), auth (``HF_TOKEN`` or the saved login) and the endpoint
(``HF_ENDPOINT``) are the hub's. Jobs live in memory only: the Go llamactl keeps
them in a store that is in memory too, and forgets finished ones after a day;
here they stay until deleted.

What a tag means, as in the Go llamactl (``pkg/models/downloader.go``):

- GGUF: a quant such as ``Q4_K_M``. Every ``.gguf`` of the ``main`` revision
  whose path names that quant (case-insensitively, as a whole word: ``Q4_K``
  is not ``Q4_K_M``, ``Q4_XS`` is not ``IQ4_XS``) is fetched, with one mmproj
  file, ``preset.ini`` and ``*.jinja``. No tag: the Go default, the first
  Q4_K_M, else the first Q4_0, else the first unsharded file. Unlike Go, all
  shards of the chosen file come along, and a tag that matches nothing fails
  the job instead of silently falling back to the default.
- safetensors: the revision (branch, tag or commit; ``main`` when absent).
  Its config, tokenizer and code files (``.json .txt .model .py .jinja
  .tiktoken``) and its ``.safetensors`` weights (``.bin`` when it has none).

When all files are in, ``refs/<tag>`` (``main`` when absent) points at the
commit, as the Go llamactl writes it, so the catalogue and ``delete_model``
find the download by its tag.

Progress and cancellation ride on the ``tqdm_class`` hook of
``hf_hub_download``: the bar's ``update`` counts the bytes and raises once the
job is cancelled, which unwinds the download. huggingface_hub reads the body in
``DOWNLOAD_CHUNK_SIZE`` pieces (10 MiB), so progress moves, and a cancel takes
effect, at that step; the hub's temporary file is removed as the download
unwinds, so a cancelled or failed file leaves nothing in the snapshot or in
``blobs/``. huggingface_hub 2.4 resumes within one download only (up to five
reconnects, with ``Range``); a new job skips the files an earlier one finished.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx2
import msgspec
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils.tqdm import tqdm as HubProgressBar

from llamactl.errors import LlamactlError, echo
from llamactl.models.download_request import DownloadRequest, ModelFormat
from llamactl.models.hub_cache import repo_folder, write_ref
from llamactl.models.repo_files import select_gguf_files, select_safetensors_files

logger = logging.getLogger("llamactl.models.downloads")

JobStatus = Literal["queued", "downloading", "completed", "failed", "cancelled"]
FINISHED: frozenset[JobStatus] = frozenset({"completed", "failed", "cancelled"})

DEFAULT_TAG = "main"
"""The job's tag, and the revision fetched, when the request names none (as in Go)."""
METADATA_TIMEOUT = 30.0
"""Seconds to wait for the hub's file listing; huggingface_hub's own client never times out."""
"""The Go llamactl's choice, in order, when a GGUF request has no tag."""


class JobNotFound(LlamactlError):
    status = 404
    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no download job {echo(job_id)}", "id")


class DownloadProgress(msgspec.Struct, frozen=True):
    bytes_downloaded: int = 0
    total_bytes: int = 0
    current_file: str = ""


class DownloadJob(msgspec.Struct, frozen=True, omit_defaults=True):
    """A job as the API shows it: the Go llamactl's JobResponse, plus ``format``."""

    id: str
    repo: str
    tag: str
    format: ModelFormat
    status: JobStatus
    progress: DownloadProgress
    created_at: datetime
    error: str | None = None
    completed_at: datetime | None = None
    model_path: str | None = None
    """The GGUF file (the first shard) or, for safetensors, the snapshot dir."""


class _Cancelled(Exception):
    """Raised inside huggingface_hub's download loop to unwind a cancelled job."""


class _JobFailed(Exception):
    """A job that cannot go on, with the message its ``error`` shows."""


class _RunningJob:
    """One job's mutable side, shared by its worker thread and the owner under the owner's lock."""

    def __init__(self, job: DownloadJob) -> None:
        self.job = job
        self.cancelled = threading.Event()
        self.thread: threading.Thread | None = None
        self.finished_bytes = 0
        """The sizes of the files already in the cache."""


class DownloadJobs:
    """Every download job of this process, in memory; safe to call from the event loop, never blocks.

    ``endpoint``, ``token`` and ``cache_dir`` default to huggingface_hub's own
    (``HF_ENDPOINT``, ``HF_TOKEN`` or the saved login, ``HF_HUB_CACHE``);
    ``token=False`` sends none.
    """

    def __init__(
        self,
        *,
        cache_dir: Path | None = None,
        endpoint: str | None = None,
        token: str | Literal[False] | None = None,
        max_running: int = 3,
    ) -> None:
        self.cache_dir = Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE)
        self.endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
        self._token = token
        self._api = HfApi(endpoint=self.endpoint, token=token)
        self._max_running = max_running
        self._lock = threading.Lock()
        self._jobs: dict[str, _RunningJob] = {}
        self._queued: deque[_RunningJob] = deque()
        self._running = 0

    def start(self, request: DownloadRequest) -> DownloadJob:
        """Queue a download and return its job; the transfer starts when a worker is free."""
        job = DownloadJob(
            id=secrets.token_hex(8),
            repo=request.repo_id,
            tag=request.tag or DEFAULT_TAG,
            format=request.format,
            status="queued",
            progress=DownloadProgress(),
            created_at=datetime.now(UTC),
        )
        with self._lock:
            self._jobs[job.id] = _RunningJob(job)
            self._queued.append(self._jobs[job.id])
            self._start_queued_locked()
        return job

    def jobs(self) -> list[DownloadJob]:
        with self._lock:
            return sorted((running.job for running in self._jobs.values()), key=lambda job: job.created_at)

    def job(self, job_id: str) -> DownloadJob:
        with self._lock:
            return self._get_locked(job_id).job

    def cancel_or_delete(self, job_id: str) -> None:
        """Cancel a queued or downloading job (it stays listed, ``cancelled``); forget a finished one."""
        with self._lock:
            running = self._get_locked(job_id)
            if running.job.status in FINISHED:
                del self._jobs[job_id]
                return
            self._cancel_locked(running)

    async def close(self, timeout: float = 5.0) -> None:
        """Cancel every unfinished job and wait, up to ``timeout`` seconds each, for its worker to stop."""
        with self._lock:
            for running in self._jobs.values():
                if running.job.status not in FINISHED:
                    self._cancel_locked(running)
            threads = [running.thread for running in self._jobs.values() if running.thread is not None]
        for thread in threads:
            await asyncio.to_thread(thread.join, timeout)

    def _get_locked(self, job_id: str) -> _RunningJob:
        running = self._jobs.get(job_id)
        if running is None:
            raise JobNotFound(job_id)
        return running

    def _cancel_locked(self, running: _RunningJob) -> None:
        running.cancelled.set()
        if running in self._queued:
            self._queued.remove(running)
        self._finish_locked(running, "cancelled")

    def _finish_locked(self, running: _RunningJob, status: JobStatus, **fields: Any) -> None:
        running.job = msgspec.structs.replace(
            running.job, status=status, completed_at=datetime.now(UTC), **fields
        )

    def _start_queued_locked(self) -> None:
        while self._queued and self._running < self._max_running:
            running = self._queued.popleft()
            self._running += 1
            running.job = msgspec.structs.replace(running.job, status="downloading")
            running.thread = threading.Thread(
                target=self._work, args=(running,), name=f"download-{running.job.id}", daemon=True
            )
            running.thread.start()

    def _work(self, running: _RunningJob) -> None:
        job = running.job
        try:
            model_path = self._download(running)
        except _Cancelled:
            pass
        except _JobFailed as failure:
            self._fail(running, str(failure))
        # The worker is the last place an error can be caught: whatever it is, the job fails with
        # its text and the thread ends cleanly, so no exception escapes into the server.
        except Exception as error:
            self._fail(running, describe_failure(error, job.repo, self.endpoint))
        else:
            with self._lock:
                if not running.cancelled.is_set():
                    self._finish_locked(running, "completed", model_path=model_path)
        finally:
            with self._lock:
                self._running -= 1
                self._start_queued_locked()

    def _fail(self, running: _RunningJob, message: str) -> None:
        logger.warning("download %s of %s failed: %s", running.job.id, running.job.repo, message)
        with self._lock:
            if not running.cancelled.is_set():
                self._finish_locked(running, "failed", error=message)

    def _download(self, running: _RunningJob) -> str:
        job = running.job
        revision = job.tag if job.format == "safetensors" else DEFAULT_TAG
        info = self._api.model_info(
            job.repo, revision=revision, files_metadata=True, timeout=METADATA_TIMEOUT
        )
        if info.sha is None or info.siblings is None:
            raise _JobFailed(f"{job.repo}: the hub at {self.endpoint} did not list the files of {revision}")
        sizes = {sibling.rfilename: sibling.size or 0 for sibling in info.siblings}
        if job.format == "gguf":
            files = select_gguf_files(sizes, "" if job.tag == DEFAULT_TAG else job.tag)
        else:
            files = select_safetensors_files(sizes)
        if not files:
            raise _JobFailed(_nothing_to_fetch(job, sorted(sizes)))
        self._update(running, total_bytes=sum(sizes[name] for name in files))

        progress_bar = _progress_bar_class(self, running)
        paths = []
        for name in files:
            if running.cancelled.is_set():
                raise _Cancelled
            self._update(running, current_file=name)
            paths.append(
                hf_hub_download(
                    job.repo,
                    name,
                    revision=info.sha,
                    cache_dir=self.cache_dir,
                    endpoint=self.endpoint,
                    token=self._token,
                    tqdm_class=progress_bar,
                )
            )
            with self._lock:
                running.finished_bytes += sizes[name]
            self._update(running, bytes_downloaded=running.finished_bytes)

        if running.cancelled.is_set():
            raise _Cancelled
        repo_dir = self.cache_dir / repo_folder(job.repo)
        if job.tag != info.sha:
            write_ref(repo_dir, job.tag, info.sha)
        if job.format == "gguf":
            return str(paths[0])
        return str(repo_dir / "snapshots" / info.sha)

    def _update(self, running: _RunningJob, **progress: Any) -> None:
        with self._lock:
            running.job = msgspec.structs.replace(
                running.job, progress=msgspec.structs.replace(running.job.progress, **progress)
            )


def _progress_bar_class(jobs: DownloadJobs, running: _RunningJob) -> type[HubProgressBar]:
    """A silent progress bar for one job's files: counts the bytes of the file in flight, raises on cancel."""

    class JobProgressBar(HubProgressBar):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True  # counted here, never drawn
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]  # huggingface_hub leaves it untyped
            self.file_bytes = 0

        def update(self, n: float | None = 1) -> bool | None:
            if running.cancelled.is_set():
                raise _Cancelled
            self.file_bytes += int(n or 0)
            jobs._update(running, bytes_downloaded=running.finished_bytes + self.file_bytes)
            return None

        # With these two, a Xet download feeds this one bar (bytes on disk) instead of making a second
        # bar for network bytes, which would count every byte twice.
        def update_transfer(self, n: float | None = 1) -> None:
            pass

        def set_transfer_postfix_str(self, postfix: str, refresh: bool = False) -> None:
            pass

    return JobProgressBar


def _nothing_to_fetch(job: DownloadJob, available: Sequence[str]) -> str:
    if job.format == "gguf":
        ggufs = [path for path in available if path.lower().endswith(".gguf")]
        if not ggufs:
            return f"{job.repo}: the repository has no GGUF file"
        return f"{job.repo}: no GGUF file matches the tag {job.tag!r}; the repository has {', '.join(ggufs)}"
    return f"{job.repo}: no .safetensors (or .bin) weights at revision {job.tag!r}"


def describe_failure(error: Exception, repo: str, endpoint: str) -> str:
    """What a failed job's ``error`` says: the repo, and the cause in words rather than a traceback."""
    if isinstance(error, GatedRepoError):
        return f"{repo}: the repository is gated; accept its terms on the hub and set HF_TOKEN"
    if isinstance(error, RepositoryNotFoundError):
        status = error.response.status_code
        return (
            f"{repo}: repository not found on {endpoint} (HTTP {status}); if it is private or gated,"
            " set HF_TOKEN to a token that may read it"
        )
    if isinstance(error, RevisionNotFoundError):
        return f"{repo}: revision not found on {endpoint}"
    if isinstance(error, RemoteEntryNotFoundError):
        return f"{repo}: a listed file is missing on {endpoint}: {error.response.url}"
    if isinstance(error, HfHubHTTPError) and error.response.status_code == 401:
        return (
            f"{repo}: the hub at {endpoint} refused access (HTTP 401); set HF_TOKEN to a token that reads it"
        )
    if isinstance(error, HfHubHTTPError):
        server_message = error.server_message or error.response.reason_phrase
        return f"{repo}: the hub at {endpoint} answered HTTP {error.response.status_code}: {server_message}"
    if isinstance(error, httpx2.TransportError | LocalEntryNotFoundError):
        return f"{repo}: cannot reach {endpoint}: {error}"
    if isinstance(error, OSError) and error.strerror:
        return f"{repo}: writing to the cache {error.filename or ''} failed: {error.strerror}"
    return f"{repo}: download failed: {type(error).__name__}: {error}"
