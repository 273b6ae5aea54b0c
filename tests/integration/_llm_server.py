"""A local OpenAI-compatible chat endpoint on loopback for the LLM tests: answers, rate-limits, refuses.

`script` maps an API key to the HTTP statuses it answers in turn (the last one repeats); a key
not in the script answers 200. A 200 carries a chat completion whose content is `reply(facts)`,
facts being the JSON the generator put in the last message (or the raw text if it is not JSON).
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


def digest(facts: Any) -> str:
    if not isinstance(facts, dict):
        return json.dumps({"summary": "A digest.", "tips": ["A tip."]})
    suggestions = facts.get("suggestions") or [{"product_name": "nothing new"}]
    return json.dumps({"summary": f"{facts['orders']} orders, {facts['spend']:.2f} spent.",
                       "tips": [f"Try {suggestions[0]['product_name']}.", "Order on a fixed day."]})


class ChatServer:
    def __init__(self, script: dict[str, list[int]] | None = None, reply: Callable[[Any], str] = digest) -> None:
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.reply = reply
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "ChatServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def keys_used(self) -> list[str]:
        return [r["key"] for r in self.requests]

    def _status(self, key: str) -> int:
        with self._lock:
            statuses = self.script.get(key)
            if not statuses:
                return 200
            return statuses.pop(0) if len(statuses) > 1 else statuses[0]

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                with server._lock:
                    server.requests.append({"path": self.path, "key": key, "payload": payload})
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                status = server._status(key)
                if status == 429:
                    return self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": "0"})
                if status != 200:
                    return self._send(status, {"error": {"message": f"status {status}"}})
                content = payload["messages"][-1]["content"]
                try:
                    facts = json.loads(content)
                except ValueError:
                    facts = content
                self._send(200, {"id": "chatcmpl-test", "object": "chat.completion", "model": payload["model"],
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": server.reply(facts)}}]})

        return Handler
