"""Names of the files a run leaves behind, and where the shipped model lives.

One owner for every artifact name, so that train, embed, verify, export and the
demo agree on them (a name spelled in two places drifts). The shipped model is
package data (``vae/models/default/``), found with :mod:`importlib.resources`,
so it works from a checkout, an editable install and an installed wheel alike;
the checkout's ``Models/default`` is a symbolic link to the same folder.

A run folder (``train_vae -o RUN_DIR``) holds::

    config.json  split.npz  history.csv  train.log  training_curves.png
    encoder.keras                 the best encoder: the one to give to `embedding`
    encoder.npz + encoder.json    its portable NumPy export (export_encoder)
    best/ final/                  vae.keras, encoder.keras, decoder.keras
    resume/                       vae.keras + state.json after the last completed epoch

This module imports nothing heavy: the light path (NumPy engine) uses it.
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path

# ---------------------------------------------------------------- the run folder
CONFIG_FILE = "config.json"
SPLIT_FILE = "split.npz"
HISTORY_FILE = "history.csv"
LOG_FILE = "train.log"
CURVES_FILE = "training_curves.png"
BEST_DIR = "best"
FINAL_DIR = "final"
RESUME_DIR = "resume"
STATE_FILE = "state.json"
VAE_NAME = "vae.keras"
DECODER_NAME = "decoder.keras"

# ---------------------------------------------------------------- an encoder
#: The Keras encoder (safe-mode loadable).
KERAS_NAME = "encoder.keras"
#: The portable export: weights and the layer description (see vae.embed.NumpyEncoder).
WEIGHTS_NAME = "encoder.npz"
SPEC_NAME = "encoder.json"

# ---------------------------------------------------------------- the shipped model
#: Package and folder of the shipped model (package data, declared in pyproject.toml).
_PACKAGE = "vae"
_SHIPPED = "models/default"


def shipped_model_dir() -> Path:
    """The folder of the shipped default model (``vae/models/default`` wherever ``vae`` is installed).

    Always a real directory path (encoders are loaded by path). A package
    imported from a zip file has none: then the path returned does not exist and
    the caller reports the model as missing.
    """
    root = importlib.resources.files(_PACKAGE)
    for part in _SHIPPED.split("/"):
        root = root.joinpath(part)
    # Installed normally (wheel, editable, checkout) this is a pathlib.Path; from a zip it is not a file system path.
    return root if isinstance(root, Path) else Path(str(root))


def shipped_model_files() -> dict[str, Path]:
    """The shipped model's encoder files by name (whether or not they exist)."""
    d = shipped_model_dir()
    return {name: d / name for name in (KERAS_NAME, WEIGHTS_NAME, SPEC_NAME)}
