"""The custom Keras layers, defined and registered once.

Names and config keys match the original scripts (``Sampling``; ``ClipLayer``
with ``min_value``/``max_value``), so encoders saved by them load here.
"""
from __future__ import annotations

import keras
from keras import ops

# Keras' default package for register_keras_serializable: the original scripts'
# saved configs refer to "Custom>Sampling" / "Custom>ClipLayer".
_PACKAGE = "Custom"

#: z_log_var is clipped to this range before sampling (exp stays finite).
LOG_VAR_MIN, LOG_VAR_MAX = -20.0, 2.0


@keras.saving.register_keras_serializable(package=_PACKAGE, name="ClipLayer")
class ClipLayer(keras.layers.Layer):
    """Clip values to ``[min_value, max_value]``."""

    def __init__(self, min_value: float = LOG_VAR_MIN, max_value: float = LOG_VAR_MAX, **kwargs):
        super().__init__(**kwargs)
        self.min_value = float(min_value)
        self.max_value = float(max_value)

    def call(self, x):
        return ops.clip(x, self.min_value, self.max_value)

    def get_config(self) -> dict:
        return {**super().get_config(), "min_value": self.min_value, "max_value": self.max_value}


@keras.saving.register_keras_serializable(package=_PACKAGE, name="Sampling")
class Sampling(keras.layers.Layer):
    """Reparameterised sample ``z = z_mean + exp(z_log_var / 2) * eps``, eps ~ N(0, I)."""

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        eps = keras.random.normal(ops.shape(z_mean), dtype=z_mean.dtype, seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * eps

    def get_config(self) -> dict:
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package=_PACKAGE, name="KmerColumns")
class KmerColumns(keras.layers.Layer):
    """Keep feature columns ``columns`` (indices into the 2772 CLR features, i.e. matrix column - 1).

    An encoder trained on some k-mer groups (``train_vae --kmers 1-5``) starts
    with this layer, so it still takes the full 2772-feature CLR vector (the CLR
    is per group, so selecting after it equals the CLR of the selected groups)
    and every consumer keeps passing the usual matrix. The indices live in the
    layer's config, hence in the saved ``.keras`` file.
    """

    def __init__(self, columns=(), **kwargs):
        super().__init__(**kwargs)
        self.columns = [int(c) for c in columns]
        if not self.columns:
            raise ValueError("KmerColumns needs at least one column")
        first = self.columns[0]
        # Contiguous ranges (every --kmers A-B is one) take a slice: cheaper than a gather.
        self._span = (first, first + len(self.columns)) if self.columns == list(range(first, first + len(self.columns))) else None

    def call(self, x):
        if self._span is not None:
            return x[..., self._span[0] : self._span[1]]
        return ops.take(x, ops.convert_to_tensor(self.columns, dtype="int32"), axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], len(self.columns))

    def get_config(self) -> dict:
        return {**super().get_config(), "columns": list(self.columns)}


#: For keras.saving.load_model(..., custom_objects=CUSTOM_OBJECTS): covers both plain and registered names.
CUSTOM_OBJECTS: dict[str, type] = {
    "Sampling": Sampling,
    "ClipLayer": ClipLayer,
    "KmerColumns": KmerColumns,
    f"{_PACKAGE}>Sampling": Sampling,
    f"{_PACKAGE}>ClipLayer": ClipLayer,
    f"{_PACKAGE}>KmerColumns": KmerColumns,
}


def encoder_columns(encoder) -> list[int] | None:
    """The feature columns a Keras encoder reads (its KmerColumns layer), or None for all 2772."""
    for layer in getattr(encoder, "layers", ()):
        if isinstance(layer, KmerColumns):
            return list(layer.columns)
    return None
