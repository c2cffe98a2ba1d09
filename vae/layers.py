"""The custom Keras layers, defined and registered once.

Names and config keys match the original scripts (``Sampling``; ``ClipLayer``
with ``min_value``/``max_value``), so encoders saved by them load here.
"""
from __future__ import annotations

from .runtime import import_keras

keras = import_keras()
ops = keras.ops

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


#: For keras.saving.load_model(..., custom_objects=CUSTOM_OBJECTS): covers both plain and registered names.
CUSTOM_OBJECTS: dict[str, type] = {
    "Sampling": Sampling,
    "ClipLayer": ClipLayer,
    f"{_PACKAGE}>Sampling": Sampling,
    f"{_PACKAGE}>ClipLayer": ClipLayer,
}
