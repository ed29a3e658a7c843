"""An OCI distribution-spec client: manifests and blobs over HTTP(S), with Docker's auth flows.

HTTP goes through urllib3, not the standard library and not httpx: urllib3 has one dependency
(none), a thread-safe connection pool (the pull downloads several blobs at once over kept-alive
connections), streaming bodies without decoding (a blob is hashed exactly as it arrives),
certificate verification against the system's trust store by default, redirects that drop
``Authorization`` when they leave the host (blob storage behind a registry), and it is the
library under pip and requests. httpx would bring httpcore, h11, anyio and sniffio for an API
we would use synchronously.

What it speaks (distribution-spec ``spec.md``, Docker's ``token.md``):

- plain HTTP only to loopback registries (``localhost``, ``127.0.0.0/8``, ``[::1]``, as Docker)
  and to those listed in ``$NBCONTAINER_INSECURE_REGISTRIES`` (comma separated); HTTPS with a
  verified certificate otherwise;
- anonymous access, HTTP basic (``WWW-Authenticate: Basic``) and the bearer-token challenge
  (``WWW-Authenticate: Bearer realm=...,service=...,scope=...``: a token is fetched from the
  realm, with the stored credentials when there are any, and kept per scope);
- retries with exponential backoff (honouring ``Retry-After``) on 429 and 5xx and on connection
  errors; a blob whose download breaks off resumes from where it stopped with ``Range``;
- errors in words, from the status and the registry's ``{"errors": [{"code": ...}]}`` body.

``$NBCONTAINER_REGISTRY_ALLOW`` (comma separated registries), when set, is the list of the only
registries this process may contact: the test suite sets it to the loopback so that no test can
ever reach a registry on the internet.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import urllib3

from nbcontainer.errors import RegistryError
from nbcontainer.reference import Reference, is_loopback
from nbcontainer.registry.credentials import Credentials, get_credentials

MAX_MANIFEST = 4 << 20
RETRY_STATUSES = (429, 500, 502, 503, 504)
_CHUNK = 1 << 20
_PARAM = re.compile(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header: the scheme and its parameters."""

    scheme: str
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge:
    """``Bearer realm="...",service="...",scope="a,b"`` -> Challenge (quoted commas kept)."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
              for m in _PARAM.finditer(rest)}
    return Challenge(scheme.lower(), params)


def insecure_registries() -> set[str]:
    """Registries configured to be reached over plain HTTP (besides the loopback ones)."""
    raw = os.environ.get("NBCONTAINER_INSECURE_REGISTRIES", "")
    return {item.strip() for item in raw.split(",") if item.strip()}


def check_allowed(domain: str) -> None:
    """Refuse a registry outside ``$NBCONTAINER_REGISTRY_ALLOW`` (when that is set)."""
    raw = os.environ.get("NBCONTAINER_REGISTRY_ALLOW")
    if raw is None:
        return
    allowed = {item.strip() for item in raw.split(",") if item.strip()}
    host = domain.rsplit(":", 1)[0] if domain.count(":") == 1 else domain
    if domain not in allowed and host not in allowed:
        raise RegistryError(f"the registry {domain} is not one this process may contact "
                            f"(NBCONTAINER_REGISTRY_ALLOW={raw}); nothing was pulled")


class _Abort(Exception):
    """Another download of the same pull failed: stop this one quietly."""


class RegistryClient:
    """One registry: a connection pool, the credentials and the tokens got so far.

    Thread-safe for concurrent blob downloads (the pool is; the token cache takes a lock).
    ``counters`` counts requests by kind (``manifest``, ``blob``, ``token``...), for tests and
    the benchmark.
    """

    def __init__(self, domain: str, api_host: str | None = None, *,
                 credentials: Credentials | None | bool = True, retries: int = 4,
                 backoff: float = 0.25, timeout: float = 60.0, max_connections: int = 4) -> None:
        check_allowed(domain)
        self.domain = domain
        self.host = api_host or domain
        plain = is_loopback(self.host) or domain in insecure_registries() or (
            self.host in insecure_registries())
        self.scheme = "http" if plain else "https"
        self.base = f"{self.scheme}://{self.host}"
        self._creds_arg = credentials
        self._creds: Credentials | None = None
        self._creds_loaded = False
        self.retries = retries
        self.backoff = backoff
        self._tokens: dict[str, str] = {}
        self._basic = False
        self._lock = threading.Lock()
        self.counters: dict[str, int] = {}
        self.abort = threading.Event()
        self.http = urllib3.PoolManager(
            num_pools=4, maxsize=max_connections, block=False, cert_reqs="CERT_REQUIRED",
            timeout=urllib3.Timeout(connect=min(timeout, 15.0), read=timeout),
            # Redirects are followed (blob storage); every other retry is ours, below.
            retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0,
                                  redirect=5, raise_on_redirect=True))

    @classmethod
    def for_reference(cls, ref: Reference, **kwargs: Any) -> RegistryClient:
        """A client for the registry ``ref`` lives in (Docker Hub's API host for docker.io)."""
        return cls(ref.domain, ref.api_host, **kwargs)

    # -- credentials and tokens --------------------------------------------------------------
    @property
    def credentials(self) -> Credentials | None:
        """Given ones, else the Docker config's (looked up once, when a registry asks)."""
        if not self._creds_loaded:
            arg = self._creds_arg
            self._creds = arg if isinstance(arg, Credentials) else (
                get_credentials(self.domain) if arg is True else None)
            self._creds_loaded = True
        return self._creds

    def _basic_header(self, creds: Credentials) -> str:
        raw = f"{creds.username}:{creds.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _auth_header(self, scope: str) -> dict[str, str]:
        with self._lock:
            token = self._tokens.get(scope)
        if token:
            return {"Authorization": f"Bearer {token}"}
        if self._basic and self.credentials:
            return {"Authorization": self._basic_header(self.credentials)}
        return {}

    def _authenticate(self, challenge: Challenge, scope: str, what: str) -> None:
        """Answer a 401's challenge: remember to send basic auth, or fetch a bearer token."""
        creds = self.credentials
        if challenge.scheme == "basic":
            if creds is None:
                raise RegistryError(f"unauthorized: {self.domain} requires a user name and "
                                    f"password for {what}; log in with `nbcontainer login "
                                    f"{self.domain}`")
            if self._basic:
                raise self._unauthorized(what)
            self._basic = True
            return
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            raise RegistryError(f"{self.domain} asks for authentication this client does not "
                                f"speak ({challenge.scheme or 'no scheme'}); only Basic and "
                                "Bearer token auth are supported")
        realm = challenge.params["realm"]
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RegistryError(f"{self.domain} named the token service {realm!r}, which is not "
                                "an http(s) URL")
        check_allowed(parts.netloc)
        query: list[tuple[str, str]] = []
        if challenge.params.get("service"):
            query.append(("service", challenge.params["service"]))
        wanted = scope or challenge.params.get("scope", "")
        for item in wanted.split(" "):
            if item:
                query.append(("scope", item))
        headers = {}
        if creds is not None:
            if parts.scheme == "http" and not is_loopback(parts.netloc):
                raise RegistryError(f"{self.domain}'s token service {realm} is plain HTTP; "
                                    "refusing to send your password there")
            headers["Authorization"] = self._basic_header(creds)
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        self._count("token")
        try:
            resp = self.http.request("GET", url, headers=headers, preload_content=True)
        except urllib3.exceptions.HTTPError as err:
            raise RegistryError(f"network error talking to the token service of {self.domain} "
                                f"({parts.netloc}): {_reason(err)}") from err
        if resp.status in (401, 403):
            raise self._unauthorized(what)
        if resp.status != 200:
            raise RegistryError(f"the token service of {self.domain} ({parts.netloc}) answered "
                                f"HTTP {resp.status} for {what}")
        try:
            doc = json.loads(resp.data)
            token = str(doc.get("token") or doc.get("access_token") or "")
        except (ValueError, AttributeError):
            token = ""
        if not token:
            raise RegistryError(f"the token service of {self.domain} gave no token for {what}")
        with self._lock:
            self._tokens[scope] = token

    def _unauthorized(self, what: str) -> RegistryError:
        if self.credentials is None:
            return RegistryError(f"unauthorized: {self.domain} refused anonymous access to "
                                 f"{what}; log in with `nbcontainer login {self.domain}` (or the "
                                 "repository does not exist)")
        return RegistryError(f"unauthorized: {self.domain} refused the credentials of "
                             f"{self.credentials.username!r} for {what}; check them with "
                             f"`nbcontainer login {self.domain}`")

    def _count(self, kind: str) -> None:
        with self._lock:
            self.counters[kind] = self.counters.get(kind, 0) + 1

    # -- requests ----------------------------------------------------------------------------
    def request(self, method: str, path: str, *, scope: str, what: str,
                headers: dict[str, str] | None = None, body: bytes | None = None,
                stream: bool = False, kind: str = "other",
                url: str | None = None) -> urllib3.BaseHTTPResponse:
        """One API call with auth, retries on 429/5xx/connection errors, and errors in words.

        Returns the response for any status but 401 and those retried; the caller reads
        (or streams, with ``stream``) the body and releases it.
        """
        target = url or self.base + path
        if url:
            check_allowed(urlsplit(url).netloc)
        authed = False
        attempt = 0
        while True:
            if self.abort.is_set():
                raise _Abort()
            all_headers = {**(headers or {}), **self._auth_header(scope)}
            self._count(kind)
            try:
                resp = self.http.request(method, target, headers=all_headers, body=body,
                                         preload_content=not stream, decode_content=False)
            except urllib3.exceptions.SSLError as err:
                raise RegistryError(f"TLS verification failed for {self.host}: {_reason(err)}; "
                                    "if you trust this registry without a valid certificate, "
                                    "add it to NBCONTAINER_INSECURE_REGISTRIES") from err
            except urllib3.exceptions.HTTPError as err:
                if attempt < self.retries:
                    self._sleep(attempt, None)
                    attempt += 1
                    continue
                raise RegistryError(f"network error talking to registry {self.domain} "
                                    f"({self.host}): {_reason(err)}") from err
            if resp.status == 401 and not authed:
                challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
                _release(resp)
                self._authenticate(challenge, scope, what)
                authed = True
                continue
            if resp.status == 401:
                _release(resp)
                raise self._unauthorized(what)
            if resp.status in RETRY_STATUSES and attempt < self.retries:
                retry_after = resp.headers.get("Retry-After")
                _release(resp)
                self._sleep(attempt, retry_after)
                attempt += 1
                continue
            return resp

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff * (2 ** attempt)
        if retry_after and retry_after.isdigit():
            delay = max(delay, min(float(retry_after), 30.0))
        self.abort.wait(min(delay, 30.0))

    def error(self, resp: urllib3.BaseHTTPResponse, what: str) -> RegistryError:
        """A failed response as one sentence: status, the registry's error code and message."""
        try:
            body = resp.data if resp.data is not None else b""
        except urllib3.exceptions.HTTPError:
            body = b""
        _release(resp)
        codes = []
        try:
            for err in json.loads(body).get("errors") or []:
                codes.append(f"{err.get('code', '')}: {err.get('message', '')}".strip(": "))
        except (ValueError, AttributeError):
            pass
        detail = f" ({'; '.join(codes)})" if codes else ""
        words = {403: "denied", 404: "not found", 405: "not allowed",
                 429: "too many requests"}.get(resp.status, f"HTTP {resp.status}")
        if resp.status == 403:
            return RegistryError(f"denied: {self.domain} forbids {what}{detail}")
        if resp.status == 404:
            return RegistryError(f"not found: {self.domain} has no {what}{detail}")
        return RegistryError(f"{self.domain} answered {words} for {what}{detail}")

    # -- manifests and blobs -----------------------------------------------------------------
    def get_manifest(self, repo: str, target: str, accept: tuple[str, ...],
                     scope: str) -> tuple[bytes, str, str]:
        """Fetch a manifest or index by tag or digest: (bytes, media type, sha256 digest).

        The digest is computed here from the bytes; a pinned digest or the registry's
        ``Docker-Content-Digest`` must agree with it.
        """
        what = f"manifest {repo}:{target}" if not target.startswith("sha256:") else (
            f"manifest {repo}@{target}")
        resp = self.request("GET", f"/v2/{repo}/manifests/{target}", scope=scope, what=what,
                            headers={"Accept": ", ".join(accept)}, kind="manifest", stream=True)
        try:
            if resp.status == 404:
                err = self.error(resp, what)
                raise RegistryError(str(err).replace("not found:", "manifest unknown:", 1))
            if resp.status != 200:
                raise self.error(resp, what)
            data = resp.read(MAX_MANIFEST + 1)
        finally:
            _release(resp)
        if len(data) > MAX_MANIFEST:
            raise RegistryError(f"{what} from {self.domain} is larger than {MAX_MANIFEST} bytes")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if target.startswith("sha256:") and digest != target:
            raise RegistryError(f"digest mismatch: {what} from {self.domain} hashes to {digest}")
        said = resp.headers.get("Docker-Content-Digest", "")
        if said.startswith("sha256:") and said != digest:
            raise RegistryError(f"digest mismatch: {what} from {self.domain} hashes to {digest}, "
                                f"the registry says {said}")
        media = resp.headers.get("Content-Type", "").split(";")[0].strip()
        return data, media, digest

    def get_small_blob(self, repo: str, digest: str, size: int | None, scope: str,
                       limit: int = MAX_MANIFEST) -> bytes:
        """A small blob (an image config) in memory, checked against its digest and size."""
        what = f"blob {digest} of {repo}"
        resp = self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=scope, what=what,
                            kind="blob", stream=True)
        try:
            if resp.status != 200:
                raise self.error(resp, what)
            data = resp.read(limit + 1)
        finally:
            _release(resp)
        if len(data) > limit:
            raise RegistryError(f"{what} is larger than {limit} bytes")
        _verify(data_digest="sha256:" + hashlib.sha256(data).hexdigest(), count=len(data),
                digest=digest, size=size, what=what, domain=self.domain)
        return data

    def fetch_blob(self, repo: str, digest: str, size: int | None, dest: Path, scope: str,
                   advance: Callable[[int], None] = lambda n: None) -> None:
        """Download a blob into ``dest``, resuming with ``Range`` when the transfer breaks off.

        The file is hashed as it is written; a wrong digest or size raises RegistryError
        ("digest mismatch"), and the caller discards the file.
        """
        what = f"blob {digest} of {repo}"
        sha = hashlib.sha256()
        got = 0
        breaks = 0
        with open(dest, "wb") as f:
            while True:
                headers = {"Range": f"bytes={got}-"} if got else {}
                resp = self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=scope, what=what,
                                    headers=headers, stream=True, kind="blob")
                try:
                    if resp.status not in (200, 206):
                        raise self.error(resp, what)
                    if got and not _resumes_at(resp, got):
                        f.seek(0)
                        f.truncate()
                        sha, got = hashlib.sha256(), 0
                    for chunk in resp.stream(_CHUNK, decode_content=False):
                        if self.abort.is_set():
                            raise _Abort()
                        f.write(chunk)
                        sha.update(chunk)
                        got += len(chunk)
                        advance(len(chunk))
                        if size is not None and got > size:
                            raise RegistryError(f"digest mismatch: {what} from {self.domain} "
                                                f"is longer than the {size} bytes the manifest "
                                                "says")
                    break
                except (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError,
                        urllib3.exceptions.SSLError, OSError) as err:
                    if isinstance(err, OSError) and not isinstance(err, ConnectionError):
                        raise
                    breaks += 1
                    if breaks > self.retries:
                        raise RegistryError(f"network error downloading {what} from "
                                            f"{self.domain}: {_reason(err)} ({breaks} times, "
                                            f"at byte {got})") from err
                    self._count("resume")
                    self._sleep(breaks - 1, None)
                finally:
                    _release(resp)
        _verify("sha256:" + sha.hexdigest(), got, digest, size, what, self.domain)

    def ping(self, what: str) -> None:
        """``GET /v2/``, answering an auth challenge: checks a login."""
        resp = self.request("GET", "/v2/", scope="", what=what, kind="ping")
        if resp.status != 200:
            raise self.error(resp, what)
        _release(resp)


def _resumes_at(resp: urllib3.BaseHTTPResponse, offset: int) -> bool:
    """True if a 206 answer continues at ``offset`` (else the download restarts from 0)."""
    if resp.status != 206:
        return False
    m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
    return m is not None and int(m.group(1)) == offset


def _verify(data_digest: str, count: int, digest: str, size: int | None, what: str,
            domain: str) -> None:
    if size is not None and count != size:
        raise RegistryError(f"digest mismatch: {what} from {domain} is {count} bytes, the "
                            f"manifest says {size}")
    if data_digest != digest:
        raise RegistryError(f"digest mismatch: {what} from {domain} hashes to {data_digest}; "
                            "the registry's copy is corrupt or was tampered with")


def _release(resp: urllib3.BaseHTTPResponse) -> None:
    with contextlib.suppress(urllib3.exceptions.HTTPError, OSError):
        resp.drain_conn()
    resp.release_conn()


def _reason(err: BaseException) -> str:
    """The innermost useful text of a urllib3 error."""
    reason = getattr(err, "reason", None)
    if isinstance(reason, BaseException):
        return _reason(reason)
    text = str(err)
    m = re.search(r"Failed to establish a new connection: (.*)", text)
    return (m.group(1) if m else text).rstrip(")'\"") or type(err).__name__
