"""Encoder, decoder, and the beta-VAE with its loss (DESIGN.md, "The model").

Input: CLR-transformed k-mer features (2772). Encoder 2772 -> 1024 -> 512 ->
(z_mean, z_log_var) of ``latent`` each, Dense + BatchNorm + LeakyReLU(0.2),
z_log_var clipped to [-20, 2], reparameterised sample z. Decoder mirrors it to
2772 linear outputs. Loss per sample: sum of squared errors over the 2772
features (= 2772 x MSE) + kl_weight x KL(q(z|x) || N(0, I)); kl_weight is
warmed up to beta by the trainer.

``--kmers A-B`` models only some k-mer groups: the encoder still takes the
2772 CLR features and its first layer (``KmerColumns``) keeps those groups'
columns (1-5: 692); the decoder reconstructs only them, so the loss is the
sum over those columns. ``--group-weights`` weights each group's squared
errors (all 1 by default: the loss above).

``--contrast W`` (with ``--denoise``) adds W x an InfoNCE term on the
training batches: each row's denoised (short) profile must land nearer to
its own clean profile than to the other clean rows of the batch, with
logits -|z_mean(noisy) - z_mean(clean)|^2 relative to the batch's mean
squared distance (:func:`contrastive_loss`). It targets the k-NN metric
directly (measured in VAE.md: it helps contigs of 2 kb and more, not 1-2 kb
ones); validation reports the VAE loss only. ``--contrast-exclude K`` drops
each row's K nearest other clean rows (CLR input distance) from its
negatives: in a batch drawn from a few dozen genomes they are mostly pieces
of the same genome, which a plain InfoNCE would push apart.
``--contrast-noisy-negatives`` adds the other rows' denoised views to the
negatives, so that short profiles of different sequences are pushed apart
too (the shipped recipe uses both, at temperature 1).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .kmers import N_FEATURES, groups_in
from .layers import ClipLayer, KmerColumns, Sampling, encoder_columns
from .runtime import import_keras, import_tensorflow
from .transform import clr_ops

keras = import_keras()
layers, ops = keras.layers, keras.ops

LEAKY_SLOPE = 0.2
#: Encoder output names; inference always takes Z_MEAN.
Z_MEAN, Z_LOG_VAR, Z = "z_mean", "z_log_var", "z"


#: Keras' default BatchNorm momentum; runs with few steps an epoch use less (vae.train.bn_momentum_for).
BN_MOMENTUM = 0.99


def _dense_block(x, units: int, name: str, dropout: float, bn_momentum: float = BN_MOMENTUM):
    x = layers.Dense(units, name=f"{name}_dense")(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
    x = layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=f"{name}_act")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


def build_encoder(latent: int, hidden: Sequence[int], dropout: float = 0.0,
                  input_dim: int = N_FEATURES, seed: int | None = None,
                  columns: Sequence[int] | None = None, bn_momentum: float = BN_MOMENTUM) -> keras.Model:
    """The encoder: CLR features -> [z_mean, z_log_var, z].

    ``columns`` (feature indices, e.g. ``kmers.feature_columns(range(1, 6))``):
    the encoder still takes all ``input_dim`` features and its first layer
    (:class:`KmerColumns`) keeps only these; None = all.
    """
    inputs = keras.Input(shape=(input_dim,), name="clr_kmers")
    x = inputs
    if columns is not None and list(columns) != list(range(input_dim)):
        x = KmerColumns(columns, name="kmer_columns")(x)
    for i, units in enumerate(hidden):
        x = _dense_block(x, units, f"enc{i}", dropout, bn_momentum)
    z_mean = layers.Dense(latent, name=Z_MEAN, dtype="float32")(x)
    z_log_var = layers.Dense(latent, name="z_log_var_raw", dtype="float32")(x)
    z_log_var = ClipLayer(name=Z_LOG_VAR, dtype="float32")(z_log_var)
    z = Sampling(seed=seed, name=Z, dtype="float32")([z_mean, z_log_var])
    return keras.Model(inputs, [z_mean, z_log_var, z], name="encoder")


def build_decoder(latent: int, hidden: Sequence[int], dropout: float = 0.0,
                  output_dim: int = N_FEATURES, bn_momentum: float = BN_MOMENTUM) -> keras.Model:
    """The decoder: z -> reconstructed CLR features (linear output)."""
    inputs = keras.Input(shape=(latent,), name="z")
    x = inputs
    for i, units in enumerate(reversed(tuple(hidden))):
        x = _dense_block(x, units, f"dec{i}", dropout, bn_momentum)
    outputs = layers.Dense(output_dim, name="reconstruction", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="decoder")


def reconstruction_loss(x, reconstruction, feature_weights=None):
    """Per-sample sum of squared errors over features (= n_features x MSE), each weighted when weights are given."""
    sq = ops.square(ops.cast(x, "float32") - ops.cast(reconstruction, "float32"))
    if feature_weights is not None:
        sq = sq * ops.convert_to_tensor(feature_weights, dtype="float32")
    return ops.sum(sq, axis=-1)


def kl_divergence(z_mean, z_log_var):
    """Per-sample KL(N(z_mean, exp(z_log_var)) || N(0, I))."""
    return -0.5 * ops.sum(1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=-1)


def _squared_distances(a, b):
    """(n, m) squared Euclidean distances between the rows of a and b, clipped at 0 against rounding."""
    return ops.maximum(ops.sum(ops.square(a), axis=-1)[:, None] + ops.sum(ops.square(b), axis=-1)[None, :]
                       - 2.0 * ops.matmul(a, ops.transpose(b)), 0.0)


def nearest_rows_mask(x, k: int):
    """(n, n) boolean mask: True where row j is one of row i's ``k`` nearest other rows of ``x`` (squared Euclidean).

    Ties at the k-th distance are all included; the diagonal is always False.
    """
    x = ops.cast(x, "float32")
    sq = _squared_distances(x, x)
    n = ops.shape(sq)[0]
    off_diagonal = ops.logical_not(ops.eye(n, dtype="bool"))
    # Sorted, each row's own entry (-1) comes first, its k-th nearest other row at position k
    # (or the farthest, in a batch of k rows or fewer).
    sq_others = ops.where(off_diagonal, sq, -1.0)
    position = ops.minimum(ops.convert_to_tensor(k, "int32"), ops.cast(n, "int32") - 1)
    kth = ops.take(ops.sort(sq_others, axis=-1), position, axis=1)
    return ops.logical_and(sq_others <= kth[:, None], off_diagonal)


def contrastive_loss(z_noisy, z_clean, temperature: float, exclude=None, noisy_negatives: bool = False):
    """Per-sample InfoNCE of the pairs (z_noisy[i], z_clean[i]) against the batch's other clean rows.

    Logits are minus the squared Euclidean distances (the metric the k-NN
    commands use) divided by ``temperature`` x their mean over the pairs
    i != j (a constant for the gradient); log-softmax over each noisy row's
    distances to every clean row, the target being its own. Relative to the
    batch's spread, the term cannot be satisfied by scaling the latent: with
    plain distances it saturated within two epochs (noisy views lie within a
    few posterior standard deviations of their clean profile, other rows far
    away) and taught nothing (VAE.md). ``exclude``: an optional (n, n)
    boolean mask of pairs i != j left out of row i's negatives (the
    normalising mean still counts them). ``noisy_negatives``: the other
    rows' noisy views are negatives too (2n - 1 candidates, as in SimCLR),
    so that short profiles of different sequences are also pushed apart,
    not only each short profile from the others' clean ones.
    """
    a = ops.cast(z_noisy, "float32")
    b = ops.cast(z_clean, "float32")
    sq = _squared_distances(a, b)
    n = ops.shape(sq)[0]
    nf = ops.cast(n, "float32")
    off_diagonal_mean = (ops.sum(sq) - ops.sum(ops.diagonal(sq))) / ops.maximum(nf * (nf - 1.0), 1.0)
    scale = ops.stop_gradient(ops.maximum(off_diagonal_mean, 1e-12)) * temperature
    logits = -sq / scale
    if exclude is not None:
        logits = ops.where(exclude, -1e30, logits)
    if noisy_negatives:
        drop = ops.eye(n, dtype="bool") if exclude is None else ops.logical_or(ops.eye(n, dtype="bool"), exclude)
        logits = ops.concatenate([logits, ops.where(drop, -1e30, -_squared_distances(a, a) / scale)], axis=-1)
    return -ops.diagonal(ops.log_softmax(logits, axis=-1)[:, :n])


@keras.saving.register_keras_serializable(package="kmer_vae", name="VAE")
class VAE(keras.Model):
    """The beta-VAE. ``kl_weight`` is a non-trainable variable the trainer's warm-up sets each epoch.

    ``call`` always takes CLR features (2772). With ``raw_rows=True`` the data
    given to ``fit``/``evaluate``/``predict`` are raw matrix rows instead
    (2773 columns, float16 or float32): the compiled steps drop the length
    column and apply :func:`vae.transform.clr_ops` on the device, so the
    input pipeline only moves bytes.
    """

    def __init__(self, encoder: keras.Model, decoder: keras.Model, beta: float, raw_rows: bool = False,
                 group_weights: Mapping[int, float] | None = None, contrast: float = 0.0,
                 contrast_temperature: float | None = None, contrast_exclude: int = 0,
                 contrast_noisy_negatives: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.beta = float(beta)
        self.raw_rows = bool(raw_rows)
        # Per-k weights of the squared errors (JSON configs bring the keys back as strings); absent k = 1.
        self.group_weights = {int(k): float(w) for k, w in (group_weights or {}).items()}
        self._feature_weights = None
        if any(w != 1.0 for w in self.group_weights.values()):
            cols = self.columns if self.columns is not None else range(N_FEATURES)
            fw = np.ones(len(cols), np.float32)
            for k, pos in groups_in(cols).items():
                fw[pos] = self.group_weights.get(k, 1.0)
            self._feature_weights = fw
        self.contrast = float(contrast)
        if self.contrast > 0 and contrast_temperature is None:
            raise ValueError("contrast > 0 needs a contrast_temperature (train_vae's default: TrainOptions)")
        self.contrast_temperature = None if contrast_temperature is None else float(contrast_temperature)
        self.contrast_exclude = int(contrast_exclude)
        self.contrast_noisy_negatives = bool(contrast_noisy_negatives)
        self.kl_weight = keras.Variable(0.0, trainable=False, dtype="float32", name="kl_weight")
        self.recon_tracker = keras.metrics.Mean(name="recon")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.contrast_tracker = keras.metrics.Mean(name="contrast") if self.contrast > 0 else None

    @property
    def columns(self) -> list[int] | None:
        """Feature columns the encoder reads and the decoder reconstructs (None = all)."""
        return encoder_columns(self.encoder)

    def _target(self, x):
        """The reconstruction target: the encoder's columns of the CLR rows."""
        cols = self.columns
        if cols is None:
            return x
        return x[..., cols[0] : cols[0] + len(cols)] if cols == list(range(cols[0], cols[0] + len(cols))) else \
            ops.take(x, ops.convert_to_tensor(cols, dtype="int32"), axis=-1)

    def call(self, x, training: bool = False):
        z_mean, z_log_var, z = self.encoder(x, training=training)
        return self.decoder(z, training=training), z_mean, z_log_var

    def _clr_of_rows(self, data):
        if not self.raw_rows:
            return data
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        # y, when given, is the clean target of a denoising step: raw rows too.
        return keras.utils.pack_x_y_sample_weight(clr_ops(x[:, 1:]), None if y is None else clr_ops(y[:, 1:]),
                                                  sample_weight)

    def train_step(self, data):
        return super().train_step(self._clr_of_rows(data))

    def test_step(self, data):
        return super().test_step(self._clr_of_rows(data))

    def predict_step(self, data):
        return super().predict_step(self._clr_of_rows(data))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        reconstruction, z_mean, z_log_var = y_pred
        # (x, y) pairs: y is the clean profile of a denoised input x; else x is its own target.
        target = self._target(x if y is None else y)
        recon = ops.mean(reconstruction_loss(target, reconstruction, self._feature_weights))
        kl = ops.mean(kl_divergence(z_mean, z_log_var))
        # Weighted by batch size, as Keras weights the loss: the epoch means then
        # agree with the loss when the last batch is short.
        n = ops.cast(ops.shape(reconstruction)[0], "float32")
        self.recon_tracker.update_state(recon, sample_weight=n)
        self.kl_tracker.update_state(kl, sample_weight=n)
        loss = recon + ops.cast(self.kl_weight, "float32") * kl
        if self.contrast > 0 and training and y is not None:
            # The clean rows through the same encoder (same step, same BatchNorm mode): the pair's other view.
            z_clean = self.encoder(y, training=True)[0]
            exclude = nearest_rows_mask(target, self.contrast_exclude) if self.contrast_exclude > 0 else None
            contrast = ops.mean(contrastive_loss(z_mean, z_clean, self.contrast_temperature, exclude,
                                                 self.contrast_noisy_negatives))
            self.contrast_tracker.update_state(contrast, sample_weight=n)
            loss = loss + self.contrast * contrast
        return _per_replica(loss)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "beta": self.beta,
            "raw_rows": self.raw_rows,
            "group_weights": {str(k): w for k, w in sorted(self.group_weights.items())},
            "contrast": self.contrast,
            "contrast_temperature": self.contrast_temperature,
            "contrast_exclude": self.contrast_exclude,
            "contrast_noisy_negatives": self.contrast_noisy_negatives,
        }

    @classmethod
    def from_config(cls, config: dict) -> "VAE":
        encoder = keras.saving.deserialize_keras_object(config.pop("encoder"))
        decoder = keras.saving.deserialize_keras_object(config.pop("decoder"))
        return cls(encoder, decoder, **config)


def _per_replica(loss):
    """The loss of one replica's share of the batch, divided by the replicas in sync.

    Under tf.distribute (``train_vae --devices N``) the replicas' gradients are
    summed, so each divides its mean loss by N, as Keras's built-in losses do;
    Keras multiplies the reported loss back. One device: unchanged.
    """
    if keras.config.backend() == "tensorflow":
        n = import_tensorflow().distribute.get_strategy().num_replicas_in_sync
        if n > 1:
            return loss * (1.0 / n)
    return loss


def build_vae(latent: int, hidden: Sequence[int], beta: float,
              dropout: float = 0.0, seed: int | None = None, raw_rows: bool = False,
              columns: Sequence[int] | None = None, bn_momentum: float = BN_MOMENTUM,
              group_weights: Mapping[int, float] | None = None, contrast: float = 0.0,
              contrast_temperature: float | None = None, contrast_exclude: int = 0,
              contrast_noisy_negatives: bool = False) -> VAE:
    """Encoder + decoder + VAE (the defaults of the architecture are vae.train.TrainOptions', in one place).

    ``columns``: the feature columns to model (None = all 2772); the decoder reconstructs only those.
    ``group_weights``: k -> weight of that group's squared errors in the loss (absent = 1).
    ``contrast``: weight of the InfoNCE term of denoised pairs (0 = off; the trainer needs --denoise for it);
    ``contrast_temperature`` its temperature (:func:`contrastive_loss`); ``contrast_exclude`` the number of
    nearest clean rows dropped from each row's negatives (:func:`nearest_rows_mask`);
    ``contrast_noisy_negatives`` makes the other rows' denoised views negatives too.
    """
    n_out = N_FEATURES if columns is None else len(columns)
    vae = VAE(build_encoder(latent, hidden, dropout, seed=seed, columns=columns, bn_momentum=bn_momentum),
              build_decoder(latent, hidden, dropout, output_dim=n_out, bn_momentum=bn_momentum), beta=beta,
              raw_rows=raw_rows, group_weights=group_weights, contrast=contrast,
              contrast_temperature=contrast_temperature, contrast_exclude=contrast_exclude,
              contrast_noisy_negatives=contrast_noisy_negatives, name="vae")
    vae.build((None, N_FEATURES))
    return vae
