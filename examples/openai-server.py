#!/usr/bin/env python3
"""A small OpenAI-compatible server that echoes: what vLLM, llama.cpp's
`llama-server` or SGLang answer, reduced to an echo, so `endpoint-openai.yaml`
runs on any machine with Python 3 and nothing else (standard library only).

It listens on `$PORT`, serves HTTPS with `$GPUCTL_TLS_CERT`/`$GPUCTL_TLS_KEY`
when both are set (the node gives every replica a certificate), and answers:

- `GET /health`: 200 once it listens (the gateway's readiness check);
- `GET /v1/models`: the one model it serves (`$MODEL_NAME`, default "chat");
- `POST /v1/chat/completions`: "echo: " + the last message, streamed as
  server-sent events when `"stream": true` (with a usage chunk when
  `stream_options.include_usage` is true);
- `POST /v1/completions`: "echo: " + the prompt;
- `POST /v1/embeddings`: a fixed vector per input.

Usage figures are fixed (3 prompt tokens, 2 completion tokens).
"""

import json
import os
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = os.environ.get("MODEL_NAME", "chat")
USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
MAX_BODY = 1 << 20


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a connection may sit idle or send slowly

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    def send_json(self, status, value):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def error(self, status, message, kind="invalid_request_error"):
        self.send_json(status, {"error": {"message": message, "type": kind, "param": None}})

    def do_GET(self):
        if self.path == "/health":
            self.send_json(200, {})
        elif self.path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [
                {"id": MODEL, "object": "model", "created": 0, "owned_by": "gpuctl-example"}]})
        else:
            self.error(404, "no route %s" % self.path)

    def read_json(self):
        try:
            length = int(self.headers.get("content-length", "0"))
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.error(400, "the body must have a content-length of at most %d bytes" % MAX_BODY)
            return None
        try:
            return json.loads(self.rfile.read(length) or b"{}")
        except ValueError as e:
            self.error(400, "the body is not JSON: %s" % e)
            return None

    def do_POST(self):
        req = self.read_json()
        if req is None:
            return
        if req.get("model") != MODEL:
            self.error(404, "The model `%s` does not exist." % req.get("model"), "NotFoundError")
        elif self.path == "/v1/chat/completions":
            messages = req.get("messages") or [{}]
            text = "echo: %s" % (messages[-1].get("content") or "")
            if req.get("stream"):
                include_usage = (req.get("stream_options") or {}).get("include_usage")
                self.stream_chat(text, include_usage)
            else:
                self.send_json(200, {
                    "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
                    "model": MODEL, "usage": USAGE,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}]})
        elif self.path == "/v1/completions":
            self.send_json(200, {
                "id": "cmpl-1", "object": "text_completion", "created": int(time.time()),
                "model": MODEL, "usage": USAGE,
                "choices": [{"index": 0, "text": "echo: %s" % req.get("prompt", ""),
                             "logprobs": None, "finish_reason": "stop"}]})
        elif self.path == "/v1/embeddings":
            inputs = req.get("input")
            inputs = inputs if isinstance(inputs, list) else [inputs]
            self.send_json(200, {
                "object": "list", "model": MODEL,
                "usage": {"prompt_tokens": 3, "total_tokens": 3},
                "data": [{"object": "embedding", "index": i, "embedding": [0.5, 0.25, 0.125]}
                         for i in range(len(inputs))]})
        else:
            self.error(404, "no route %s" % self.path)

    def stream_chat(self, text, include_usage):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

        def event(value):
            data = b"data: " + (value if isinstance(value, bytes) else json.dumps(value).encode()) + b"\n\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def chunk(delta, finish):
            return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": MODEL, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        head, _, rest = text.partition(":")
        event(chunk({"role": "assistant", "content": head}, None))
        time.sleep(0.005)
        event(chunk({"content": ":" + rest}, None))
        event(chunk({}, "stop"))
        if include_usage:
            event({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(time.time()),
                   "model": MODEL, "choices": [], "usage": USAGE})
        event(b"[DONE]")
        self.wfile.write(b"0\r\n\r\n")


def main():
    port = int(os.environ.get("PORT", "8000"))
    server = ThreadingHTTPServer(("", port), Handler)
    server.daemon_threads = True
    cert, key = os.environ.get("GPUCTL_TLS_CERT"), os.environ.get("GPUCTL_TLS_KEY")
    if cert and key:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        # The handshake happens on the connection's own thread, so a slow client
        # never holds up the accept loop.
        server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    print("serving %s on port %d (%s)" % (MODEL, port, "https" if cert and key else "http"), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
