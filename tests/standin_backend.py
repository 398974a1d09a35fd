"""A stand-in for llama-server: same CLI and HTTP, fast, and able to misbehave on demand.

    python tests/standin_backend.py --host 127.0.0.1 --port 8081 [-m MODEL] [--alias NAME] [...]

Unknown flags are ignored. ``STANDIN_FAULTS`` (comma-separated) makes it misbehave:
``load_time=S`` (/health 503 for S seconds), ``never_healthy``, ``slow_bind=S``,
``exit_at_start=CODE``, ``exit_after=S`` (crash S seconds after first answering /health 200),
``crash_mid_stream``, ``crash_mid_body`` (a non-streamed answer cut short), ``ignore_sigterm``,
``fork_grandchild``, ``flood_logs=BYTES``, ``report_memory_after=S`` (print llama-server's buffer
sizes S seconds after first answering /health 200, as llama.cpp's log thread can).
``STANDIN_PIDS`` names a file where it appends its PID (and its grandchild's).
``STANDIN_REQUESTS`` names a file where it appends every request line it reads, as the
``repr`` of the line's bytes, one per line: what reached the backend, smuggled requests included.
Standard library only, so it starts in tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

STREAM_CHUNKS = 5
PROMPT_TOKENS = 7
"""What every answer's usage says the prompt had."""
REPORTED_BUFFERS = (
    "load_tensors:   CPU_Mapped model buffer size =   100.00 MiB",
    "llama_kv_cache:        CPU KV buffer size =    20.00 MiB",
    "sched_reserve:        CPU compute buffer size =    10.00 MiB",
)
"""llama-server's buffer report at start, 130 MiB in all."""


def parse_faults() -> dict[str, str]:
    faults: dict[str, str] = {}
    for item in filter(None, os.environ.get("STANDIN_FAULTS", "").split(",")):
        key, _, value = item.partition("=")
        faults[key] = value
    return faults


def flag_value(argv: list[str], *names: str) -> str | None:
    for index, token in enumerate(argv[:-1]):
        if token in names:
            return argv[index + 1]
    return None


class StandIn:
    def __init__(self, argv: list[str], faults: dict[str, str]) -> None:
        self.faults = faults
        self.model = flag_value(argv, "--alias", "-a") or flag_value(argv, "--model", "-m") or "standin"
        self.started = time.monotonic()
        self.load_time = float(faults.get("load_time", "0"))
        self.answered_healthy = False
        self.requests_file = os.environ.get("STANDIN_REQUESTS")

    def first_healthy(self) -> None:
        if self.answered_healthy:
            return
        self.answered_healthy = True
        loop = asyncio.get_running_loop()
        if "exit_after" in self.faults:
            loop.call_later(float(self.faults["exit_after"]), self.crash)
        if "report_memory_after" in self.faults:
            loop.call_later(float(self.faults["report_memory_after"]), self.report_memory)

    @staticmethod
    def report_memory() -> None:
        for line in REPORTED_BUFFERS:
            print(line, file=sys.stderr, flush=True)

    @staticmethod
    def crash() -> None:
        print("standin: crashing as asked", file=sys.stderr, flush=True)
        os._exit(2)

    def healthy(self) -> bool:
        return "never_healthy" not in self.faults and time.monotonic() - self.started >= self.load_time

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if self.requests_file:
                    with open(self.requests_file, "a") as requests:
                        requests.write(repr(head.split(b"\r\n", 1)[0]) + "\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
                if headers.get("expect", "").lower() == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # as real servers do
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                await self.route(method, path, body, writer)
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError):
            pass
        finally:
            writer.close()

    async def route(self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter) -> None:
        if path == "/health":
            if self.healthy():
                self.respond(writer, 200, {"status": "ok"})
                self.first_healthy()
            else:
                self.respond(writer, 503, {"error": {"message": "Loading model", "code": 503}})
        elif path == "/v1/models":
            self.respond(writer, 200, {"object": "list", "data": [{"id": self.model, "object": "model"}]})
        elif method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
            request = json.loads(body or b"{}")
            if request.get("stream"):
                await self.stream(writer, request)
            else:
                if "crash_mid_body" in self.faults:
                    await self.cut_body(writer)
                self.respond(writer, 200, self.completion(request))
        else:
            self.respond(writer, 404, {"error": {"message": f"no route {path}"}})
        await writer.drain()

    def completion(self, request: dict[str, object]) -> dict[str, object]:
        # llama-server's per-request adapter scales and prompt cache, echoed so tests see what the proxy sent.
        echoed: tuple[str, ...] = ("lora", "cache_prompt")
        adapters = {member: request[member] for member in echoed if member in request}
        return {
            "object": "chat.completion",
            "model": request.get("model"),
            **adapters,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": 1,
                "total_tokens": PROMPT_TOKENS + 1,
            },
        }

    async def stream(self, writer: asyncio.StreamWriter, request: dict[str, object]) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        delay = float(str(request.get("chunk_delay", 0)))
        try:
            for index in range(int(str(request.get("chunks", STREAM_CHUNKS)))):
                if "crash_mid_stream" in self.faults and index == 2:
                    await writer.drain()
                    os._exit(3)
                event = {"model": request.get("model"), "choices": [{"delta": {"content": f"t{index}"}}]}
                self.write_chunk(writer, b"data: " + json.dumps(event).encode() + b"\n\n")
                await writer.drain()
                if delay:
                    await asyncio.sleep(delay)
            options = request.get("stream_options")
            if isinstance(options, dict) and options.get("include_usage"):
                # As OpenAI and llama-server send it: a last chunk with no choices and the usage.
                usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": index + 1}
                event = {"model": request.get("model"), "choices": [], "usage": usage}
                self.write_chunk(writer, b"data: " + json.dumps(event).encode() + b"\n\n")
        except (ConnectionResetError, BrokenPipeError):
            print(
                f"standin: stream cancelled by the client after {index} chunks", file=sys.stderr, flush=True
            )
            raise
        self.write_chunk(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")

    async def cut_body(self, writer: asyncio.StreamWriter) -> None:
        """A JSON answer in chunks that stops half-way: the process dies after the first one."""
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        self.write_chunk(writer, b'{"choices": [')
        await writer.drain()
        os._exit(3)

    @staticmethod
    def write_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    @staticmethod
    def respond(writer: asyncio.StreamWriter, status: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )


async def serve(argv: list[str]) -> None:
    faults = parse_faults()
    if "exit_at_start" in faults:
        print("standin: exiting at start as asked", file=sys.stderr, flush=True)
        sys.exit(int(faults["exit_at_start"] or 1))
    if "ignore_sigterm" in faults:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pids = [os.getpid()]
    if "fork_grandchild" in faults:
        pids.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]).pid)
    if os.environ.get("STANDIN_PIDS"):
        with open(os.environ["STANDIN_PIDS"], "a") as pid_file:
            pid_file.write("".join(f"{pid}\n" for pid in pids))
    if "flood_logs" in faults:
        sys.stdout.write("x" * int(faults["flood_logs"]) + "\n")  # one line, no pause for the reader
        sys.stdout.flush()
    await asyncio.sleep(float(faults.get("slow_bind", "0")))
    standin = StandIn(argv, faults)
    host = flag_value(argv, "--host") or "127.0.0.1"
    port = int(flag_value(argv, "--port") or "8080")
    server = await asyncio.start_server(standin.handle, host, port)
    print(f"standin: listening on {host}:{port} as {standin.model}", file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if "--version" in sys.argv:
        print("version: standin", file=sys.stderr)
        sys.exit(0)
    asyncio.run(serve(sys.argv[1:]))
