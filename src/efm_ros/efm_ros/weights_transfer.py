"""Policy weights over ROS 2, for stations that share no filesystem with the learner
(paper Appendix J.2: weights are distributed to the actors; issue 16, item 5).

The learner serves each published checkpoint's ``config.json`` and ``model.safetensors``
in chunks (``efm_interfaces/srv/GetWeights``) and announces a version with
``uri = ros://<service>`` in its WeightsUpdate. A station downloads both files into its
cache, resuming a partial download where it stopped, checks their sha256 against the
WeightsUpdate (which the fleet key authenticates, efm_ros.fleet_auth), writes the
checkpoint's SHA256SUMS from those two digests and only then loads it, through the same
verified loader as a local checkpoint (``efm_learning.checkpoint``). Nothing is unpickled,
and the server sends only those two files of directories it published.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from efm_interfaces.srv import GetWeights
from efm_learning.checkpoint import CONFIG_FILE, MODEL_FILE, SUMS_FILE

#: URI scheme of a checkpoint served by a learner over ROS 2
SCHEME = "ros"
#: the files a station fetches (the learner's trainer state stays on the learner)
SERVED_FILES = (CONFIG_FILE, MODEL_FILE)
DEFAULT_CHUNK = 512 * 1024
_SERVICE = re.compile(r"^(/[A-Za-z_][A-Za-z0-9_]*)+$")


def service_uri(service: str) -> str:
    """``ros:///learner/get_weights`` for a fully qualified service name."""
    if not _SERVICE.match(service):
        raise ValueError(f"weights service {service!r} is not a fully qualified ROS name")
    return f"{SCHEME}://{service}"


def service_of(uri: str) -> str | None:
    """The service a ``ros://`` uri names (None for other schemes); malformed ones raise."""
    parsed = urlparse(uri)
    if parsed.scheme != SCHEME:
        return None
    if parsed.netloc or not _SERVICE.match(parsed.path) or parsed.query or parsed.fragment:
        raise ValueError(f"weights uri {uri!r}: expected ros:///fully/qualified/service")
    return parsed.path


class WeightsServer:
    """Serves chunks of the files of published checkpoints; ``version_dir(version)``
    returns the directory of a published version, or None."""

    def __init__(self, node, service: str, version_dir: Callable[[int], Path | None],
                 max_chunk: int = DEFAULT_CHUNK, callback_group=None) -> None:
        self.version_dir, self.max_chunk = version_dir, max_chunk
        self.served_bytes = 0
        #: the fully qualified service name (what ``service_uri`` announces)
        self.name = node.resolve_service_name(service)
        self.service = node.create_service(GetWeights, service, self.on_request,
                                           callback_group=callback_group)

    def on_request(self, request: GetWeights.Request, response: GetWeights.Response):
        response.offset = request.offset
        if request.file not in SERVED_FILES:
            response.ok, response.message = False, f"file must be one of {list(SERVED_FILES)}"
            return response
        directory = self.version_dir(int(request.version))
        if directory is None:
            response.ok, response.message = False, f"version {request.version} is not published"
            return response
        path = directory / request.file
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if request.offset > size:
                    response.ok = False
                    response.message = f"offset {request.offset} beyond {size} bytes"
                    return response
                count = min(int(request.max_bytes) or self.max_chunk, self.max_chunk)
                data = os.pread(handle.fileno(), count, int(request.offset))
        except OSError as error:
            response.ok, response.message = False, f"{request.file}: {error.strerror}"
            return response
        response.ok, response.total_bytes = True, size
        response.data = data  # bytes -> uint8[] without a per-byte Python loop
        self.served_bytes += len(data)
        return response


class FetchError(ValueError):
    """A download that failed or whose bytes do not match the WeightsUpdate."""


class WeightsFetcher:
    """Downloads served checkpoints into ``cache_dir/v<version>`` (a station's side).

    ``fetch`` blocks its caller (the policy node's weight-loading thread) while the node's
    executor, spinning elsewhere, completes the service calls."""

    def __init__(self, node, cache_dir: Path, chunk: int = DEFAULT_CHUNK,
                 timeout_s: float = 10.0, call_timeout_s: float = 2.0, retries: int = 10) -> None:
        self.node, self.cache_dir = node, Path(cache_dir)
        self.chunk, self.timeout_s, self.retries = chunk, timeout_s, retries
        #: one chunk's answer may be lost (a service response is a DDS sample like any
        #: other: seen with 8 stations pulling 64 MB at once); ask again after this long,
        #: from the same offset
        self.call_timeout_s = call_timeout_s
        self.retried_calls = 0
        self._clients: dict[str, object] = {}
        self.fetched_bytes = 0

    def _client(self, service: str):
        if service not in self._clients:
            self._clients[service] = self.node.create_client(GetWeights, service)
        return self._clients[service]

    def _call(self, service: str, request: GetWeights.Request) -> GetWeights.Response:
        client = self._client(service)
        if not client.wait_for_service(timeout_sec=self.timeout_s):
            raise FetchError(f"weights service {service} is not available")
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(self.call_timeout_s):
            client.remove_pending_request(future)
            self.retried_calls += 1
            raise TimeoutError(f"{service}: no answer within {self.call_timeout_s} s")
        return future.result()

    def _fetch_file(self, service: str, version: int, name: str, target: Path,
                    digest: str) -> None:
        part = target.with_name(target.name + ".part")
        for attempt in range(self.retries + 1):
            offset = part.stat().st_size if part.exists() else 0  # resume
            try:
                with open(part, "ab") as out:
                    while True:
                        reply = self._call(service, GetWeights.Request(
                            version=version, file=name, offset=offset, max_bytes=self.chunk))
                        if not reply.ok:
                            raise FetchError(f"{service} refused {name} v{version}: "
                                             f"{reply.message}")
                        if reply.offset != offset or offset + len(reply.data) > reply.total_bytes:
                            raise FetchError(f"{name}: chunk at {reply.offset} does not fit")
                        out.write(bytes(reply.data))
                        offset += len(reply.data)
                        self.fetched_bytes += len(reply.data)
                        if offset == reply.total_bytes:
                            break
                        if not reply.data:
                            raise FetchError(f"{name}: empty chunk before the end")
                    out.flush()
                    os.fsync(out.fileno())
            except TimeoutError:
                if attempt == self.retries:
                    raise
                continue  # resume from what has arrived
            actual = hashlib.sha256(part.read_bytes()).hexdigest()
            if actual == digest:
                part.rename(target)
                return
            part.unlink()  # a corrupt or stale partial file: start over
            if attempt == self.retries:
                raise FetchError(
                    f"{name} v{version}: sha256 {actual[:16]}... does not match the "
                    f"WeightsUpdate's {digest[:16]}...; refusing it")
        raise FetchError(f"{name} v{version}: download failed")

    def fetch(self, uri: str, version: int, model_sha256: str, config_sha256: str) -> Path:
        """The local checkpoint directory of served ``version``, downloaded and checked
        against the WeightsUpdate's digests (both required)."""
        service = service_of(uri)
        if service is None:
            raise FetchError(f"{uri!r} is not a ros:// weights uri")
        for name, digest in ((MODEL_FILE, model_sha256), (CONFIG_FILE, config_sha256)):
            if not re.fullmatch(r"[0-9a-f]{64}", digest or ""):
                raise FetchError(f"a served checkpoint needs the WeightsUpdate's sha256 of {name}")
        directory = self.cache_dir / f"v{int(version)}"
        directory.mkdir(parents=True, exist_ok=True)
        digests = {CONFIG_FILE: config_sha256, MODEL_FILE: model_sha256}
        for name, digest in digests.items():
            target = directory / name
            if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == digest:
                continue  # already here (a repeated announcement)
            target.unlink(missing_ok=True)
            self._fetch_file(service, int(version), name, target, digest)
        (directory / SUMS_FILE).write_text(
            "".join(f"{digests[n]}  {n}\n" for n in sorted(digests)))
        return directory
