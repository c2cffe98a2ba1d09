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

from .errors import InputError, reading
from .kmers import BYTE_TO_CODE, prepare_numba

BLOCK_SIZE = 4 << 20
GZIP_MAGIC = b"\x1f\x8b"


def open_binary(path: str) -> BinaryIO:
    """Open a file (or ``-`` for stdin) for reading, decompressing gzip transparently (ISA-L)."""
    if path == "-":
        raw: BinaryIO = io.BufferedReader(sys.stdin.buffer.raw if hasattr(sys.stdin.buffer, "raw") else sys.stdin.buffer, 1 << 20)
    else:
        if os.path.isdir(path):
            raise InputError(f"{path}: is a directory, not a file")
        with reading(path):
            raw = open(path, "rb", buffering=1 << 20)
    head = raw.peek(2)[:2]
    if head == GZIP_MAGIC:
        return igzip.IGzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def _readinto(stream: BinaryIO, view: memoryview, name: str) -> int:
    try:
        return stream.readinto(view) or 0
    except (EOFError, OSError) as e:
        # isal raises EOFError on a truncated stream, OSError/BadGzipFile on corrupt data.
        raise InputError(f"{name}: damaged or truncated gzip data ({e})") from None


def iter_blocks(path: str, block_size: int = BLOCK_SIZE, max_records: int = 0) -> Iterator[bytearray]:
    """Yield blocks of ``path`` that each hold whole FASTA records (the last one ending at EOF).

    Each block is a new bytearray filled in place (one copy from the file or the
    decompressor); only the partial record at its end is copied again, to start the
    next block. A record longer than a block grows the read geometrically.

    ``max_records`` (0: off) shrinks the reads where records are short, so that a
    block holds about that many (the record density of each block's first 256 kB
    sets the size of the next read): whoever holds a row per record holds a bounded
    number of rows per block.
    """
    name = "stdin" if path == "-" else path
    stream = open_binary(path)
    try:
        pending = b""
        first = True
        eof = False
        want = block_size
        while True:
            n0 = len(pending)
            if eof:  # only what is left to hand out (in several blocks with max_records)
                if not pending:
                    return
                buf = bytearray(pending)
                filled = n0
            else:
                buf = bytearray(n0 + want)
                buf[:n0] = pending
                with memoryview(buf) as mv, mv[n0:] as tail:
                    got = _readinto(stream, tail, name)
                if first:
                    if not got:
                        raise InputError(f"{name}: empty file")
                    check_fasta_start(bytes(buf[:got]), name)
                    first = False
                filled = n0 + got
                if not got:
                    eof = True
                    if not pending:
                        return
                    del buf[filled:]
            if eof:
                end = filled
            else:
                # Cut after the last line break that is followed by '>' (a record start).
                cut = buf.rfind(b"\n>", 0, filled)
                if cut <= 0:
                    del buf[filled:]
                    pending = buf  # one record longer than a block: keep reading
                    want = max(block_size, filled)
                    continue
                end = cut + 1
            want = block_size
            if max_records:
                sample = min(end, 1 << 18)
                starts = int(np.count_nonzero(np.frombuffer(buf, dtype=np.uint8, count=sample) == 62))
                if starts:
                    target = max(1 << 16, sample * max_records // starts)
                    want = min(block_size, target)
                    if target < end:  # too many records already: hand out fewer now
                        short_cut = buf.rfind(b"\n>", 0, target)
                        if short_cut > 0:
                            end = short_cut + 1
            pending = bytes(buf[end:filled])
            del buf[end:]
            yield buf
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
    if b"\r" in chunk and b"\n" not in chunk:
        raise InputError(f"{name}: lines end in CR only (classic Mac): convert them first, e.g. tr '\\r' '\\n' < in.fa > out.fa")


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


_U = np.uint64


@numba.njit(nogil=True, cache=True, inline="always")
def _zero_bytes(v):
    """High bit of each byte of the result set exactly where that byte of ``v`` is 0."""
    m7 = _U(0x7F7F7F7F7F7F7F7F)
    return ~(((v & m7) + m7) | v | m7)


@numba.njit(nogil=True, cache=True, inline="always")
def _translate8(w):
    """Eight bytes in a word -> (their eight codes as BYTE_TO_CODE gives them, flag).

    ``flag`` has a high bit set under every byte that is not printable non-space
    (outside 33..126); the codes are only meaningful when ``flag`` is 0. Bit tricks on
    whole words (no carry crosses a byte): 8 bytes in about 30 operations.
    """
    m7 = _U(0x7F7F7F7F7F7F7F7F)
    hi = _U(0x8080808080808080)
    ones = _U(0x0101010101010101)
    u = w & _U(0xDFDFDFDFDFDFDFDF)  # upper case
    valid = (_zero_bytes(u ^ _U(0x4141414141414141)) | _zero_bytes(u ^ _U(0x4343434343434343))
             | _zero_bytes(u ^ _U(0x4747474747474747)) | _zero_bytes(u ^ _U(0x5454545454545454)))
    # A=0x41 C=0x43 G=0x47 T=0x54 -> 0 1 2 3: bits 1-2 of the byte, bit 1 xor bit 2
    code = ((w >> _U(1)) & _U(0x0303030303030303)) ^ ((w >> _U(2)) & ones)
    vmask = ((valid >> _U(7)) & ones) * _U(0xFF)
    res = (code & vmask) | (_U(0x0404040404040404) & ~vmask)
    lo7 = w & m7
    ge127 = (w | (lo7 + ones)) & hi
    le32 = ~(w | (lo7 + _U(0x5F5F5F5F5F5F5F5F))) & hi
    return res, ge127 | le32


def _shifted_words(a: np.ndarray) -> np.ndarray:
    """(8, n) uint64 view of a uint8 array: row k, column j = the 8 bytes at ``k + 8 * j``.

    So the word starting at any byte p is ``[p & 7, p >> 3]``: unaligned 8-byte access.
    """
    nw = (a.shape[0] - 7) // 8
    if nw <= 0:  # too short for one word: a dummy of the same type (never read or written)
        writeable = a.flags.writeable
        a = np.zeros(16, dtype=np.uint8)
        a.flags.writeable = writeable
        nw = 1
    return np.ndarray(shape=(8, nw), dtype=np.uint64, buffer=a, offset=0, strides=(1, 8))


@numba.njit(nogil=True, cache=True)
def _parse(buf, bw, byte_to_code, codes, cw, hs, he, ss, se):
    n = buf.shape[0]
    i = 0
    nrec = 0
    ncodes = 0
    bad = -1
    width = 0  # bytes before the line break of the last sequence line (the FASTA line width)
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
        # Sequence line. Fast path: as wide as the last one (ending in LF or CRLF) and made
        # only of printable non-space bytes (33..126), so no byte-by-byte line-break test.
        e = i + width
        if width > 0 and e < n:
            nxt = -1
            if buf[e] == 10:
                nxt = e + 1
            elif buf[e] == 13 and e + 1 < n and buf[e + 1] == 10:
                nxt = e + 2
            if nxt > 0:
                # Eight bytes a word (bw, cw: the words of buf and codes at every byte offset).
                odd = _U(0)
                nw = width >> 3
                bk = i & 7
                bi = i >> 3
                ck = ncodes & 7
                ci = ncodes >> 3
                for q in range(nw):
                    r, f = _translate8(bw[bk, bi + q])
                    odd |= f
                    cw[ck, ci + q] = r
                for t in range(nw * 8, width):
                    x = buf[i + t]
                    odd |= _U(np.uint8(x - np.uint8(33)) > np.uint8(93))
                    codes[ncodes + t] = byte_to_code[x]
                if odd == _U(0):
                    ncodes += width
                    i = nxt
                    continue
        # Slow path (any other line; it overwrites what the fast path wrote): skip
        # whitespace and control bytes, note the first byte > 126, learn the width.
        j = i
        while j < n and buf[j] != 10:
            b = buf[j]
            if b > 32:
                if b > 126 and bad < 0:
                    bad = j
                codes[ncodes] = byte_to_code[b]
                ncodes += 1
            j += 1
        width = j - i
        if width > 0 and buf[j - 1] == 13:
            width -= 1
        i = j + 1
    if nrec > 0:
        se[nrec - 1] = ncodes
    return nrec, ncodes, bad


def parse_block(buf: bytes, name: str = "input") -> ParsedBlock:
    """Parse a block of whole FASTA records (see :func:`iter_blocks`)."""
    prepare_numba()
    arr = np.frombuffer(buf, dtype=np.uint8)
    max_records = int(np.count_nonzero(arr == 62)) + 1  # '>': ~6x faster than bytes.count
    codes = np.empty(arr.shape[0], dtype=np.uint8)
    hs, he, ss, se = (np.empty(max_records, dtype=np.int64) for _ in range(4))
    nrec, ncodes, bad = _parse(arr, _shifted_words(arr), BYTE_TO_CODE, codes, _shifted_words(codes), hs, he, ss, se)
    if bad >= 0:
        raise InputError(f"{name}: binary data in a sequence line, not a FASTA file")
    return ParsedBlock(buf, codes[:ncodes], hs[:nrec], he[:nrec], ss[:nrec], se[:nrec])


# ---------------------------------------------------------------- telling FASTA from .npy

FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".ffn", ".fas", ".fsa", ".contigs")



def sniff_input(path: str) -> str:
    """``npy`` or ``fasta``: by extension first, then by content (gzip is looked into)."""
    low = path.lower()
    if low.endswith(".npy"):
        return "npy"
    base = low[:-3] if low.endswith(".gz") else low
    if base.endswith(FASTA_SUFFIXES):
        return "fasta"
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, not a file")
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head.startswith(b"\x93NUMPY"):  # vae.matrix.NPY_MAGIC (fasta.py imports nothing of the matrix format)
        return "npy"
    if head.startswith(b"PK\x03\x04"):
        raise InputError(f"{path}: a .npz archive (or other zip), not a .npy k-mer matrix or FASTA file")
    if head[:2] == b"\x1f\x8b":
        import gzip

        try:
            with gzip.open(path, "rb") as fh:
                head = fh.read(4096)
        except (OSError, EOFError) as e:
            raise InputError(f"{path}: damaged gzip data ({e})") from None
    if head.lstrip()[:1] == b">":
        return "fasta"
    raise InputError(f"{path}: neither a .npy k-mer matrix nor a FASTA file")
