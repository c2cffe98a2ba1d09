"""vae.data: reading rows without a memmap, the split, block-shuffled batches, value checks, CLR on the fly."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from vae.data import (  # noqa: E402
    BLOCK_ROWS,
    BatchPlan,
    MatrixReader,
    RowStream,
    aligned_empty,
    check_values,
    load_split,
    make_split,
)
from vae.errors import InputError  # noqa: E402
from vae.kmers import N_COLUMNS  # noqa: E402

#: Sizes of the canonical k-mer groups for k = 6..1, written out rather than taken from vae.kmers.
GROUP_SIZES = (2080, 512, 136, 32, 10, 2)


def random_matrix(n: int, dtype="float32", seed: int = 0) -> np.ndarray:
    """Rows shaped like k-mer profiles: a length column, then groups summing to 1 (some zeros)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, N_COLUMNS)) ** 4
    x[rng.random(x.shape) < 0.2] = 0.0
    x[:, 0] = rng.integers(100, 50000, n)
    start = 1
    for size in GROUP_SIZES:
        g = x[:, start : start + size]
        g /= np.maximum(g.sum(axis=1, keepdims=True), 1e-30)
        start += size
    x[3, 1:] = 0.0  # a row with no valid k-mer at all
    return x.astype(dtype)


@pytest.fixture(scope="module", params=["float32", "float16"])
def matrix(tmp_path_factory, request):
    x = random_matrix(1500, request.param)
    path = str(tmp_path_factory.mktemp("m") / f"m_{request.param}.npy")
    np.save(path, x)
    return path, x


def test_reader_reads_any_sorted_rows(matrix):
    path, x = matrix
    rng = np.random.default_rng(1)
    with MatrixReader(path) as r:
        assert r.shape == x.shape and r.dtype == x.dtype
        cases = [
            np.arange(0, 1500),  # one contiguous run
            np.arange(0, 1500, 2),  # 750 runs: more iovecs than one preadv takes
            np.sort(rng.choice(1500, 300, replace=False)),  # random gaps, small and large
            np.array([0, 9, 10, 11, 40, 1499]),  # gaps of exactly 8 and more
            np.array([1499]),
            # blocks from across the matrix, as a shuffled batch asks for them
            np.concatenate([np.arange(500, 540), np.arange(10, 40), np.array([7, 9, 1200]), np.arange(1000, 1010)]),
        ]
        for rows in cases:
            out = aligned_empty((rows.shape[0], N_COLUMNS), x.dtype)
            r.read(rows, out)
            np.testing.assert_array_equal(out, x[rows])
        out = aligned_empty((100, N_COLUMNS), x.dtype)
        r.read_range(1400, 1500, out)
        np.testing.assert_array_equal(out, x[1400:])


def test_aligned_empty_is_64_byte_aligned():
    for n in (1, 7, 1024):
        a = aligned_empty((n, N_COLUMNS), np.float16)
        assert a.ctypes.data % 64 == 0 and a.shape == (n, N_COLUMNS) and a.flags.c_contiguous


def test_split_is_seeded_disjoint_and_saved(tmp_path):
    s = make_split(1000, 0.1, seed=7)
    assert s.val.shape[0] == 100 and s.train.shape[0] == 900
    assert np.intersect1d(s.train, s.val).size == 0
    np.testing.assert_array_equal(np.union1d(s.train, s.val), np.arange(1000))
    assert np.all(np.diff(s.train) > 0) and np.all(np.diff(s.val) > 0)
    # random, not contiguous: validation rows are spread over the whole matrix
    assert s.val.min() < 100 and s.val.max() > 900
    again = make_split(1000, 0.1, seed=7)
    np.testing.assert_array_equal(again.val, s.val)
    other = make_split(1000, 0.1, seed=8)
    assert not np.array_equal(other.val, s.val)
    s.save(str(tmp_path / "split.npz"))
    loaded = load_split(str(tmp_path))
    np.testing.assert_array_equal(loaded.train, s.train)
    np.testing.assert_array_equal(loaded.val, s.val)
    assert (loaded.n_rows, loaded.seed, loaded.val_fraction) == (1000, 7, 0.1)
    with np.load(tmp_path / "split.npz", allow_pickle=False) as z:  # readable by any tool, no pickle
        assert set(z.files) >= {"train", "val"}


def test_split_max_samples_is_a_random_subset():
    s = make_split(10_000, 0.2, seed=1, max_samples=500)
    used = np.union1d(s.train, s.val)
    assert used.shape[0] == 500 and s.val.shape[0] == 100
    assert used.max() > 5000  # drawn from the whole matrix, not its head


def test_load_split_missing_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="split.npz"):
        load_split(str(tmp_path))


def test_batch_plan_shuffles_blocks_each_epoch():
    rows = np.sort(np.random.default_rng(0).choice(5000, 3000, replace=False))
    plan = BatchPlan(rows, batch_size=256, shuffle=True, seed=3)
    assert plan.steps == 3000 // 256
    e0 = [np.concatenate(b) for b in plan.epoch(0)]
    assert all(b.shape[0] == 256 for b in e0)
    flat0 = np.concatenate(e0)
    assert np.unique(flat0).shape[0] == flat0.shape[0]  # no row twice in an epoch
    assert np.isin(flat0, rows).all()
    # each batch is made of several blocks from across the matrix, each a sorted run of consecutive train rows
    pieces = list(plan.epoch(0))[0]
    assert len(pieces) >= 256 // BLOCK_ROWS
    assert np.ptp(flat0[:256]) > 1000
    flat0_again = np.concatenate([np.concatenate(b) for b in plan.epoch(0)])
    np.testing.assert_array_equal(flat0, flat0_again)  # deterministic
    flat1 = np.concatenate([np.concatenate(b) for b in plan.epoch(1)])
    assert not np.array_equal(flat0, flat1)  # reshuffled each epoch


def test_batch_plan_validation_covers_all_rows_in_order():
    rows = np.arange(10, 1010)
    plan = BatchPlan(rows, batch_size=300, shuffle=False, drop_remainder=False)
    batches = [np.concatenate(b) for b in plan.epoch(0)]
    assert [b.shape[0] for b in batches] == [300, 300, 300, 100]
    np.testing.assert_array_equal(np.concatenate(batches), rows)


def test_row_stream_is_deterministic_and_continues_across_epochs(matrix):
    path, x = matrix
    split = make_split(x.shape[0], 0.1, seed=0)
    plan = BatchPlan(split.train, 200, shuffle=True, seed=5)
    with MatrixReader(path) as r:
        got = list(RowStream(r, plan, workers=3, prefetch=4).batches(first_epoch=0, epochs=2))
        assert len(got) == 2 * plan.steps
        expect = [x[np.concatenate(p)] for e in (0, 1) for p in plan.epoch(e)]
        for g, e in zip(got, expect):
            np.testing.assert_array_equal(g, e)
        # starting at epoch 1 gives epoch 1's batches (what a resumed run reads)
        later = list(RowStream(r, plan, workers=1).batches(first_epoch=1, epochs=1))
        assert len(later) == plan.steps
        for g, e in zip(later, expect[plan.steps :]):
            np.testing.assert_array_equal(g, e)
        # ... and skipping the batches of epoch 0 already trained on, mid-epoch
        rest = list(RowStream(r, plan, workers=2).batches(first_epoch=0, epochs=2, skip=3))
        assert len(rest) == 2 * plan.steps - 3
        for g, e in zip(rest, expect[3:]):
            np.testing.assert_array_equal(g, e)


def test_check_values_counts_bad_values_and_names_the_first_row(tmp_path):
    x = random_matrix(300)
    x[57, 10] = np.nan
    x[120, 5] = np.inf
    x[200, 7] = -0.5
    x[201, 8] = -1.0
    path = str(tmp_path / "bad.npy")
    np.save(path, x)
    with MatrixReader(path) as r:
        with pytest.raises(InputError) as e:
            check_values(r, chunk_rows=64)
        msg = str(e.value)
        assert "2 NaN/Inf values" in msg and "2 negative values" in msg and "first in row 57" in msg
        assert "\n" not in msg
        # only the rows asked for are checked (a --max-samples subset)
        check_values(r, np.array([0, 1, 2, 300 - 1]))
        with pytest.raises(InputError, match="first in row 200"):
            check_values(r, np.array([0, 200, 201]))


def test_reader_rejects_wrong_shapes_and_types(tmp_path):
    np.save(tmp_path / "narrow.npy", np.zeros((10, 2772), np.float32))
    with pytest.raises(InputError, match="2773"):
        MatrixReader(str(tmp_path / "narrow.npy"))
    np.save(tmp_path / "f64.npy", np.zeros((10, N_COLUMNS), np.float64))
    with pytest.raises(InputError, match="float64"):
        MatrixReader(str(tmp_path / "f64.npy"))
    (tmp_path / "junk.npy").write_bytes(b"not a matrix at all")
    with pytest.raises(InputError, match="junk.npy"):
        MatrixReader(str(tmp_path / "junk.npy"))
    with pytest.raises(InputError, match="no such file"):
        MatrixReader(str(tmp_path / "missing.npy"))


# --------------------------------------------------------------------------- CLR on the fly


def independent_clr(rows: np.ndarray) -> np.ndarray:
    """CLR per k-mer group with Jeffreys pseudocount 0.5/n, written from the definition (float64)."""
    x = rows[:, 1:].astype(np.float64)
    out = np.empty_like(x)
    start = 0
    for size in GROUP_SIZES:
        logs = np.log(x[:, start : start + size] + 0.5 / size)
        out[:, start : start + size] = logs - logs.mean(axis=1, keepdims=True)
        start += size
    assert start == 2772
    return out


def test_clr_matches_an_independent_computation():
    from vae.transform import clr

    x = random_matrix(50)
    ref = independent_clr(x)
    np.testing.assert_allclose(clr(x), ref, rtol=1e-5, atol=1e-4)
    assert np.allclose(ref[3], 0.0)  # a row without k-mers is all zero after CLR


def test_in_graph_clr_of_raw_rows_is_what_the_model_sees(matrix):
    """VAE(raw_rows=True) fed raw rows (float32 or float16) == the encoder fed the independent CLR."""
    from vae.train import import_keras

    keras = import_keras()
    from vae.model import build_vae

    _, x = matrix
    keras.utils.set_random_seed(0)
    vae = build_vae(latent=4, hidden=(16,), beta=0.05, raw_rows=True, seed=0)
    _, z_mean_graph, _ = vae.predict(x[:64], verbose=0, batch_size=32)
    ref = independent_clr(x[:64].astype(np.float32)).astype(np.float32)
    z_mean_ref = np.asarray(vae.encoder(ref, training=False)[0])
    np.testing.assert_allclose(z_mean_graph, z_mean_ref, rtol=1e-4, atol=1e-4)
