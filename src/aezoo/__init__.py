"""aezoo: the autoencoder family, from the plain autoencoder to VQ-VAE-2 and TD-VAE.

    model = aezoo.build("vae", latent_dim=10)
    out = model.loss(x)            # out.total, out.terms["recon"], out.terms["kl"]
    model.save("my_vae"); model = aezoo.load("my_vae")
    codes = aezoo.encode_dataset("runs/my_vae", split="test")   # {"mean": ..., "std": ..., "label": ...}
"""

from . import data, models  # noqa: F401  (registers the datasets and models)
from .embed import encode_dataset
from .errors import AezooError
from .registry import MODELS, build, load

__all__ = ["AezooError", "MODELS", "build", "encode_dataset", "load"]
__version__ = "0.1.0"
