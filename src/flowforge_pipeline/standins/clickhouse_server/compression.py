"""HTTP body compression as ClickHouse speaks it: lz4, zstd, br, gzip and deflate.

Requests are decoded incrementally because an insert may be far larger than memory would
like; a body may hold several frames one after another (clickhouse-connect compresses each
block of a large insert separately), so every decoder starts a fresh frame when one ends.
"""

from __future__ import annotations

import functools
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import brotli
import lz4.frame
import zstandard

from flowforge_pipeline.standins.clickhouse_server.errors import ClickHouseError

SUPPORTED = ("lz4", "zstd", "br", "gzip", "deflate", "x-gzip")


class _Frame(Protocol):
    """One frame's incremental decoder."""

    def decompress(self, data: bytes) -> bytes: ...  # noqa: D102

    @property
    def eof(self) -> bool: ...  # noqa: D102

    @property
    def unused_data(self) -> bytes: ...  # noqa: D102


class _ZstdFrame:
    """zstandard's decompressobj behind the same interface as the others."""

    def __init__(self) -> None:
        self._obj = zstandard.ZstdDecompressor().decompressobj()

    def decompress(self, data: bytes) -> bytes:
        return self._obj.decompress(data)

    @property
    def eof(self) -> bool:
        return bool(self._obj.eof)

    @property
    def unused_data(self) -> bytes:
        return bytes(self._obj.unused_data)


class _BrotliFrame:
    """Brotli has no frame boundary worth honouring: one stream per body."""

    def __init__(self) -> None:
        self._obj = brotli.Decompressor()

    def decompress(self, data: bytes) -> bytes:
        return bytes(self._obj.process(data))

    @property
    def eof(self) -> bool:
        return bool(self._obj.is_finished())

    @property
    def unused_data(self) -> bytes:
        return b""


class _Lz4Contexts:
    """Idle lz4 decompression contexts, kept for the next body.

    A fresh context allocates its block buffers on first use, and for an insert block of a
    few hundred kilobytes that costs as much as decompressing it (the pages are new each
    time); a context used before has them already. A few are kept, however many connections
    come and go: one per body being decoded at the same moment is all that is ever needed.
    """

    def __init__(self, keep: int = 4) -> None:
        self._idle: list[lz4.frame.LZ4FrameDecompressor] = []
        self._keep = keep
        self._lock = threading.Lock()

    def take(self) -> lz4.frame.LZ4FrameDecompressor:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return lz4.frame.LZ4FrameDecompressor()

    def give(self, obj: lz4.frame.LZ4FrameDecompressor) -> None:
        with self._lock:
            if len(self._idle) < self._keep:
                self._idle.append(obj)


_LZ4_CONTEXTS = _Lz4Contexts()


class _Lz4Frame:
    """An lz4 frame decoder told the frame's content size when its header carries one.

    Without a bound the decoder grows its output buffer step by step; clickhouse-connect
    writes the size of every block into its frame header, and decoding into a buffer of
    the right size costs a quarter less. A context used before is reset first: the frame it
    last decoded may have ended anywhere, even in an error.
    """

    def __init__(self, obj: lz4.frame.LZ4FrameDecompressor | None = None) -> None:
        if obj is None:
            obj = lz4.frame.LZ4FrameDecompressor()
        else:
            obj.reset()
        self._obj = obj
        self._left = -1
        self._started = False

    def decompress(self, data: bytes) -> bytes:
        if not self._started:
            self._started = True
            try:
                size = int(lz4.frame.get_frame_info(data)["content_size"])
            except (RuntimeError, ValueError, KeyError):
                size = 0
            self._left = size if size > 0 else -1
        out = bytes(self._obj.decompress(data, max_length=self._left if self._left > 0 else -1))
        if self._left > 0:
            self._left = max(self._left - len(out), 0)
        return out

    @property
    def eof(self) -> bool:
        return bool(self._obj.eof)

    @property
    def unused_data(self) -> bytes:
        return bytes(self._obj.unused_data or b"")


def _frame_factory(encoding: str) -> Callable[[], _Frame]:
    if encoding == "lz4":
        return _Lz4Frame
    if encoding == "zstd":
        return _ZstdFrame
    if encoding == "br":
        return _BrotliFrame
    if encoding in ("gzip", "x-gzip"):
        return lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return lambda: zlib.decompressobj()
    raise ClickHouseError(
        "UNKNOWN_COMPRESSION_METHOD", f"Unknown HTTP compression method: {encoding}"
    )


def check_encoding(encoding: str) -> None:
    """Reject an unknown Content-Encoding before any of the body is read.

    Raises:
        ClickHouseError: UNKNOWN_COMPRESSION_METHOD.

    """
    if encoding and encoding not in ("identity", "none"):
        _frame_factory(encoding)


def decode(chunks: Iterable[bytes], encoding: str) -> Iterator[bytes]:
    """Decompress a stream of body chunks, frame after frame.

    Raises:
        ClickHouseError: CANNOT_DECOMPRESS when the bytes are not what the encoding says.

    """
    if not encoding or encoding in ("identity", "none"):
        yield from chunks
        return
    factory = _frame_factory(encoding)
    lz4_context = None
    if encoding == "lz4":
        # Every lz4 frame of the body reuses one context, taken from the idle ones.
        lz4_context = _LZ4_CONTEXTS.take()
        factory = functools.partial(_Lz4Frame, lz4_context)
    frame: _Frame | None = None
    try:
        for chunk in chunks:
            data = chunk
            while data:
                if frame is None:
                    frame = factory()
                out = frame.decompress(data)
                if out:
                    yield out
                if frame.eof:
                    data = frame.unused_data
                    frame = None
                else:
                    data = b""
        if frame is not None and not frame.eof:
            raise ClickHouseError("CANNOT_DECOMPRESS", f"Truncated {encoding} request body")
    except ClickHouseError:
        raise
    except Exception as exc:  # every codec raises its own type
        raise ClickHouseError(
            "CANNOT_DECOMPRESS", f"Cannot decompress {encoding} request body: {exc}"
        ) from exc
    finally:
        # Also when the body is abandoned half-way (an error, a client gone): the next
        # frame resets the context before using it.
        if lz4_context is not None:
            _LZ4_CONTEXTS.give(lz4_context)


class Encoder(Protocol):
    """Incremental response compressor."""

    def compress(self, data: bytes) -> bytes: ...  # noqa: D102

    def flush(self) -> bytes: ...  # noqa: D102


class _Lz4Encoder:
    def __init__(self) -> None:
        self._obj = lz4.frame.LZ4FrameCompressor()
        self._started = False

    def compress(self, data: bytes) -> bytes:
        head = b""
        if not self._started:
            head = self._obj.begin()
            self._started = True
        return bytes(head + self._obj.compress(data))

    def flush(self) -> bytes:
        head = b"" if self._started else self._obj.begin()
        self._started = True
        return bytes(head + self._obj.flush())


class _ZstdEncoder:
    def __init__(self) -> None:
        self._obj = zstandard.ZstdCompressor().compressobj()

    def compress(self, data: bytes) -> bytes:
        return bytes(self._obj.compress(data))

    def flush(self) -> bytes:
        return bytes(self._obj.flush())


class _BrotliEncoder:
    def __init__(self) -> None:
        self._obj = brotli.Compressor(quality=4)

    def compress(self, data: bytes) -> bytes:
        return bytes(self._obj.process(data))

    def flush(self) -> bytes:
        return bytes(self._obj.finish())


class _ZlibEncoder:
    def __init__(self, wbits: int) -> None:
        self._obj = zlib.compressobj(3, zlib.DEFLATED, wbits)

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def flush(self) -> bytes:
        return self._obj.flush()


def choose_encoding(accept_encoding: str) -> str | None:
    """Pick the first encoding of Accept-Encoding the server can produce, in the client's order."""
    for part in accept_encoding.split(","):
        name = part.split(";", 1)[0].strip().lower()
        if name in ("lz4", "zstd", "br", "gzip", "deflate", "x-gzip"):
            return name
    return None


def encoder(encoding: str) -> Encoder:
    """An incremental compressor producing `encoding`."""
    if encoding == "lz4":
        return _Lz4Encoder()
    if encoding == "zstd":
        return _ZstdEncoder()
    if encoding == "br":
        return _BrotliEncoder()
    if encoding in ("gzip", "x-gzip"):
        return _ZlibEncoder(16 + zlib.MAX_WBITS)
    return _ZlibEncoder(zlib.MAX_WBITS)
