"""Progress bars on stderr (tqdm), shared by every command."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from tqdm import tqdm


@contextmanager
def counting_bar(disable: bool = False) -> Iterator[Callable[[int, int, int], None]]:
    """A bar of input MB read, with sequences and Mbp in its postfix; yields ``update(records, bases, bytes)``."""
    bar = tqdm(total=None, unit="B", unit_scale=True, unit_divisor=1000, desc="counting", file=sys.stderr,
               disable=disable, mininterval=0.5, dynamic_ncols=True)
    state = {"records": 0, "bases": 0}

    def update(records: int, bases: int, nbytes: int) -> None:
        state["records"] += records
        state["bases"] += bases
        bar.set_postfix_str(f"{state['records']:,} seqs, {state['bases'] / 1e6:,.1f} Mbp", refresh=False)
        bar.update(nbytes)

    try:
        yield update
    finally:
        bar.close()


@contextmanager
def rows_bar(total: int | None, desc: str = "rows", disable: bool = False) -> Iterator[Callable[[int], None]]:
    """A bar over rows; yields ``update(n_rows)``."""
    bar = tqdm(total=total or None, unit="rows", unit_scale=True, desc=desc, file=sys.stderr,
               disable=disable, mininterval=0.5, dynamic_ncols=True)
    try:
        yield bar.update
    finally:
        bar.close()
