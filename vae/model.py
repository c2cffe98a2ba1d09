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
sum over those columns.
"""
from __future__ import annotations

from typing import Sequence

import keras
from keras import layers, ops

from .kmers import N_FEATURES
from .layers import ClipLayer, KmerColumns, Sampling, encoder_columns
from .transform import clr_ops

LATENT_DIM = 384
HIDDEN = (1024, 512)
BETA = 0.05
LEAKY_SLOPE = 0.2
#: Encoder output names; inference always takes Z_MEAN.
Z_MEAN, Z_LOG_VAR, Z = "z_mean", "z_log_var", "z"


def _dense_block(x, units: int, name: str, dropout: float):
    x = layers.Dense(units, name=f"{name}_dense")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    x = layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=f"{name}_act")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


def build_encoder(latent: int = LATENT_DIM, hidden: Sequence[int] = HIDDEN, dropout: float = 0.0,
                  input_dim: int = N_FEATURES, seed: int | None = None,
                  columns: Sequence[int] | None = None) -> keras.Model:
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
        x = _dense_block(x, units, f"enc{i}", dropout)
    z_mean = layers.Dense(latent, name=Z_MEAN, dtype="float32")(x)
    z_log_var = layers.Dense(latent, name="z_log_var_raw", dtype="float32")(x)
    z_log_var = ClipLayer(name=Z_LOG_VAR, dtype="float32")(z_log_var)
    z = Sampling(seed=seed, name=Z, dtype="float32")([z_mean, z_log_var])
    return keras.Model(inputs, [z_mean, z_log_var, z], name="encoder")


def build_decoder(latent: int = LATENT_DIM, hidden: Sequence[int] = HIDDEN, dropout: float = 0.0,
                  output_dim: int = N_FEATURES) -> keras.Model:
    """The decoder: z -> reconstructed CLR features (linear output)."""
    inputs = keras.Input(shape=(latent,), name="z")
    x = inputs
    for i, units in enumerate(reversed(tuple(hidden))):
        x = _dense_block(x, units, f"dec{i}", dropout)
    outputs = layers.Dense(output_dim, name="reconstruction", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="decoder")


def reconstruction_loss(x, reconstruction):
    """Per-sample sum of squared errors over features (= n_features x MSE)."""
    return ops.sum(ops.square(ops.cast(x, "float32") - ops.cast(reconstruction, "float32")), axis=-1)


def kl_divergence(z_mean, z_log_var):
    """Per-sample KL(N(z_mean, exp(z_log_var)) || N(0, I))."""
    return -0.5 * ops.sum(1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=-1)


@keras.saving.register_keras_serializable(package="kmer_vae", name="VAE")
class VAE(keras.Model):
    """The beta-VAE. ``kl_weight`` is a non-trainable variable the trainer's warm-up sets each epoch.

    ``call`` always takes CLR features (2772). With ``raw_rows=True`` the data
    given to ``fit``/``evaluate``/``predict`` are raw matrix rows instead
    (2773 columns, float16 or float32): the compiled steps drop the length
    column and apply :func:`vae.transform.clr_ops` on the device, so the
    input pipeline only moves bytes.
    """

    def __init__(self, encoder: keras.Model, decoder: keras.Model, beta: float = BETA, raw_rows: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.beta = float(beta)
        self.raw_rows = bool(raw_rows)
        self.kl_weight = keras.Variable(0.0, trainable=False, dtype="float32", name="kl_weight")
        self.recon_tracker = keras.metrics.Mean(name="recon")
        self.kl_tracker = keras.metrics.Mean(name="kl")

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
        recon = ops.mean(reconstruction_loss(target, reconstruction))
        kl = ops.mean(kl_divergence(z_mean, z_log_var))
        # Weighted by batch size, as Keras weights the loss: the epoch means then
        # agree with the loss when the last batch is short.
        n = ops.cast(ops.shape(reconstruction)[0], "float32")
        self.recon_tracker.update_state(recon, sample_weight=n)
        self.kl_tracker.update_state(kl, sample_weight=n)
        return recon + ops.cast(self.kl_weight, "float32") * kl

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "beta": self.beta,
            "raw_rows": self.raw_rows,
        }

    @classmethod
    def from_config(cls, config: dict) -> "VAE":
        encoder = keras.saving.deserialize_keras_object(config.pop("encoder"))
        decoder = keras.saving.deserialize_keras_object(config.pop("decoder"))
        return cls(encoder, decoder, **config)


def build_vae(latent: int = LATENT_DIM, hidden: Sequence[int] = HIDDEN, beta: float = BETA,
              dropout: float = 0.0, seed: int | None = None, raw_rows: bool = False,
              columns: Sequence[int] | None = None) -> VAE:
    """Encoder + decoder + VAE with the default (contract) architecture unless told otherwise.

    ``columns``: the feature columns to model (None = all 2772); the decoder reconstructs only those.
    """
    n_out = N_FEATURES if columns is None else len(columns)
    vae = VAE(build_encoder(latent, hidden, dropout, seed=seed, columns=columns),
              build_decoder(latent, hidden, dropout, output_dim=n_out), beta=beta, raw_rows=raw_rows, name="vae")
    vae.build((None, N_FEATURES))
    return vae
