"""The least a Python HTTP server costs here: uvicorn as llamactl runs it, answering by itself.

    python -m bench.uvicorn_floor PORT

An ASGI app that reads the request body and answers with the stand-in's chat
completion, under uvicorn with llamactl's own settings (uvloop and httptools,
no access log, no lifespan). ``bench.proxy_overhead`` times it beside direct
access: llamactl does this much work for a request and, on top, an upstream
exchange, so its added latency cannot fall below this server's.
"""

from __future__ import annotations

import json
import sys

import uvicorn

from llamactl.server.asgi import Receive, Scope, Send

BODY = json.dumps(
    {
        "object": "chat.completion",
        "model": "bench",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8},
    }
).encode()
HEAD = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HEAD})
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    uvicorn.run(app, port=int(sys.argv[1]), lifespan="off", log_level="warning", access_log=False)
