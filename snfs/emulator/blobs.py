"""Attachment bytes as files under DIR/blobs, written chunk by chunk while hashing.

An upload streams into a temporary file; size, SHA-256, gzip size (size_compressed) and the
image header are computed on the way, so no upload is ever held in memory. The file gets its
final name only once the metadata row exists (`commit`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
import zlib
from pathlib import Path

from snfs.emulator.images import HEADER_BYTES, dimensions

SAMPLE = 64 * 1024


def incompressible(chunk: bytes) -> bool:
    """Whether data looks random/already compressed (its first 64 KiB do not shrink at level 1).

    Deflate on such data runs at ~30 MB/s on a slow CPU for nothing; the emulator then counts
    stored blocks for size_compressed and gzips downloads at level 0 (same wire format).
    """
    sample = chunk[:SAMPLE]
    return len(sample) >= 4096 and len(zlib.compress(sample, 1)) >= 0.97 * len(sample)


class BlobWriter:
    def __init__(self, path: Path, max_size: int | None) -> None:
        self.path = path
        self.max_size = max_size
        self.size = 0
        self.too_large = False
        self._file = open(path, "wb")  # noqa: SIM115 - closed by close() or abort()
        self._sha = hashlib.sha256()
        # Level 1: size_compressed only has to be plausible, and uploads must stay fast.
        self._gzip: zlib._Compress | None = None  # decided on the first chunk
        self._gzip_size = 0
        self._stored = False  # incompressible content: count stored deflate blocks instead
        self._head = bytearray()

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        if self.max_size is not None and self.size > self.max_size:
            self.too_large = True  # keep counting (the caller drains the body) but store nothing
            return
        self._file.write(chunk)
        self._sha.update(chunk)
        if self._gzip is None and not self._stored:
            self._stored = incompressible(chunk)
            self._gzip = None if self._stored else zlib.compressobj(1, zlib.DEFLATED, 31)
        if self._gzip is not None:
            self._gzip_size += len(self._gzip.compress(chunk))
        if len(self._head) < HEADER_BYTES:
            self._head += chunk[: HEADER_BYTES - len(self._head)]

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def gzip_size(self) -> int:
        if self._gzip is None:  # gzip framing + a 5-byte header per stored block of <= 64 KiB
            return 18 + self.size + 5 * max(1, -(-self.size // 65535))
        return self._gzip_size + len(self._gzip.copy().flush())

    def image_size(self) -> tuple[int, int] | None:
        return dimensions(bytes(self._head))

    def abort(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        for stale in self.tmp.iterdir():  # uploads cut short by a crash
            stale.unlink(missing_ok=True)

    def path(self, sys_id: str) -> Path:
        return self.root / sys_id[:2] / sys_id

    def writer(self, max_size: int | None = None) -> BlobWriter:
        return BlobWriter(self.tmp / uuid.uuid4().hex, max_size)

    def commit(self, writer: BlobWriter, sys_id: str) -> None:
        writer.close()
        dest = self.path(sys_id)
        dest.parent.mkdir(exist_ok=True)
        os.replace(writer.path, dest)

    def put_bytes(self, sys_id: str, data: bytes) -> None:
        dest = self.path(sys_id)
        dest.parent.mkdir(exist_ok=True)
        dest.write_bytes(data)

    def delete(self, sys_id: str) -> None:
        self.path(sys_id).unlink(missing_ok=True)

    def wipe(self) -> None:
        for child in self.root.iterdir():
            if child != self.tmp:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
