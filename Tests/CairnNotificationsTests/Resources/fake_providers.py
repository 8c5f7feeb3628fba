"""Local fake email, push and SMS providers for tests (no outside network): SendGrid v3 Mail
Send, Google's OAuth 2.0 token endpoint + FCM HTTP v1, APNs, and Twilio's Messages resource,
served over TLS (a trustme CA) with HTTP/2 and HTTP/1.1 by hypercorn.

Credentials are checked with independent implementations (PyJWT + cryptography): the FCM
service account assertion (RS256, audience = this token URL), the APNs provider token (ES256,
kid and iss), the SendGrid API key, Twilio's HTTP Basic credentials (account SID and auth
token, RFC 7617) and form body. Behaviour by recipient, to exercise every outcome:
  email "bounce…"     400 (rejected)         email "throttle…"  429 once, then 202
  FCM "unregistered…" 404 UNREGISTERED       FCM "flaky…"       503 once, then 200
  APNs token "dead…"  410 Unregistered       APNs over HTTP/1.1 refused (400)
  SMS "+15005550001"  400 code 21211         SMS "+15005550009" 400 code 21614
  SMS "…4290"         429 once, then 201     SMS "…5030"        503 once, then 201
  SMS "…7770"         never answered once (prints {"stalled": to}), then 201: a provider
                      slower than the node's shutdown

Usage: fake_providers.py WORKDIR. Writes WORKDIR/setup.json (port, CA file, the credentials a
tenant configures) and then prints "ready"; then one JSON line per request:
{"path", "method", "httpVersion", "headers", "body", "status", "verified"}.
"""
import asyncio
import base64
import json
import re
import os
import socket
import sys
import time
import urllib.parse
import uuid

import jwt
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypercorn.asyncio import serve
from hypercorn.config import Config

workdir = sys.argv[1]
ca = trustme.CA()
cert = ca.issue_cert("127.0.0.1", "localhost")
ca_file = os.path.join(workdir, "ca.pem")
ca.cert_pem.write_to_path(ca_file)
cert_file = os.path.join(workdir, "cert.pem")
key_file = os.path.join(workdir, "key.pem")
cert.cert_chain_pems[0].write_to_path(cert_file)
cert.private_key_pem.write_to_path(key_file)

rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_key = ec.generate_private_key(ec.SECP256R1())


def pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(128)
port = sock.getsockname()[1]
base = f"https://127.0.0.1:{port}"
CLIENT_EMAIL = "cairn-test@cairn-test.iam.gserviceaccount.com"
TEAM_ID = "TEAM123456"
KEY_ID = "KEY1234567"
SENDGRID_KEY = "SG.test-key"
TWILIO_SID = "AC" + uuid.uuid4().hex
TWILIO_TOKEN = uuid.uuid4().hex
TWILIO_FROM = "+15005550006"
setup = {
    "port": port, "caFile": ca_file, "base": base, "sendgridKey": SENDGRID_KEY,
    "serviceAccount": {"type": "service_account", "project_id": "cairn-test", "private_key_id": "abc123",
                       "private_key": pem(rsa_key), "client_email": CLIENT_EMAIL,
                       "token_uri": "https://oauth2.googleapis.com/token"},
    "apns": {"teamId": TEAM_ID, "keyId": KEY_ID, "privateKey": pem(ec_key), "topic": "com.example.app"},
    "twilio": {"accountSid": TWILIO_SID, "authToken": TWILIO_TOKEN, "from": TWILIO_FROM},
}
with open(os.path.join(workdir, "setup.json"), "w") as f:
    json.dump(setup, f)

issued = set()
seen_once = set()


def once(key):
    """True the first time `key` is seen."""
    if key in seen_once:
        return False
    seen_once.add(key)
    return True


def twilio_error(status, code, message):
    return status, {}, {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
                        "status": status}


def handle_twilio(method, sid, headers, body):
    """Twilio's Messages resource: Basic auth with the account SID and auth token, a
    form-encoded To/From/Body, 201 with the message's sid."""
    try:
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        assert scheme == "Basic"
        assert base64.b64decode(credentials, validate=True).decode() == f"{TWILIO_SID}:{TWILIO_TOKEN}"
        assert sid == TWILIO_SID
    except Exception:  # noqa: BLE001 - any failure is a refused authentication
        return (*twilio_error(401, 20003, "Authenticate"), False)
    if method != "POST":
        return (*twilio_error(405, 20004, "Method not allowed"), False)
    if headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return (*twilio_error(400, 20001, "Unsupported content type"), False)
    form = urllib.parse.parse_qs(body.decode(), keep_blank_values=True, strict_parsing=True)
    if sorted(form) != ["Body", "From", "To"] or any(len(v) != 1 for v in form.values()):
        return (*twilio_error(400, 21602, "To, From and Body are required, once each"), False)
    to, sender, text = form["To"][0], form["From"][0], form["Body"][0]
    if sender != TWILIO_FROM:
        return (*twilio_error(400, 21212, "The 'From' number is not a valid phone number"), False)
    if not text or len(text) > 1600:
        return (*twilio_error(400, 21617, "The concatenated message body exceeds the 1600 character limit"), False)
    if not re.fullmatch(r"\+[1-9][0-9]{7,14}", to) or to == "+15005550001":
        return (*twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number."), True)
    if to == "+15005550009":
        return (*twilio_error(400, 21614, f"'To' number {to} is not a valid mobile number"), True)
    if to.endswith("4290") and once(to):
        return (*twilio_error(429, 20429, "Too Many Requests"), True)
    if to.endswith("5030") and once(to):
        return (*twilio_error(503, 20500, "Service Unavailable"), True)
    return 201, {}, {"sid": "SM" + uuid.uuid4().hex, "account_sid": TWILIO_SID, "to": to, "from": sender, "body": text,
                     "status": "queued", "num_segments": "1"}, True


def handle(path, version, headers, body, method="POST"):
    """(status, headers, body dict, verified)."""
    auth = headers.get("authorization", "")
    twilio = re.fullmatch(r"/2010-04-01/Accounts/([^/]+)/Messages\.json", path)
    if twilio:
        return handle_twilio(method, twilio.group(1), headers, body)
    if path == "/token":
        form = urllib.parse.parse_qs(body.decode())
        try:
            assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
            claims = jwt.decode(form["assertion"][0], rsa_key.public_key(), algorithms=["RS256"],
                                audience=f"{base}/token", issuer=CLIENT_EMAIL)
            assert claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
            assert isinstance(claims["iat"], int) and isinstance(claims["exp"], int), "whole seconds"
            assert claims["exp"] - claims["iat"] <= 3600
            assert jwt.get_unverified_header(form["assertion"][0]).get("kid") == "abc123"
        except Exception as error:  # noqa: BLE001 - any failure is a refused grant
            return 400, {}, {"error": "invalid_grant", "error_description": str(error)[:80]}, False
        token = f"ya29.fake-{uuid.uuid4().hex}"
        issued.add(token)
        return 200, {}, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}, True
    if path.startswith("/v1/projects/") and path.endswith("/messages:send"):
        if not auth.startswith("Bearer ") or auth[7:] not in issued:
            return 401, {}, {"error": {"code": 401, "status": "UNAUTHENTICATED"}}, False
        message = json.loads(body)["message"]
        token = message["token"]
        if token.startswith("unregistered"):
            return 404, {}, {"error": {"code": 404, "status": "NOT_FOUND", "details": [
                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}}, True
        if token.startswith("flaky") and once(token):
            return 503, {}, {"error": {"code": 503, "status": "UNAVAILABLE"}}, True
        return 200, {}, {"name": f"projects/cairn-test/messages/{uuid.uuid4().int % 10**16}"}, True
    if path.startswith("/3/device/"):
        if version != "2":
            return 400, {}, {"reason": "HTTP/2 required"}, False
        try:
            assert auth.lower().startswith("bearer ")
            token = auth[7:]
            assert jwt.get_unverified_header(token).get("kid") == KEY_ID
            claims = jwt.decode(token, ec_key.public_key(), algorithms=["ES256"], issuer=TEAM_ID,
                                options={"require": ["iat", "iss"]})
            assert isinstance(claims["iat"], int) and abs(claims["iat"] - time.time()) < 3600
        except Exception:  # noqa: BLE001
            return 403, {}, {"reason": "InvalidProviderToken"}, False
        if headers.get("apns-topic") != "com.example.app":
            return 400, {}, {"reason": "TopicDisallowed"}, True
        if len(body) > 4096:
            return 413, {}, {"reason": "PayloadTooLarge"}, True
        if path[len("/3/device/"):].startswith("dead"):
            return 410, {}, {"reason": "Unregistered", "timestamp": int(time.time() * 1000)}, True
        return 200, {"apns-id": headers.get("apns-id", str(uuid.uuid4()))}, None, True
    if path == "/v3/mail/send":
        if auth != f"Bearer {SENDGRID_KEY}":
            return 401, {}, {"errors": [{"message": "The provided authorization grant is invalid"}]}, False
        mail = json.loads(body)
        to = mail["personalizations"][0]["to"][0]["email"]
        if to.startswith("bounce"):
            return 400, {}, {"errors": [{"message": "Does not contain a valid address.", "field": "personalizations.0.to"}]}, True
        if to.startswith("throttle") and once(to):
            return 429, {}, {"errors": [{"message": "Too many requests"}]}, True
        return 202, {"x-message-id": uuid.uuid4().hex[:22]}, None, True
    return 404, {}, {"error": "not found"}, False


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        event = await receive()
        body += event.get("body", b"")
        if not event.get("more_body"):
            break
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    if scope["path"].endswith("/Messages.json"):
        to = urllib.parse.parse_qs(body.decode(errors="replace")).get("To", [""])[0]
        if to.endswith("7770") and once("stall " + to):
            print(json.dumps({"stalled": to}), flush=True)
            await asyncio.sleep(3600)
            return
    status, extra, answer, verified = handle(scope["path"], scope["http_version"], headers, body, scope["method"])
    record = {"path": scope["path"], "method": scope["method"], "httpVersion": scope["http_version"], "headers": headers,
              "body": body.decode(errors="replace"), "status": status, "verified": verified}
    print(json.dumps(record), flush=True)
    payload = b"" if answer is None else json.dumps(answer).encode()
    response_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    response_headers += [(k.encode(), v.encode()) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": payload})


config = Config()
config.bind = [f"fd://{sock.fileno()}"]
config.certfile = cert_file
config.keyfile = key_file
config.alpn_protocols = ["h2", "http/1.1"]
config.accesslog = None
config.errorlog = None
print("ready", flush=True)
asyncio.run(serve(app, config))
