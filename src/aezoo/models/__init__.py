"""The model families; importing a module registers its models."""

from . import ae, beta_tc_vae, dip_vae, factor_vae, regularised, tdvae, vae, vqvae, vqvae2  # noqa: F401
