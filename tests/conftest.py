"""Shared fixtures: paths to the real genomes (skipped with a reason when absent) and a CLI runner."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
GENOMES = SHARED_DATA / "genomes"


@pytest.fixture(scope="session")
def genomes_dir() -> Path:
    """The real genomes in ../shared/data/genomes; tests that need them skip visibly without them."""
    if not GENOMES.is_dir() or not any(GENOMES.glob("*.fna.gz")):
        pytest.skip(f"real genomes not found at {GENOMES} (../shared/data is absent on this machine)")
    return GENOMES


def run_cli(command: str, *args: str, input: bytes | None = None, check: bool = False,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``bin/<command>`` as a user would (a fresh process), capturing bytes."""
    proc = subprocess.run([sys.executable, str(REPO / "bin" / command), *map(str, args)], input=input,
                          capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{command} failed ({proc.returncode}): {proc.stderr.decode()}")
    return proc


def call_cli(entry, argv: list[str]) -> int:
    """Call a console entry point in-process and return its exit status."""
    with pytest.raises(SystemExit) as exc:
        entry([str(a) for a in argv])
    return int(exc.value.code or 0)
