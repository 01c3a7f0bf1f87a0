"""Fixed-noise files: create (seeded), load and validate, hash, import from .npy / .pt."""

from verify_ate.noise.fixed_noise import (
    GENERATOR,
    FixedNoise,
    NoiseFileError,
    check_noise_shape,
    derived_noise,
    gaussian,
    import_noise,
    load_noise,
    make_noise,
    save_noise,
    tensor_sha256,
)

__all__ = [
    "GENERATOR",
    "FixedNoise",
    "NoiseFileError",
    "check_noise_shape",
    "derived_noise",
    "gaussian",
    "import_noise",
    "load_noise",
    "make_noise",
    "save_noise",
    "tensor_sha256",
]
