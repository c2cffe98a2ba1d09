"""Streaming FASTA reading: plain or gzip, files or stdin, in blocks of whole records.

The reader never parses records in Python: it hands blocks of raw bytes that
end on a record boundary to :func:`parse_block`, a compiled pass that strips
line breaks, turns bases into 2-bit codes and records where each header and
sequence lies. Memory is bounded by the block size (or the longest record).
"""
from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import numba
import numpy as np
from isal import igzip

from .errors import InputError
from .kmers import BYTE_TO_CODE

BLOCK_SIZE = 4 << 20
GZIP_MAGIC = b"\x1f\x8b"


def open_binary(path: str) -> BinaryIO:
    """Open a file (or ``-`` for stdin) for reading, decompressing gzip transparently (ISA-L)."""
    if path == "-":
        raw: BinaryIO = io.BufferedReader(sys.stdin.buffer.raw if hasattr(sys.stdin.buffer, "raw") else sys.stdin.buffer, 1 << 20)
    else:
        if os.path.isdir(path):
            raise InputError(f"{path}: is a directory, not a file")
        try:
            raw = open(path, "rb", buffering=1 << 20)
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except PermissionError:
            raise InputError(f"{path}: permission denied") from None
        except OSError as e:
            raise InputError(f"{path}: cannot open ({e.strerror})") from None
    head = raw.peek(2)[:2]
    if head == GZIP_MAGIC:
        return igzip.IGzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def _read(stream: BinaryIO, n: int, name: str) -> bytes:
    try:
        return stream.read(n)
    except (EOFError, OSError) as e:
        # isal raises EOFError on a truncated stream, OSError/BadGzipFile on corrupt data.
        raise InputError(f"{name}: damaged or truncated gzip data ({e})") from None


def iter_blocks(path: str, block_size: int = BLOCK_SIZE) -> Iterator[bytes]:
    """Yield blocks of ``path`` that each hold whole FASTA records (the last one ending at EOF)."""
    name = "stdin" if path == "-" else path
    stream = open_binary(path)
    try:
        pending = b""
        first = True
        while True:
            chunk = _read(stream, block_size, name)
            if first:
                if not chunk:
                    raise InputError(f"{name}: empty file")
                check_fasta_start(chunk, name)
                first = False
            if not chunk:
                if pending:
                    yield pending
                return
            buf = pending + chunk if pending else chunk
            # Cut after the last line break that is followed by '>' (a record start).
            cut = buf.rfind(b"\n>")
            if cut <= 0:
                pending = buf  # one record longer than a block: keep reading
                continue
            yield buf[: cut + 1]
            pending = buf[cut + 1 :]
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def check_fasta_start(chunk: bytes, name: str) -> None:
    """Fail clearly when the data is binary or text that is not FASTA."""
    if b"\x00" in chunk[:65536]:
        raise InputError(f"{name}: binary data, not a FASTA file")
    stripped = chunk.lstrip()
    if not stripped:
        raise InputError(f"{name}: empty file (only whitespace)")
    if not stripped.startswith(b">"):
        raise InputError(f"{name}: not a FASTA file (first record does not start with '>')")


@dataclass
class ParsedBlock:
    """Records of one block: 2-bit codes of all sequences back to back, and where each lies."""

    buf: bytes
    codes: np.ndarray
    header_start: np.ndarray
    header_end: np.ndarray
    seq_start: np.ndarray
    seq_end: np.ndarray

    def __len__(self) -> int:
        return self.header_start.shape[0]

    def ids(self) -> list[str]:
        """Record IDs: the header up to the first whitespace."""
        out = []
        for s, e in zip(self.header_start.tolist(), self.header_end.tolist()):
            head = self.buf[s:e].split(None, 1)
            out.append(head[0].decode("utf-8", "replace") if head else "")
        return out


@numba.njit(nogil=True, cache=True)
def _parse(buf, byte_to_code, codes, hs, he, ss, se):
    n = buf.shape[0]
    i = 0
    nrec = 0
    ncodes = 0
    bad = -1
    while i < n:
        b = buf[i]
        if b == 62:  # '>'
            if nrec > 0:
                se[nrec - 1] = ncodes
            j = i + 1
            while j < n and buf[j] != 10:
                j += 1
            e = j
            if e > i + 1 and buf[e - 1] == 13:
                e -= 1
            hs[nrec] = i + 1
            he[nrec] = e
            ss[nrec] = ncodes
            nrec += 1
            i = j + 1
            continue
        # sequence line
        while i < n and buf[i] != 10:
            b = buf[i]
            if b > 32:
                if b > 126 and bad < 0:
                    bad = i
                codes[ncodes] = byte_to_code[b]
                ncodes += 1
            i += 1
        i += 1
    if nrec > 0:
        se[nrec - 1] = ncodes
    return nrec, ncodes, bad


def parse_block(buf: bytes, name: str = "input") -> ParsedBlock:
    """Parse a block of whole FASTA records (see :func:`iter_blocks`)."""
    arr = np.frombuffer(buf, dtype=np.uint8)
    max_records = buf.count(b">") + 1
    codes = np.empty(arr.shape[0], dtype=np.uint8)
    hs, he, ss, se = (np.empty(max_records, dtype=np.int64) for _ in range(4))
    nrec, ncodes, bad = _parse(arr, BYTE_TO_CODE, codes, hs, he, ss, se)
    if bad >= 0:
        raise InputError(f"{name}: binary data in a sequence line, not a FASTA file")
    return ParsedBlock(buf, codes[:ncodes], hs[:nrec], he[:nrec], ss[:nrec], se[:nrec])
