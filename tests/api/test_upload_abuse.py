"""Upload abuse against a real `regulus serve` process (issue 20): 100 MB bodies sent without a
key, to a route that takes no multipart, and as uploads over the limit, leave the server's memory
where it was and get the error body. benchmarks/request_abuse.py measures the same at 500 MB."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from core.models import Role
from tests.helpers import make_settings, new_key, served_regulus

MIB = 2**20
BODY_MIB = 100
BLOCK = b"x" * MIB
HEAD = (
    b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="big.md"\r\n'
    b"Content-Type: text/markdown\r\n\r\n"
)
TAIL = b"\r\n--xyz--\r\n"
# Growth tolerated while a 100 MB body arrives: far below the body, above the noise of answering.
RSS_BOUND = 30 * MIB


def server_process(port: int) -> psutil.Process:
    """The `regulus serve` child of this test process listening on `port`."""
    [process] = [
        p for p in psutil.Process().children() if f"--port {port}" in " ".join(p.cmdline())
    ]
    return process


@dataclass
class Sent:
    status: int | None = None
    body: object = None
    growth: int = 0


def post_big(
    port: int, path: str, key: str | None, declare_length: bool, server: psutil.Process
) -> Sent:
    """POST a 100 MB multipart body made on the fly (whole, whatever the server answers) while
    sampling the server's RSS; the response is read as soon as it comes."""
    headers = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: multipart/form-data; boundary=xyz",
        f"Content-Length: {len(HEAD) + BODY_MIB * MIB + len(TAIL)}"
        if declare_length
        else "Transfer-Encoding: chunked",
        *([f"Authorization: Bearer {key}"] if key else []),
    ]
    sent = Sent()
    before = peak = server.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, server.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    sock = socket.create_connection(("127.0.0.1", port))

    def read() -> None:
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
            sent.status = response.status
            sent.body = json.loads(response.read())
        except (OSError, ValueError, http.client.HTTPException) as error:
            sent.body = repr(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
        for piece in (HEAD, *([BLOCK] * BODY_MIB), TAIL):
            sock.sendall(piece if declare_length else b"%x\r\n%s\r\n" % (len(piece), piece))
        if not declare_length:
            sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server may drop the connection once it has answered
    reader.join(timeout=120)
    sock.close()
    time.sleep(0.2)  # what the request left behind, after its response
    done.set()
    sampler.join()
    sent.growth = max(peak, server.memory_info().rss) - before
    return sent


def _error_code(sent: Sent) -> str | None:
    body = sent.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"].get("code")
    return None


@pytest.mark.integration
def test_big_bodies_leave_the_servers_memory_where_it_was(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = make_settings(data_dir)
    admin, analyst = new_key(settings, Role.ADMIN), new_key(settings, Role.ANALYST)
    outcomes = {}
    with served_regulus(data_dir, REGULUS_MAX_UPLOAD_MB="10") as url:
        port = int(url.rsplit(":", 1)[1])
        server = server_process(port)
        cases = {
            "no key, query": ("/v1/query", None),
            "no key, upload": ("/v1/ingest/jobs", None),
            "analyst, multipart query": ("/v1/query", analyst),
            "admin, upload over the limit": ("/v1/ingest/jobs", admin),
        }
        for name, (path, key) in cases.items():
            for declare_length in (True, False):
                sent = post_big(port, path, key, declare_length, server)
                outcomes[name, declare_length] = (sent.status, _error_code(sent), sent.growth)
    grown = {case: outcome[2] / MIB for case, outcome in outcomes.items() if outcome[2] > RSS_BOUND}
    assert grown == {}, f"server RSS grew by MB: {grown}"
    statuses = {case: outcome[:2] for case, outcome in outcomes.items()}
    assert statuses == {
        ("no key, query", True): (401, "unauthorized"),
        ("no key, query", False): (401, "unauthorized"),
        ("no key, upload", True): (401, "unauthorized"),
        ("no key, upload", False): (401, "unauthorized"),
        ("analyst, multipart query", True): (415, "unsupported_media_type"),
        ("analyst, multipart query", False): (415, "unsupported_media_type"),
        ("admin, upload over the limit", True): (413, "too_large"),
        ("admin, upload over the limit", False): (413, "too_large"),
    }
