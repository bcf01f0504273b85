"""The model families; importing a module registers its models."""

from . import ae, regularised, tdvae, vae, vqvae  # noqa: F401
