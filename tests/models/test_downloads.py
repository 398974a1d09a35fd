"""Download jobs against the stand-in hub on 127.0.0.1: nothing here reaches the internet."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import numpy as np
import pytest
from gguf import GGUFWriter
from huggingface_hub import scan_cache_dir
from huggingface_hub.constants import DOWNLOAD_CHUNK_SIZE

from llamactl.models.download_request import DownloadRequest, DownloadRequestError
from llamactl.models.downloads import DownloadJob, DownloadJobs, JobNotFound
from llamactl.models.hub_cache import ModelNotFound, delete_model
from llamactl.models.repo_files import select_gguf_files
from tests.e2e.tiny_models import write_tiny_gguf, write_tiny_mlx_model
from tests.models.standin_hub import StandinHub

DEADLINE = 20.0
"""Seconds any wait for a job or the hub may take before the test fails."""
TOKEN = "hf_standin_token_0123456789"
GGUF_REPO = "org/tiny-GGUF"
ST_REPO = "org/tiny-st"


def wait_until(condition: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    give_up = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"gave up after {deadline} s waiting for {what}")
        time.sleep(0.02)


def finished(jobs: DownloadJobs, job: DownloadJob) -> DownloadJob:
    wait_until(lambda: jobs.job(job.id).status in ("completed", "failed", "cancelled"), f"job {job.id}")
    return jobs.job(job.id)


@pytest.fixture(scope="module")
def gguf_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("gguf")
    model = write_tiny_gguf(folder / "model.gguf").read_bytes()
    projector = GGUFWriter(str(folder / "mmproj.gguf"), "clip")
    projector.add_tensor("v.patch_embd.weight", np.zeros((4, 4), dtype=np.float32))
    projector.write_header_to_file()
    projector.write_kv_data_to_file()
    projector.write_tensors_to_file()
    projector.close()
    return {
        "tiny-Q4_K_M.gguf": model,
        "tiny-Q8_0.gguf": model + b"\0" * 32,
        "mmproj-tiny-f16.gguf": (folder / "mmproj.gguf").read_bytes(),
        "README.md": b"# tiny\n",
    }


@pytest.fixture(scope="module")
def safetensors_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = write_tiny_mlx_model(tmp_path_factory.mktemp("st") / "model")
    files = {path.name: path.read_bytes() for path in folder.iterdir()}
    return {**files, "README.md": b"# tiny\n", ".gitattributes": b"*.safetensors filter=lfs\n"}


@pytest.fixture
def hub() -> Iterator[StandinHub]:
    with StandinHub() as standin:
        yield standin


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "hub"


@pytest.fixture
def jobs(hub: StandinHub, cache: Path) -> Iterator[DownloadJobs]:
    downloads = DownloadJobs(cache_dir=cache, endpoint=hub.url, token=False)
    yield downloads
    asyncio.run(downloads.close())


def test_a_gguf_tag_fetches_that_quant_and_the_mmproj_into_the_hub_cache(
    hub: StandinHub, jobs: DownloadJobs, cache: Path, gguf_files: dict[str, bytes]
) -> None:
    commit = hub.add_commit(GGUF_REPO, gguf_files)

    job = finished(jobs, jobs.start(DownloadRequest(f"{GGUF_REPO}:q8_0")))

    assert (job.status, job.error, job.tag) == ("completed", None, "q8_0")
    snapshot = cache / "models--org--tiny-GGUF" / "snapshots" / commit
    assert job.model_path == str(snapshot / "tiny-Q8_0.gguf")
    [repo] = scan_cache_dir(cache).repos
    [revision] = repo.revisions
    assert repo.repo_id == GGUF_REPO and revision.commit_hash == commit
    assert {file.file_name for file in revision.files} == {"tiny-Q8_0.gguf", "mmproj-tiny-f16.gguf"}
    assert revision.refs == frozenset({"q8_0"})
    for file in revision.files:
        assert file.file_path.read_bytes() == gguf_files[file.file_name]
    expected = len(gguf_files["tiny-Q8_0.gguf"]) + len(gguf_files["mmproj-tiny-f16.gguf"])
    assert (job.progress.bytes_downloaded, job.progress.total_bytes) == (expected, expected)
    assert hub.file_requests("tiny-Q4_K_M.gguf", "HEAD") == []


def test_a_gguf_without_a_tag_takes_the_go_default_q4_k_m(
    hub: StandinHub, jobs: DownloadJobs, cache: Path, gguf_files: dict[str, bytes]
) -> None:
    commit = hub.add_commit(GGUF_REPO, gguf_files)

    job = finished(jobs, jobs.start(DownloadRequest(GGUF_REPO)))

    assert (job.status, job.tag) == ("completed", "main")
    assert job.model_path is not None and Path(job.model_path).name == "tiny-Q4_K_M.gguf"
    assert (cache / "models--org--tiny-GGUF" / "refs" / "main").read_text() == commit


@pytest.mark.parametrize(
    ("files", "tag", "chosen"),
    [
        (["m-Q4_K.gguf", "m-Q4_K_M.gguf", "m-IQ4_XS.gguf"], "Q4_K", ["m-Q4_K.gguf"]),
        (["m-Q4_K.gguf", "m-Q4_K_M.gguf", "m-IQ4_XS.gguf"], "q4_k_m", ["m-Q4_K_M.gguf"]),
        (["m-IQ4_XS.gguf", "m-Q4_XS.gguf"], "Q4_XS", ["m-Q4_XS.gguf"]),
        (
            ["Q8_0/m-Q8_0-00002-of-00002.gguf", "Q8_0/m-Q8_0-00001-of-00002.gguf", "m-Q4_0.gguf"],
            "Q8_0",
            ["Q8_0/m-Q8_0-00001-of-00002.gguf", "Q8_0/m-Q8_0-00002-of-00002.gguf"],
        ),
        (["m-Q8_0.gguf", "m-Q4_0.gguf", "m-Q4_K_M.gguf"], "", ["m-Q4_K_M.gguf"]),
        (["m-Q8_0.gguf", "m-Q4_0.gguf"], "", ["m-Q4_0.gguf"]),
        (["m-F16-00001-of-00002.gguf", "m-F16-00002-of-00002.gguf", "m-BF16.gguf"], "", ["m-BF16.gguf"]),
        (
            ["m-F16-00001-of-00002.gguf", "m-F16-00002-of-00002.gguf"],
            "",
            ["m-F16-00001-of-00002.gguf", "m-F16-00002-of-00002.gguf"],
        ),
        (["m-Q8_0.gguf", "mmproj-F32.gguf", "mmproj-F16.gguf"], "Q8_0", ["m-Q8_0.gguf", "mmproj-F16.gguf"]),
        (
            ["m-Q8_0.gguf", "preset.ini", "chat.jinja", "notes.md"],
            "",
            ["m-Q8_0.gguf", "chat.jinja", "preset.ini"],
        ),
        (["m-Q8_0.gguf"], "Q2_K", []),
        (["mmproj-F16.gguf", "README.md"], "", []),
    ],
)
def test_which_gguf_files_a_tag_selects(files: list[str], tag: str, chosen: list[str]) -> None:
    assert select_gguf_files(dict.fromkeys(files, 1), tag) == chosen


def test_a_gguf_tag_that_matches_nothing_fails_and_names_the_files(
    hub: StandinHub, jobs: DownloadJobs, gguf_files: dict[str, bytes]
) -> None:
    hub.add_commit(GGUF_REPO, gguf_files)

    job = finished(jobs, jobs.start(DownloadRequest(f"{GGUF_REPO}:Q2_K")))

    assert job.status == "failed" and job.error is not None
    assert GGUF_REPO in job.error and "Q2_K" in job.error and "tiny-Q8_0.gguf" in job.error


def test_a_safetensors_download_fetches_config_tokenizer_and_weights(
    hub: StandinHub, jobs: DownloadJobs, cache: Path, safetensors_files: dict[str, bytes]
) -> None:
    commit = hub.add_commit(ST_REPO, safetensors_files)

    job = finished(jobs, jobs.start(DownloadRequest(ST_REPO, format="safetensors")))

    assert (job.status, job.error) == ("completed", None)
    snapshot = cache / "models--org--tiny-st" / "snapshots" / commit
    assert job.model_path == str(snapshot)
    assert sorted(path.name for path in snapshot.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert (snapshot / "model.safetensors").read_bytes() == safetensors_files["model.safetensors"]
    assert job.progress.bytes_downloaded == job.progress.total_bytes > 0


def test_a_safetensors_tag_is_the_revision(
    hub: StandinHub, jobs: DownloadJobs, cache: Path, safetensors_files: dict[str, bytes]
) -> None:
    hub.add_commit(ST_REPO, safetensors_files)
    tagged = hub.add_commit(ST_REPO, {**safetensors_files, "model.safetensors": b"other weights"}, ref="v1")

    job = finished(jobs, jobs.start(DownloadRequest(f"{ST_REPO}:v1", format="safetensors")))

    assert job.model_path == str(cache / "models--org--tiny-st" / "snapshots" / tagged)
    assert (Path(job.model_path) / "model.safetensors").read_bytes() == b"other weights"
    assert (cache / "models--org--tiny-st" / "refs" / "v1").read_text() == tagged


def test_progress_moves_during_a_file_and_a_cancel_stops_the_transfer(
    hub: StandinHub, jobs: DownloadJobs, cache: Path
) -> None:
    """huggingface_hub reports every DOWNLOAD_CHUNK_SIZE bytes, so the file spans several chunks."""
    size = 4 * DOWNLOAD_CHUNK_SIZE
    hub.add_commit(GGUF_REPO, {"big-Q4_K_M.gguf": os.urandom(size)})
    hub.throttle(1.5 * DOWNLOAD_CHUNK_SIZE)

    job = jobs.start(DownloadRequest(GGUF_REPO))
    wait_until(lambda: jobs.job(job.id).progress.bytes_downloaded > 0, "the first progress")
    moving = jobs.job(job.id)
    assert moving.status == "downloading"
    assert 0 < moving.progress.bytes_downloaded < moving.progress.total_bytes == size
    assert moving.progress.current_file == "big-Q4_K_M.gguf"

    cancelled_at = time.monotonic()
    jobs.cancel_or_delete(job.id)

    assert jobs.job(job.id).status == "cancelled"
    wait_until(lambda: hub.transfers_in_flight() == 0, "the transfer to stop", deadline=5.0)
    assert time.monotonic() - cancelled_at < 3.0
    [transfer] = hub.file_requests("big-Q4_K_M.gguf")
    assert transfer.aborted and transfer.bytes_sent < size
    repo_dir = cache / "models--org--tiny-GGUF"
    wait_until(lambda: not list(repo_dir.glob("blobs/*")), "the partial blob to go", deadline=5.0)
    assert not list(repo_dir.glob("snapshots/*/*"))
    assert jobs.job(job.id).status == "cancelled"


def test_a_file_cut_mid_transfer_resumes_with_a_range_and_completes(
    hub: StandinHub, jobs: DownloadJobs, cache: Path
) -> None:
    content = os.urandom(DOWNLOAD_CHUNK_SIZE + DOWNLOAD_CHUNK_SIZE // 2)
    hub.add_commit(GGUF_REPO, {"cut-Q4_K_M.gguf": content})
    hub.cut_after("cut-Q4_K_M.gguf", DOWNLOAD_CHUNK_SIZE + 4096)

    job = finished(jobs, jobs.start(DownloadRequest(GGUF_REPO)))

    assert (job.status, job.error) == ("completed", None)
    assert job.model_path is not None
    assert hashlib.sha256(Path(job.model_path).read_bytes()).digest() == hashlib.sha256(content).digest()
    first, resumed = hub.file_requests("cut-Q4_K_M.gguf")
    assert first.cut and first.range is None
    assert resumed.range == f"bytes={DOWNLOAD_CHUNK_SIZE}-" and resumed.status == 206 and resumed.completed
    assert job.progress.bytes_downloaded == job.progress.total_bytes == len(content)


def test_a_failed_job_keeps_the_files_it_finished_and_a_new_job_skips_them(
    hub: StandinHub, jobs: DownloadJobs, gguf_files: dict[str, bytes]
) -> None:
    hub.add_commit(GGUF_REPO, gguf_files)
    hub.refuse("mmproj-tiny-f16.gguf", 403)

    failed = finished(jobs, jobs.start(DownloadRequest(GGUF_REPO)))
    assert failed.status == "failed" and failed.error is not None
    assert GGUF_REPO in failed.error and "403" in failed.error

    hub.refuse("mmproj-tiny-f16.gguf", None)
    retried = finished(jobs, jobs.start(DownloadRequest(GGUF_REPO)))

    assert retried.status == "completed"
    assert len(hub.file_requests("tiny-Q4_K_M.gguf")) == 1


def test_a_missing_repo_fails_with_a_message_naming_it(jobs: DownloadJobs) -> None:
    job = finished(jobs, jobs.start(DownloadRequest("org/absent-GGUF")))

    assert job.status == "failed" and job.error is not None
    assert "org/absent-GGUF" in job.error and "404" in job.error and job.completed_at is not None


def test_a_private_repo_needs_the_token(
    hub: StandinHub, jobs: DownloadJobs, cache: Path, gguf_files: dict[str, bytes]
) -> None:
    hub.add_commit(GGUF_REPO, gguf_files, token=TOKEN)

    refused = finished(jobs, jobs.start(DownloadRequest(GGUF_REPO)))
    assert refused.status == "failed" and refused.error is not None
    assert GGUF_REPO in refused.error and "401" in refused.error and "HF_TOKEN" in refused.error

    with_token = DownloadJobs(cache_dir=cache, endpoint=hub.url, token=TOKEN)
    assert finished(with_token, with_token.start(DownloadRequest(GGUF_REPO))).status == "completed"
    assert all(request.authorization == f"Bearer {TOKEN}" for request in hub.requests[1:])


def test_the_token_comes_from_hf_token_by_default(
    hub: StandinHub, cache: Path, gguf_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub.add_commit(GGUF_REPO, gguf_files, token=TOKEN)
    jobs = DownloadJobs(cache_dir=cache, endpoint=hub.url)

    assert finished(jobs, jobs.start(DownloadRequest(GGUF_REPO))).status == "completed"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"repo": ""}, "repo"),
        ({"repo": "model-only"}, "repo"),
        ({"repo": "a/b/c"}, "repo"),
        ({"repo": "../etc"}, "repo"),
        ({"repo": "org/.."}, "repo"),
        ({"repo": "org/a..b"}, "repo"),
        ({"repo": "org--x/model"}, "repo"),
        ({"repo": "org/mo del"}, "repo"),
        ({"repo": "org/model:"}, "repo"),
        ({"repo": "org/model:../x"}, "repo"),
        ({"repo": "org/model", "format": "onnx"}, "format"),
    ],
)
def test_a_bad_request_names_the_field(body: dict[str, str], field: str) -> None:
    with pytest.raises(msgspec.ValidationError) as decoded:
        msgspec.json.decode(msgspec.json.encode(body), type=DownloadRequest)
    assert str(decoded.value).startswith(f"{field}: ") or f"`$.{field}`" in str(decoded.value)

    with pytest.raises(DownloadRequestError) as built:
        DownloadRequest(**body)  # type: ignore[arg-type]
    assert (built.value.field, built.value.status, built.value.code) == (field, 400, "invalid_request")


def test_the_tag_is_split_at_the_last_colon() -> None:
    request = DownloadRequest("org/model:Q4_K_M")
    assert (request.repo_id, request.tag, request.format) == ("org/model", "Q4_K_M", "gguf")
    assert DownloadRequest("org/model").tag == ""


def test_jobs_are_listed_found_and_deleted_once_finished(jobs: DownloadJobs) -> None:
    job = finished(jobs, jobs.start(DownloadRequest("org/absent-GGUF")))
    assert jobs.jobs() == [job]

    jobs.cancel_or_delete(job.id)

    assert jobs.jobs() == []
    for call in (jobs.job, jobs.cancel_or_delete):
        with pytest.raises(JobNotFound) as missing:
            call(job.id)
        assert (missing.value.status, missing.value.code) == (404, "job_not_found")


def test_a_job_encodes_as_the_go_job_response(jobs: DownloadJobs) -> None:
    job = finished(jobs, jobs.start(DownloadRequest("org/absent-GGUF")))

    encoded = msgspec.json.decode(msgspec.json.encode(job))

    assert set(encoded) == {
        "id",
        "repo",
        "tag",
        "format",
        "status",
        "progress",
        "created_at",
        "error",
        "completed_at",
    }
    assert set(encoded["progress"]) == {"bytes_downloaded", "total_bytes", "current_file"}


def test_delete_model_removes_the_whole_repo(
    hub: StandinHub, jobs: DownloadJobs, cache: Path, gguf_files: dict[str, bytes]
) -> None:
    hub.add_commit(GGUF_REPO, gguf_files)
    assert finished(jobs, jobs.start(DownloadRequest(GGUF_REPO))).status == "completed"

    delete_model(cache, GGUF_REPO)

    assert not (cache / "models--org--tiny-GGUF").exists()
    with pytest.raises(ModelNotFound) as missing:
        delete_model(cache, GGUF_REPO)
    assert (missing.value.status, missing.value.code) == (404, "model_not_found")


def test_delete_model_by_tag_keeps_blobs_another_snapshot_uses(
    hub: StandinHub, jobs: DownloadJobs, cache: Path, safetensors_files: dict[str, bytes]
) -> None:
    main = hub.add_commit(ST_REPO, safetensors_files)
    tagged = hub.add_commit(ST_REPO, {**safetensors_files, "model.safetensors": b"v1 weights"}, ref="v1")
    for requested in (ST_REPO, f"{ST_REPO}:v1"):
        assert (
            finished(jobs, jobs.start(DownloadRequest(requested, format="safetensors"))).status == "completed"
        )
    repo_dir = cache / "models--org--tiny-st"
    v1_weights = (repo_dir / "snapshots" / tagged / "model.safetensors").resolve()

    delete_model(cache, ST_REPO, tag="v1")

    assert not (repo_dir / "snapshots" / tagged).exists() and not (repo_dir / "refs" / "v1").exists()
    assert not v1_weights.exists()
    info = scan_cache_dir(cache)
    assert info.warnings == []
    [repo] = info.repos
    [revision] = repo.revisions
    assert (revision.commit_hash, revision.refs) == (main, frozenset({"main"}))
    for file in revision.files:
        assert file.file_path.read_bytes() == safetensors_files[file.file_name]
    with pytest.raises(ModelNotFound):
        delete_model(cache, ST_REPO, tag="v1")

    delete_model(cache, f"{ST_REPO}:main")

    assert not repo_dir.exists()


def test_delete_model_refuses_path_tricks_and_never_follows_a_link_out(cache: Path, tmp_path: Path) -> None:
    for repo, tag in (("../outside", None), ("org/..", None), ("org/model", "../../x"), ("a/b/c", None)):
        with pytest.raises(DownloadRequestError):
            delete_model(cache, repo, tag)
    commit = "a" * 40
    snapshot = cache / "models--org--model" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (cache / "models--org--model" / "refs").mkdir()
    (cache / "models--org--model" / "refs" / "main").write_text(commit)
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    (snapshot / "weights.gguf").symlink_to(os.path.relpath(outside, snapshot))

    delete_model(cache, "org/model", "main")

    assert outside.read_text() == "keep me"
    assert not (cache / "models--org--model").exists()
