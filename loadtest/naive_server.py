"""A naive text-generation server, for comparison only.

    python -m loadtest.naive_server --name bard --port 8100

One process, the model loaded at start, a thread per request, and each request runs its own
sampling loop of compiled batch-1 steps (`benchmarks.baseline`, the reference's way of
sampling): no batching across requests. It speaks enough of the rnnserve API (`GET /models`,
`POST /models/{name}/generate`, plain or streamed) for loadtest/locustfile.py to drive it
unchanged.
"""

from __future__ import annotations

import argparse
import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from benchmarks.baseline import PerRequestSampler
from models.artifacts import load_charrnn
from registry import Registry, Settings

GENERATE = re.compile(r"^/models/([^/]+)/generate$")


def make_handler(name: str, sampler: PerRequestSampler, vocab):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep the benchmark's output readable
            pass

        def _json(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/models":
                return self._json(200, {"models": [{"name": name, "kind": "charrnn",
                                                    "status": "ready", "production_version": 1}]})
            self._json(404, {"error": "not found"})

        def do_POST(self):
            match = GENERATE.match(self.path)
            if not match or match.group(1) != name:
                return self._json(404, {"error": "not found"})
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            prime = request.get("prime", "") or "\n"
            ids = sampler.sample([int(i) for i in vocab.encode(prime)],
                                 int(request.get("max_length", 200)),
                                 np.random.default_rng(request.get("seed")))
            if not request.get("stream"):
                text = vocab.decode(list(ids))
                return self._json(200, {"text": request.get("prime", "") + text,
                                        "generated": text})
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for char_id in ids:
                data = vocab.chars[char_id].encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args(argv)
    _, directory = Registry(Settings.from_env()).fetch_version(args.name, args.version)
    model, config, vocab = load_charrnn(directory)
    server = ThreadingHTTPServer((args.host, args.port),
                                 make_handler(args.name, PerRequestSampler(model, config), vocab))
    print(f"naive server for {args.name} on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
