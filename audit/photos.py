"""A bin's photo as a local file, wherever it is stored: in the workspace, in a registered folder, or in S3.

Photos in S3 (bins imported with `import --s3`, and the configured bucket) are fetched once into the
workspace's cache (`<workspace>/cache/s3/<bucket>/<key>`) and read from there afterwards, so every
dashboard server of a team shows them from S3 and none needs another server's disk. Objects are
keyed by their S3 key: a photo replaced under the same key needs its cached copy deleted.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from binaudit.workspace import Workspace, resolve_image

MAX_PHOTO_BYTES = 200 * 1024 * 1024  # the decoder's pixel guard comes later; this keeps a huge object off the disk


def cache_path(workspace: Workspace, uri: str) -> Path:
    bucket, _, key = uri[5:].partition("/")
    return workspace.root / "cache" / "s3" / bucket / key


@functools.lru_cache(maxsize=4)
def _client(unsigned: bool, endpoint: str | None):
    from data_tools.s3 import make_s3_client

    return make_s3_client(unsigned=unsigned, max_pool=16)  # botocore clients are thread-safe


def _download(uri: str, dest: Path) -> None:
    from botocore.exceptions import ClientError, NoCredentialsError

    bucket, _, key = uri[5:].partition("/")
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    try:
        try:
            response = _client(False, endpoint).get_object(Bucket=bucket, Key=key)
        except NoCredentialsError:  # a public bucket (imported with --unsigned) needs no credentials
            response = _client(True, endpoint).get_object(Bucket=bucket, Key=key)
        if response.get("ContentLength", 0) > MAX_PHOTO_BYTES:
            raise OSError(f"{uri} is {response['ContentLength']:,} bytes: not a bin photo "
                          f"(at most {MAX_PHOTO_BYTES:,})")
        body = response["Body"].read()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            raise FileNotFoundError(f"photo not found in S3: {uri}") from None
        raise OSError(f"cannot read {uri} from S3: {code or exc}") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f"{dest.name}.{uuid.uuid4().hex[:8]}.part")  # two servers may fetch at once
    part.write_bytes(body)
    os.replace(part, dest)


def local_photo(uri: str, workspace: Workspace, roots: list[str]) -> Path:
    """The local file to read for a stored photo location; S3 objects are fetched into the cache first.

    Raises UnsafePath (a location BinAudit may not read), FileNotFoundError (no such file or object) or
    OSError (S3 did not answer), each naming the photo.
    """
    resolved = resolve_image(uri, workspace, roots)
    if isinstance(resolved, Path):
        return resolved
    cached = cache_path(workspace, resolved)
    if not cached.is_file():
        _download(resolved, cached)
    return cached


def local_photos(uris: Iterable[str], workspace: Workspace, roots: list[str], *, workers: int = 8,
                 window: int = 64) -> Iterator[Path | OSError]:
    """`local_photo` over many locations, in order, fetching up to `workers` S3 objects at once (a bounded
    look-ahead: a long stream is never all in flight). A photo that cannot be had yields its error."""
    def one(uri: str) -> Path | OSError:
        try:
            return local_photo(uri, workspace, roots)
        except OSError as exc:  # UnsafePath is a PermissionError
            return exc

    with ThreadPoolExecutor(workers) as pool:
        pending: deque[Future] = deque()
        for uri in uris:
            pending.append(pool.submit(one, uri))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
