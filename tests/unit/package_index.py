"""A package index on 127.0.0.1 for the tests of what the tool downloads: it serves the
files under a directory, a project page ``<dir>/<project>/`` from its ``index.json``
(the JSON simple API, PEP 691) or ``index.html`` (PEP 503), nothing else (404); with
a file ``<dir>/password``, only to user ``me`` with that password (else 401).

It stands in for the configured index only around the real one: the integration test
``test_vllm_configure.py`` downloads a real vLLM sdist from it.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

JSON_TYPE = "application/vnd.pypi.simple.v1+json"


class _Handler(http.server.BaseHTTPRequestHandler):
    root: Path
    delay: float  # seconds between chunks of a file (a slow index), 0: at once
    files_asked: list[str]  # every file (not page) asked for, in order

    CHUNK = 16 * 1024

    def do_GET(self) -> None:
        password = self.root / "password"  # if there: Basic auth as user "me"
        if password.is_file():
            token = base64.b64encode(f"me:{password.read_text()}".encode()).decode()
            if self.headers.get("Authorization") != f"Basic {token}":
                self.send_error(401)
                return
        path = self.root / self.path.split("?", 1)[0].strip("/")
        if self.path.endswith("/"):
            pages = ((path / "index.json", JSON_TYPE), (path / "index.html", "text/html"))
            found = next(((p, kind) for p, kind in pages if p.is_file()), None)
        else:
            found = (path, "application/octet-stream") if path.is_file() else None
        if found is None or self.root.resolve() not in found[0].resolve().parents:
            self.send_error(404)
            return
        body = found[0].read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", found[1])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path.endswith("/"):
            self.wfile.write(body)
            return
        self.files_asked.append(self.path)
        for start in range(0, len(body), self.CHUNK):
            try:
                self.wfile.write(body[start : start + self.CHUNK])
                self.wfile.flush()
            except OSError:
                return  # the client went away (killed mid-download)
            time.sleep(self.delay)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the tests' output is theirs


@contextmanager
def serving(
    root: Path, *, delay: float = 0.0, files_asked: list[str] | None = None
) -> Iterator[str]:
    """The index URL (``http://127.0.0.1:PORT/simple``) of ``root/simple``, served
    while the block runs; files sent in 16 kB chunks ``delay`` seconds apart (a slow
    index), each file's path appended to ``files_asked`` when it is asked for."""
    attributes = {
        "root": root,
        "delay": delay,
        "files_asked": [] if files_asked is None else files_asked,
    }
    handler = type("Handler", (_Handler,), attributes)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def publish(
    root: Path,
    project: str,
    filename: str,
    data: bytes,
    *,
    sha256: str | None = None,
    html: bool = False,
) -> None:
    """``filename`` (content ``data``) added to ``project``'s page, with ``sha256`` as
    its published digest (default: the true one)."""
    digest = hashlib.sha256(data).hexdigest() if sha256 is None else sha256
    (root / "files").mkdir(parents=True, exist_ok=True)
    (root / "files" / filename).write_bytes(data)
    page = root / "simple" / project
    page.mkdir(parents=True, exist_ok=True)
    if html:
        link = f'<a href="../../files/{filename}#sha256={digest}">{filename}</a>\n'
        with (page / "index.html").open("a") as anchors:
            anchors.write(link)
        return
    entry = {"filename": filename, "url": f"../../files/{filename}", "hashes": {"sha256": digest}}
    listing = page / "index.json"
    known = json.loads(listing.read_text())["files"] if listing.is_file() else []
    listing.write_text(json.dumps({"meta": {"api-version": "1.0"}, "files": [*known, entry]}))


def sdist_bytes(members: dict[str, bytes], *, links: tuple[str, ...] = ()) -> bytes:
    """A ``.tar.gz`` of ``members`` (full member names, hostile ones too) and of
    symbolic links named ``links`` (to /etc/passwd)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name in links:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            archive.addfile(info)
    return buffer.getvalue()
