"""The model families; importing a module registers its models."""

from . import ae, vae  # noqa: F401
