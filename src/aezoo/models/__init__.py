"""The model families; importing a module registers its models."""

from . import ae, regularised, tdvae, vae, vqvae, vqvae2  # noqa: F401
