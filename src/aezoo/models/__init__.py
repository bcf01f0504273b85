"""The model families; importing a module registers its models."""

from . import ae, tdvae, vae  # noqa: F401
