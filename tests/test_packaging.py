"""The laptop install: a wheel, installed without TensorFlow, embeds FASTA with the shipped model.

The wheel is built from a copy of the checkout (``pip wheel . --no-deps``) and
installed with ``--no-deps`` into a fresh virtual environment made by plain
``python3 -m venv`` (no system site-packages, so no TensorFlow or Keras). Its
base dependencies (numpy, numba, isal, scipy, scikit-learn, tqdm, matplotlib,
psutil and what they need) are the ones already installed here: the closure of
the wheel's own ``Requires-Dist`` (extras excluded) is linked into a folder the
environment sees through a ``.pth`` file. That keeps the test offline and fast,
and nothing outside that closure (TensorFlow in particular) is visible.

Then ``embedding -i x.fa -o e.npy`` runs from a folder outside the checkout,
with no ``-m``: it must find the encoder inside the installed package.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from vae import artifacts, embed
from vae.simulate import random_genome, write_fasta

from .conftest import REPO

#: Generous: a fresh environment compiles the numba kernels once (no cache yet).
TIMEOUT = 600
HEAVY = ("tensorflow", "keras", "tf_keras", "jax", "torch")


def _base_requirements(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist lines that hold without any extra."""
    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    reqs = [Requirement(line.split(":", 1)[1].strip()) for line in lines if line.startswith("Requires-Dist:")]
    return [r.name for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def _closure(names: list[str]) -> list[importlib.metadata.Distribution]:
    """The installed distributions ``names`` need, transitively (markers evaluated here, extras excluded)."""
    from packaging.requirements import Requirement

    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        dist = importlib.metadata.distribution(name)  # PackageNotFoundError = this environment lacks a base dependency
        seen[name] = dist
        for line in dist.requires or []:
            r = Requirement(line)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return list(seen.values())


def _link_top_levels(dists, into: Path) -> None:
    """Symlink each distribution's top-level files and folders (from its RECORD) into ``into``."""
    for dist in dists:
        tops = {Path(str(f)).parts[0] for f in (dist.files or []) if not str(f).startswith("..")}
        if not tops:  # installed without a RECORD (e.g. by a system package manager): its top-level names
            tops = {t + suffix for t in (dist.read_text("top_level.txt") or "").split() for suffix in ("", ".py")}
        for top in tops:
            src, dst = Path(dist.locate_file(top)), into / top
            if src.exists() and not dst.exists() and top != "__pycache__":
                dst.symlink_to(src)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed; returns its bin/ folder."""
    if importlib.util.find_spec("packaging") is None:
        pytest.skip("the 'packaging' library is needed to read the wheel's requirements")
    root = tmp_path_factory.mktemp("packaging")
    src = root / "src"
    src.mkdir()
    # A copy of what the wheel is built from: building in the checkout would leave build/ and egg-info there.
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "vae", src / "vae", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # Offline where setuptools is at hand; otherwise pip fetches the build backend (CI reaches PyPI).
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", ".", "--no-deps", *isolation, "-w", str(root / "wheels")], cwd=src, check=True,
                   timeout=TIMEOUT)
    wheel = next((root / "wheels").glob("kmer_vae-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=TIMEOUT)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "--disable-pip-version-check", "-q", "install", "--no-deps", "--no-index",
                    str(wheel)], check=True, timeout=TIMEOUT)
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    deps = root / "deps"
    deps.mkdir()
    _link_top_levels(_closure(_base_requirements(wheel)), deps)
    (site / "kmer_vae_test_deps.pth").write_text(str(deps) + "\n")
    return venv / "bin"


def _clean_env() -> dict[str, str]:
    """The user's environment minus anything that would point Python at the checkout or hide TF's messages."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TF_CPP", "VIRTUAL_ENV"))}
    env["MPLBACKEND"] = "Agg"
    return env


def test_wheel_without_tensorflow_embeds_fasta_with_the_shipped_model(installed, tmp_path):
    py = installed / "python"
    # The environment really is a light one: no TensorFlow or Keras to be found, and vae comes from the wheel.
    probe = subprocess.run(
        [str(py), "-c", "import importlib.util, json, vae; print(json.dumps([vae.__file__, "
                        f"[m for m in {HEAVY!r} if importlib.util.find_spec(m)]]))"],
        capture_output=True, text=True, cwd=tmp_path, env=_clean_env(), timeout=TIMEOUT)
    assert probe.returncode == 0, probe.stderr
    vae_file, heavy = json.loads(probe.stdout)
    assert heavy == []
    assert Path(vae_file).resolve().is_relative_to(installed.parent.resolve()), vae_file
    assert not Path(vae_file).resolve().is_relative_to(REPO.resolve())

    records = [(f"contig_{i}", random_genome(2000 + 700 * i, seed=i)) for i in range(6)]
    write_fasta(str(tmp_path / "x.fa"), records)
    proc = subprocess.run([str(installed / "embedding"), "-i", "x.fa", "-o", "e.npy"], capture_output=True, text=True,
                          cwd=tmp_path, env=_clean_env(), timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    # The numpy engine, with the encoder shipped inside the installed package (not the checkout's).
    assert "numpy engine" in proc.stderr and str(installed.parent) in proc.stderr, proc.stderr
    spec = json.loads((artifacts.shipped_model_dir() / artifacts.SPEC_NAME).read_text())
    emb = np.load(tmp_path / "e.npy", allow_pickle=False)
    assert emb.shape == (len(records), 1 + spec["latent"]) and emb.dtype == np.float32
    assert (tmp_path / "e.txt").read_text().split() == [name for name, _ in records]
    # Same numbers as the checkout's NumPy engine on the same file (the same encoder, the same code).
    ref = embed.load_encoder(str(artifacts.shipped_model_dir() / artifacts.SPEC_NAME), "numpy")
    out = tmp_path / "ref.npy"
    from vae.count import CountOptions

    embed.embed_fasta(ref, [str(tmp_path / "x.fa")], str(out), str(tmp_path / "ref.txt"), CountOptions())
    np.testing.assert_allclose(emb, np.load(out), rtol=0, atol=1e-5)

    # And in-process, the light path imports neither TensorFlow nor Keras.
    check = subprocess.run(
        [str(py), "-c", "import sys\nfrom vae.cli import embedding\ntry:\n    embedding(['-i', 'x.fa', '-o', 'f.npy', '--quiet'])\n"
                        "except SystemExit as e:\n    assert not e.code, e.code\n"
                        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"],
        capture_output=True, text=True, cwd=tmp_path, env=_clean_env(), timeout=TIMEOUT)
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "[]" and check.stderr == ""
