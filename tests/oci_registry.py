"""A real registry for the tests: Debian's ``docker-registry`` (distribution 2.8) on 127.0.0.1.

- :class:`LocalRegistry` starts ``docker-registry serve`` with a config file of its own (a free
  port, a temporary storage directory; optionally htpasswd basic auth or token auth), never
  the package's systemd service, and stops it by its pid.
- :class:`CountingProxy` sits in front of it (a thread of the test process): it counts the
  requests by kind (manifest, blob, token) and can inject faults — 503s, a blob transfer cut
  off half way — so retries and ``Range`` resumption are tested against the real registry.
- :class:`TokenServer` is a small bearer-token service (Docker's token.md): it checks basic
  credentials and signs an RS256 JWT with ``openssl`` for the scopes asked, with the
  certificate in the ``x5c`` header, which the registry verifies against its root bundle.
- :func:`write_layout` writes OCI image layouts by hand (gzip, zstd or plain layers, a
  multi-platform index) and :func:`skopeo_copy` copies them into the registry.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import http.client
import http.server
import io
import json
import os
import secrets
import socket
import subprocess
import tarfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

BUSYBOX = "/bin/busybox"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(port: int, deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/v2/")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answers on 127.0.0.1:{port}")


class LocalRegistry:
    """``docker-registry serve CONFIG`` on 127.0.0.1:PORT with storage under ``workdir``."""

    def __init__(self, workdir: Path, auth: dict[str, Any] | None = None) -> None:
        self.workdir = workdir
        self.storage = workdir / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = workdir / "registry.log"
        auth_yaml = ""
        if auth and "htpasswd" in auth:
            auth_yaml = (f"auth:\n  htpasswd:\n    realm: test-realm\n"
                         f"    path: {auth['htpasswd']}\n")
        elif auth and "token" in auth:
            t = auth["token"]
            auth_yaml = (f"auth:\n  token:\n    realm: {t['realm']}\n    service: {t['service']}\n"
                         f"    issuer: {t['issuer']}\n    rootcertbundle: {t['cert']}\n")
        self.config = workdir / "config.yml"
        self.config.write_text(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n  secret: {secrets.token_hex(16)}\n"
            + auth_yaml)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.config)],
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        try:
            _wait_http(self.port)
        except Exception:
            self.stop()
            raise

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def blob_path(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes."""
        hexd = digest.removeprefix("sha256:")
        return (self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _serve(handler: type[http.server.BaseHTTPRequestHandler],
           ) -> tuple[http.server.ThreadingHTTPServer, int]:
    """An HTTP server of the tests on a free port of 127.0.0.1, served by a daemon thread
    (``server.shutdown()`` and ``server_close()`` stop it); (server, port)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, int(server.server_address[1])


@dataclass
class Faults:
    """What the proxy does wrong on purpose (each counter is used up as it fires)."""

    fail_status: int = 503
    fail_next: int = 0                 # answer the next N requests with fail_status
    cut_blob_after: int | None = None  # cut the next blob body after so many bytes
    cuts: int = 0


class CountingProxy:
    """A threaded HTTP proxy to ``target`` that counts requests and injects faults."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.faults = Faults()
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy.lock:
                    proxy.requests.append((self.command, self.path, dict(self.headers)))
                    fail = proxy.faults.fail_next > 0
                    if fail:
                        proxy.faults.fail_next -= 1
                    cut = proxy.faults.cut_blob_after if (
                        "/blobs/sha256:" in self.path and self.command == "GET") else None
                if fail:
                    self.send_response(proxy.faults.fail_status)
                    self.send_header("Content-Length", "0")
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection("127.0.0.1", proxy.target_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = f"127.0.0.1:{proxy.target_port}"
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if cut is not None:
                    with proxy.lock:  # cut the first blob longer than the limit, once
                        if len(data) > cut and proxy.faults.cut_blob_after is not None:
                            proxy.faults.cut_blob_after = None
                            proxy.faults.cuts += 1
                        else:
                            cut = None
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v.replace(f"127.0.0.1:{proxy.target_port}",
                                                      f"127.0.0.1:{proxy.port}"))
                self.send_header("Content-Length", str(len(data)))
                if cut is not None:
                    self.send_header("Connection", "close")
                self.end_headers()
                if self.command == "HEAD":
                    return
                if cut is not None:
                    self.wfile.write(data[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward

        self.server, self.port = _serve(Handler)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def count(self, kind: str, method: str = "GET") -> int:
        """Requests of ``method`` whose path is of ``kind`` (``blobs``, ``manifests``)."""
        with self.lock:
            return sum(1 for m, p, _ in self.requests if m == method and f"/{kind}/" in p)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.faults = Faults()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Docker's token protocol: GET /token?service=S&scope=repository:NAME:ACTIONS."""

    def __init__(self, workdir: Path, users: dict[str, str], service: str = "test-registry",
                 issuer: str = "test-issuer") -> None:
        self.key = workdir / "token.key"
        self.cert = workdir / "token.crt"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=test-token-issuer", "-keyout", str(self.key),
                        "-out", str(self.cert)], check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.users, self.service, self.issuer = users, service, issuer
        self.requests: list[tuple[str | None, list[str]]] = []
        server_self = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                user = None
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    if server_self.users.get(name) != password:
                        self._send(401, b'{"details":"bad credentials"}')
                        return
                    user = name
                scopes = query.get("scope", [])
                server_self.requests.append((user, scopes))
                access = []
                for scope in scopes:
                    kind, _, rest = scope.partition(":")
                    name, _, actions = rest.rpartition(":")
                    if user is not None:  # anonymous users get a token granting nothing
                        access.append({"type": kind, "name": name,
                                       "actions": actions.split(",")})
                token = server_self.sign(user or "", access)
                self._send(200, json.dumps({"token": token, "expires_in": 300}).encode())

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server, self.port = _serve(Handler)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def sign(self, subject: str, access: list[dict[str, Any]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing_input = (_b64url(json.dumps(header).encode()) + "."
                         + _b64url(json.dumps(claims).encode()))
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                             input=signing_input.encode(), check=True,
                             capture_output=True).stdout
        return signing_input + "." + _b64url(sig)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ----------------------------------------------------------------------------- OCI layouts
@dataclass
class Layer:
    """A layer's files: path -> bytes (or a callable-free tuple ('link', target))."""

    files: dict[str, bytes | tuple[str, str]] = field(default_factory=dict)
    compression: str = "gzip"  # gzip | zstd | none


def layer_tar(layer: Layer) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for path in sorted(layer.files):
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1700000000
                    tar.addfile(info)
            content = layer.files[path]
            info = tarfile.TarInfo(path)
            info.mtime = 1700000000
            if isinstance(content, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, content[1]
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o755
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


_MEDIA = {"gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
          "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
          "none": "application/vnd.oci.image.layer.v1.tar"}


def _put_blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (blobs / digest[7:]).write_bytes(data)
    return digest, len(data)


def _compress(raw: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(raw, compresslevel=1, mtime=0)
    if how == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(raw)
    return raw


def write_image(layout: Path, layers: list[Layer], arch: str = "amd64",
                config_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write one image's blobs into ``layout``; return its manifest descriptor."""
    descs, diff_ids = [], []
    for layer in layers:
        raw = layer_tar(layer)
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        digest, size = _put_blob(layout, _compress(raw, layer.compression))
        descs.append({"mediaType": _MEDIA[layer.compression], "digest": digest, "size": size})
    config = {"architecture": arch, "os": "linux", "created": "2026-01-01T00:00:00Z",
              "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], **(config_extra or {})},
              "rootfs": {"type": "layers", "diff_ids": diff_ids},
              "history": [{"created_by": f"layer {i}"} for i in range(len(layers))]}
    cdigest, csize = _put_blob(layout, json.dumps(config).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": cdigest, "size": csize}, "layers": descs}
    mdigest, msize = _put_blob(layout, json.dumps(manifest).encode())
    return {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdigest,
            "size": msize, "platform": {"os": "linux", "architecture": arch}}


def write_layout(layout: Path, tag: str, images: list[dict[str, Any]],
                 multi: bool = False) -> str:
    """An OCI layout whose ``tag`` is one manifest, or (``multi``) an index of several."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    if multi:
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": images}
        digest, size = _put_blob(layout, json.dumps(index).encode())
        top = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest,
               "size": size}
    else:
        top = dict(images[0])
        top.pop("platform", None)
    top["annotations"] = {"org.opencontainers.image.ref.name": tag}
    (layout / "index.json").write_text(json.dumps(
        {"schemaVersion": 2, "manifests": [top]}))
    return str(top["digest"])


def skopeo_copy(layout: Path, tag: str, dest: str, creds: str | None = None) -> None:
    """Copy ``layout:tag`` (every platform, digests kept) to ``docker://dest``."""
    cmd = ["skopeo", "copy", "--quiet", "--all", "--preserve-digests",
           "--dest-tls-verify=false"]
    if creds:
        cmd += ["--dest-creds", creds]
    cmd += [f"oci:{layout}:{tag}", f"docker://{dest}"]
    env = {**os.environ, "HOME": str(layout.parent), "XDG_RUNTIME_DIR": str(layout.parent)}
    subprocess.run(cmd, check=True, capture_output=True, env=env, timeout=120)


def busybox_layer(compression: str = "gzip", extra: dict[str, bytes] | None = None) -> Layer:
    """A layer with the host's static busybox as /bin/busybox and /bin/sh."""
    files: dict[str, bytes | tuple[str, str]] = {
        "bin/busybox": Path(BUSYBOX).read_bytes(), "bin/sh": ("link", "busybox"),
        "bin/cat": ("link", "busybox"), "bin/echo": ("link", "busybox")}
    files.update(extra or {})
    return Layer(files, compression)
