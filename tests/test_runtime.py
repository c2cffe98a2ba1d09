"""Quiet by default: TensorFlow's start-up lines filtered by the log level in force; ``--quiet`` = errors only."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vae import artifacts, runtime
from vae.cli import calculate_kmer_frequencies
from vae.encoder import keras_available
from vae.kmers import profile
from vae.simulate import random_genome, write_fasta

from .conftest import REPO, call_cli

# What TensorFlow 2.21 printed on import here, at TF_CPP_MIN_LOG_LEVEL=2 (the first two lines) and 0.
BANNER = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796661734.554210    6691 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results.
I0000 00:00:1796661734.601801    6691 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions.
To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
E0000 00:00:1796661734.601802    6691 cuda_driver.cc:282] failed call to cuInit: CUDA_ERROR_NO_DEVICE
something else entirely
"""


def test_filter_keeps_what_the_level_allows():
    lines = BANNER.splitlines(keepends=True)
    assert runtime.filter_tf_log(BANNER, 0) == BANNER
    # Level 1 drops INFO lines and their continuation; the unrecognised line after an E line stays with it.
    assert runtime.filter_tf_log(BANNER, 1) == lines[0] + "".join(lines[4:])
    assert runtime.filter_tf_log(BANNER, 2) == "".join(lines[4:])
    assert runtime.filter_tf_log(BANNER, 3) == ""
    # Text that is not TensorFlow's log (no header before it) is never dropped.
    assert runtime.filter_tf_log("Traceback (most recent call last):\n", 3) == "Traceback (most recent call last):\n"


def test_quiet_stderr_restores_and_lets_errors_through(capsys):
    with runtime.quiet_stderr():
        print("progress", file=sys.stderr)
    print("after", file=sys.stderr)
    with pytest.raises(ValueError), runtime.quiet_stderr():
        raise ValueError("x")
    assert capsys.readouterr().err == "after\n"


def test_quiet_means_nothing_on_stderr(tmp_path, capsys):
    fa = tmp_path / "x.fa"
    write_fasta(str(fa), [("a", random_genome(3000, seed=1)), ("b", random_genome(2000, seed=2))])
    out = ["-id", tmp_path / "ids.txt", "-k", tmp_path / "k.npy"]
    assert call_cli(calculate_kmer_frequencies, ["-i", fa, *out]) == 0
    assert "calculate_kmer_frequencies: " in capsys.readouterr().err  # the summary, without --quiet
    assert call_cli(calculate_kmer_frequencies, ["-i", fa, *out, "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    # Errors still come through, as one line.
    assert call_cli(calculate_kmer_frequencies, ["-i", tmp_path / "missing.fa", *out, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err and "missing.fa" in err


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    env.update(CUDA_VISIBLE_DEVICES="", **extra)
    return env


@pytest.mark.skipif(not keras_available(), reason="needs TensorFlow and Keras")
def test_keras_engine_is_quiet(tmp_path):
    """`embedding --engine keras --quiet`: nothing at all on stderr (no TensorFlow start-up lines, no summary)."""
    if not (artifacts.shipped_model_dir() / artifacts.KERAS_NAME).exists():
        pytest.skip("no shipped encoder.keras")
    rows = np.stack([profile(random_genome(n, seed=n)) for n in (1500, 4000)])
    np.save(tmp_path / "k.npy", rows)
    cmd = [sys.executable, str(REPO / "bin" / "embedding"), "--engine", "keras", "-i", str(tmp_path / "k.npy")]
    quiet = subprocess.run([*cmd, "-o", str(tmp_path / "q.npy"), "--quiet"], capture_output=True, text=True,
                           env=_env(), timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    latent = json.loads((artifacts.shipped_model_dir() / artifacts.SPEC_NAME).read_text())["latent"]
    assert np.load(tmp_path / "q.npy").shape == (2, 1 + latent)


@pytest.mark.skipif(not keras_available(), reason="needs TensorFlow and Keras")
def test_tensorflow_import_is_quiet_by_default(monkeypatch):
    """Nothing on stderr from importing TensorFlow + Keras; the user's own TF_CPP_MIN_LOG_LEVEL is left alone.

    (Which lines a level keeps is test_filter_keeps_what_the_level_allows: TensorFlow's own start-up lines vary.)
    """
    default = subprocess.run([sys.executable, "-c", "import os; from vae.runtime import import_keras; import_keras(); "
                              "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"],
                             capture_output=True, text=True, env=_env(PYTHONPATH=str(REPO)), timeout=300, cwd=REPO)
    assert default.returncode == 0 and default.stderr == "", default.stderr
    assert default.stdout.strip() == runtime.DEFAULT_TF_LOG_LEVEL
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    assert runtime.tf_log_level() == 0 and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
