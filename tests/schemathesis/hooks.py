"""Schemathesis hooks for Broker, loaded by ./run.

Admin calls carry the admin token in their JSON body, where no OpenAPI security scheme can put it.
Before each call, a body's string `admin_token` becomes the real one (BROKER_ADMIN_TOKEN), in every
phase, so that generated bodies reach past the token check. One body in eight, picked by a hash of
the body so that a failure replays the same way, keeps its generated token and exercises the
refusal. A token of the wrong type (a deliberately invalid body) is left alone.

Schemathesis reuses values it saw in answers, such as usernames from /list_users. The user whose JWT
(BROKER_JWT) authenticates the run must not be revoked, moved or given a new password by it, or
every later authenticated call would only be refused: calls naming that user name another instead.
"""

import base64
import json
import os
import zlib

import schemathesis

ADMIN_TOKEN = os.environ["BROKER_ADMIN_TOKEN"]


def _jwt_subject(jwt):
    payload = jwt.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims["sub"]


FIXTURE_USER = _jwt_subject(os.environ["BROKER_JWT"])


@schemathesis.hook
def before_call(context, case, kwargs):
    body = case.body
    if not isinstance(body, dict):
        return
    if body.get("username") == FIXTURE_USER:
        body["username"] = "not-" + FIXTURE_USER
    if isinstance(body.get("admin_token"), str):
        digest = zlib.crc32(json.dumps(body, sort_keys=True, default=str).encode("utf-8", "surrogatepass"))
        if digest % 8 != 0:
            body["admin_token"] = ADMIN_TOKEN
