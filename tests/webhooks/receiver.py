"""A webhook receiver for Broker's tests.

Every POST to /hook is verified with standardwebhooks.Webhook(SECRET).verify (the signature and
the timestamp's age) and answered with the current status (200 unless told otherwise); one JSON
line per request goes to stdout:
  {"verified": true, "id": <webhook-id>, "type": ..., "seq": data.id, "data": data.data,
   "status": <answered>}     or {"verified": false, "error": ...} (answered 401).
POST /status/<code> makes later deliveries answer <code> (unsigned: the test's own control).
POST /secret with a new secret as the body verifies with that one from then on.
POST /delay/<ms> makes each delivery wait that long before it is answered.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

lock = threading.Lock()
state = {"status": 200, "delay": 0.0, "webhook": Webhook(sys.argv[1])}


def emit(record):
    with lock:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status):
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        if self.path.startswith("/status/"):
            with lock:
                state["status"] = int(self.path.rsplit("/", 1)[1])
            return self.answer(204)
        if self.path.startswith("/delay/"):
            with lock:
                state["delay"] = int(self.path.rsplit("/", 1)[1]) / 1000
            return self.answer(204)
        if self.path == "/secret":
            with lock:
                state["webhook"] = Webhook(body.decode())
            return self.answer(204)
        with lock:
            webhook, status, delay = state["webhook"], state["status"], state["delay"]
        time.sleep(delay)
        try:
            payload = webhook.verify(body, dict(self.headers.items()))
        except WebhookVerificationError as error:
            emit({"verified": False, "error": str(error)})
            return self.answer(401)
        emit({
            "verified": True,
            "id": self.headers.get("webhook-id"),
            "type": payload["type"],
            "seq": payload["data"]["id"],
            "data": payload["data"]["data"],
            "username": payload["data"]["username"],
            "status": status,
        })
        self.answer(status)


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A Broker killed mid-request (as the crash tests do) resets its connection: expected.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


server = Server(("127.0.0.1", 0), Handler)
emit({"listening": server.server_address[1]})
server.serve_forever()
