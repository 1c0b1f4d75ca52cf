#!/usr/bin/env python3
"""The stack's S3 server: moto's, with one IAM user whose access key is the stack's own, and
every request checked against it. Started by scripts/stack.py with the project's venv Python.

    s3_server.py HOST PORT BUCKET RECORDING

The key comes from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), never argv.
moto keeps objects in memory: RECORDING holds every request since the first start, and each
start replays its writes, in process and before listening, so a stop/start keeps the artifacts
PostgreSQL's runs point at. moto's own control API (/moto-api/: reset the data, switch
authentication off, dump every object) is refused: it has no authentication of its own.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import sys
import threading
import urllib.parse
from pathlib import Path
from typing import Any

USER = "mlflow-stack"
# What the stack's key may do: everything in S3, nothing else (IAM, STS, ...).
POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}
# Paths answered by moto itself rather than by a signed AWS API call.
REFUSED_PREFIXES = ("/moto-api", "/latest/")
ACCESS_DENIED = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>AccessDenied</Code><Message>{why}</Message></Error>\n"
)
# The upload id of a multipart upload's parts and completion, in a raw query string.
UPLOAD_ID = re.compile(r"(^|&)uploadId=([^&]*)")
# Hop-by-hop and length headers: the replaying client sets its own.
SKIPPED_HEADERS = {"content-length", "transfer-encoding", "connection", "accept-encoding"}


def _seed_key(key_id: str, secret: str) -> None:
    """The IAM user of the stack, with the stack's access key (moto would make up its own)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.iam.models import iam_backends

    iam = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    iam.create_user(region_name="us-east-1", user_name=USER)
    iam.put_user_policy(USER, "s3-only", json.dumps(POLICY))
    key = iam.create_access_key(USER)
    del iam.access_keys[key.physical_resource_id]
    key.access_key_id, key.secret_access_key = key_id, secret
    iam.access_keys[key.physical_resource_id] = key


def _replay(app: Any, recording: Path) -> None:
    """Apply the recorded writes again, in process, and keep only the writes in the file.

    Not moto's own replay: a multipart upload gets a new upload id when replayed, and its
    recorded parts name the old one, so large artifacts (boto3 splits files over 8 MB) would
    be lost. Reads (GET, HEAD) change nothing and are dropped from the recording.
    """
    from werkzeug.test import Client

    client = Client(app)
    new_upload: dict[str, str] = {}  # key -> upload id of a replayed CreateMultipart not mapped
    upload_ids: dict[str, str] = {}  # recorded upload id -> replayed one
    kept, failed = [], []
    for line in recording.read_text().splitlines():
        entry = json.loads(line)
        if entry["method"] in ("GET", "HEAD"):
            continue
        kept.append(line)
        parts = urllib.parse.urlsplit(entry["url"])
        query = parts.query
        if found := UPLOAD_ID.search(query):
            old_id = found.group(2)
            if old_id not in upload_ids:
                upload_ids[old_id] = new_upload.pop(parts.path, old_id)
            new_id = upload_ids[old_id]
            query = UPLOAD_ID.sub(lambda m, new_id=new_id: f"{m[1]}uploadId={new_id}", query)
        body = entry.get("body") or ""
        data = base64.b64decode(body) if entry.get("body_encoded") else body.encode()
        headers = {k: v for k, v in entry["headers"].items() if k.lower() not in SKIPPED_HEADERS}
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "binary/octet-stream"  # what S3 assumes without one
        response = client.open(
            urllib.parse.unquote(parts.path),
            method=entry["method"],
            query_string=query,
            headers=headers,
            data=data,
        )
        text = response.get_data(as_text=True)
        if response.status_code >= 300:  # it may have failed the first time too: report, go on
            failed.append(f"{entry['method']} {parts.path} -> {response.status_code}")
        if entry["method"] == "POST" and "uploads" in query.split("&"):
            if found := re.search(r"<UploadId>([^<]+)</UploadId>", text):
                new_upload[parts.path] = urllib.parse.quote(found.group(1), safe="")
    if failed:
        print(f"s3: {len(failed)} recorded write(s) failed again, e.g. {failed[0]}", flush=True)
    tmp = recording.with_suffix(".tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept))
    tmp.chmod(0o600)
    os.replace(tmp, recording)
    print(f"s3: replayed {len(kept)} recorded write(s)", flush=True)


def _record_one_at_a_time(recorder: Any) -> None:
    """moto's recorder appends an entry in two buffered writes, and the server is threaded:
    two concurrent uploads interleaved their entries, and the next start could not read the
    recording. One lock around each entry keeps one request per line."""
    record, lock = recorder._record_request, threading.Lock()

    def locked(*args: Any, **kwargs: Any) -> None:
        with lock:
            record(*args, **kwargs)

    recorder._record_request = locked


def _signed_requests_only(app: Any) -> Any:
    """Refuse moto's control API, and requests without a signed Authorization header (moto
    answers them with a 500, or, presigned, cannot check them)."""

    def guarded(environ: dict, start_response: Any) -> Any:
        if environ.get("PATH_INFO", "").startswith(REFUSED_PREFIXES):
            why = "moto's control API is closed"
        elif "HTTP_AUTHORIZATION" not in environ:
            # Presigned URLs included: moto checks signatures in the Authorization header only.
            why = "requests without an Authorization header signed with the stack's key are refused"
        else:
            return app(environ, start_response)
        start_response("403 Forbidden", [("Content-Type", "application/xml")])
        return [ACCESS_DENIED.format(why=why).encode()]

    return guarded


def main(argv: list[str]) -> int:
    host, port, bucket, recording = argv[0], int(argv[1]), argv[2], Path(argv[3])
    key_id, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    os.environ.pop("MOTO_ENABLE_RECORDING", None)
    os.environ["MOTO_RECORDER_FILEPATH"] = str(recording)
    # Imported only now: moto's recorder reads its file's path when moto is imported.
    from moto import settings
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.moto_api import recorder
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from moto.s3.models import s3_backends
    from werkzeug.serving import run_simple

    app = DomainDispatcherApplication(create_backend_app)
    # Set-up and replay run unauthenticated, in process, before the port is open.
    settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
    _seed_key(key_id, secret)
    s3_backends[DEFAULT_ACCOUNT_ID]["aws"].create_bucket(bucket, "us-east-1")
    if recording.exists():
        _replay(app, recording)
    recording.touch(mode=0o600)
    recording.chmod(0o600)  # artifacts and request headers: the owner's only
    # From here on every request must be signed with the stack's key.
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0
    _record_one_at_a_time(recorder)
    recorder.start_recording()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"s3: listening on {host}:{port}, bucket {bucket!r}, signed requests only", flush=True)
    run_simple(
        host,
        port,
        _signed_requests_only(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
