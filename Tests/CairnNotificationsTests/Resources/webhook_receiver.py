"""A local webhook receiver for tests: verifies Standard Webhooks signatures with Python's
own hmac (an independent implementation), answers 500 to the first FAIL requests and 200
after, and prints one JSON line per request: {"status", "verified", "verifiedBy", "signature", "id", "body"}.
"verified" checks the first secret; "verifiedBy" says, for each secret, whether the Standard
Webhooks package's own verifier (`standardwebhooks`) accepts the request with it (a secret
rotation signs with the old and the new secret during its overlap).

Usage: webhook_receiver.py SECRET_FILE FAIL  (prints "port N" first; the secrets, one a line,
are read from SECRET_FILE at each request, so a test can write them after registering the
endpoint)."""
import base64
import hashlib
import hmac
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    import standardwebhooks
except ImportError:  # only the rotation test needs it (CI installs it)
    standardwebhooks = None

secret_file = sys.argv[1]
fail = int(sys.argv[2])
seen = 0
# Requests run on threads of their own: the count and the output are shared (print() writes a
# line and its newline separately, so concurrent lines could merge into one unparseable line).
lock = threading.Lock()


def secrets():
    with open(secret_file) as f:
        return [line.strip() for line in f.read().splitlines() if line.strip()]


def verified_by(headers, body):
    if standardwebhooks is None:
        return None
    results = []
    for secret in secrets():
        try:
            standardwebhooks.Webhook(secret).verify(body, dict(headers.items()))
            results.append(True)
        except Exception:
            results.append(False)
    return results


def verify(msg_id, timestamp, body, header):
    secret = (secrets() or ["whsec_"])[0]
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(part == f"v1,{expected}" for part in header.split(" "))


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        global seen
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        with lock:
            seen += 1
            status = 500 if seen <= fail else 200
        ok = verify(self.headers.get("webhook-id", ""), self.headers.get("webhook-timestamp", ""), body,
                    self.headers.get("webhook-signature", ""))
        line = json.dumps({"status": status, "verified": ok, "verifiedBy": verified_by(self.headers, body),
                           "signature": self.headers.get("webhook-signature"),
                           "id": self.headers.get("webhook-id"), "body": json.loads(body)})
        with lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"port {server.server_address[1]}", flush=True)
server.serve_forever()
