"""train_vae --devices N (tf.distribute.MirroredStrategy), on CPU with two logical devices.

TensorFlow fixes its devices at start-up, so the runs happen in a fresh
subprocess that splits the CPU into two logical devices first. The same run on
one device and on two must follow the same loss trajectory (not bit for bit:
each replica draws its own sampling noise and normalises its half of the batch
in BatchNorm), checkpoints and resume must work across device counts, and
asking for more devices than exist must fail before anything is written.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from .conftest import REPO

pytest.importorskip("tensorflow", reason="multi-device training needs TensorFlow")

SCRIPT = textwrap.dedent('''
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from vae.errors import InputError
    from vae.train import TrainOptions, train

    path, out = sys.argv[1], sys.argv[2]
    tiny = dict(input=path, hidden=(64, 32), latent=8, batch_size=128, lr=1e-3, warmup_epochs=1, quiet=True, seed=5)
    for devices in (1, 2):
        train(TrainOptions(run_dir=os.path.join(out, f"run{devices}"), epochs=4, devices=devices, **tiny))
    # A 2-device run interrupted after 2 epochs, resumed on 1 device (checkpoints do not depend on the count).
    train(TrainOptions(run_dir=os.path.join(out, "resumed"), epochs=2, devices=2, **tiny))
    train(TrainOptions(run_dir=os.path.join(out, "resumed"), epochs=3, devices=1, resume=True, quiet=True))
    try:
        train(TrainOptions(run_dir=os.path.join(out, "toomany"), epochs=1, devices=3, **tiny))
        print(json.dumps({"error": None}))
    except InputError as e:
        print(json.dumps({"error": str(e)}))
''')


def history(run_dir) -> list[dict]:
    with open(os.path.join(run_dir, "history.csv"), newline="") as fh:
        return list(csv.DictReader(fh))


def test_two_devices_follow_the_one_device_trajectory(tmp_path):
    from .test_train import synthetic_genomes

    x, _ = synthetic_genomes(n_frag=250)
    np.save(tmp_path / "train.npy", x)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "train.npy"), str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["error"] and "--devices 3: only 2" in result["error"]
    assert not (tmp_path / "toomany").exists()

    one, two = history(tmp_path / "run1"), history(tmp_path / "run2")
    assert len(one) == len(two) == 4
    for a, b in zip(one, two, strict=True):
        # Training losses (epoch means over all batches) agree closely; a different seed on one device moves them
        # by ~1.5 %. Validation of this tiny, fast-learning model swings ~10 % between seeds, hence the looser bound.
        for key, tol in (("loss", 0.03), ("recon", 0.03), ("val_loss", 0.15)):
            va, vb = float(a[key]), float(b[key])
            assert abs(va - vb) <= tol * abs(va), (a["epoch"], key, va, vb)
    # Both learned: the loss falls by far more than the two runs differ.
    assert float(two[-1]["loss"]) < 0.8 * float(two[0]["loss"])
    log2 = (tmp_path / "run2" / "train.log").read_text()
    assert "2 replicas (MirroredStrategy" in log2 and "64 rows each" in log2
    assert "replicas" not in (tmp_path / "run1" / "train.log").read_text()
    # The run folder does not record the device count: resume on any number of devices.
    assert "devices" not in json.loads((tmp_path / "run2" / "config.json").read_text())["hyperparameters"]
    resumed = history(tmp_path / "resumed")
    assert [r["epoch"] for r in resumed] == ["1", "2", "3"]
    assert (tmp_path / "resumed" / "encoder.keras").exists()
