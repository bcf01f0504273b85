"""dSprites, rendered procedurally (Matthey et al. 2017; the data of Higgins et al. 2017, beta-VAE).

Every combination of five independent generative factors gives one binary 64x64 image:

    shape        3   square, ellipse, heart
    scale        6   linspace(0.5, 1, 6)
    orientation 40   linspace(0, 2 pi, 40): step 2 pi / 39, both end points (the original's grid)
    pos_x       32   linspace(0, 1, 32)
    pos_y       32   linspace(0, 1, 32)

737,280 images in all, indexed in mixed radix with pos_y fastest, as the original's `latents_classes`.
Nothing is downloaded or stored: an image is rendered from its factors when a batch asks for it
(one vectorised pass over the batch's pixels), so the whole grid costs no memory and the data are
the same on every machine. A pixel is on when its centre lies inside the shape (no anti-aliasing).
Geometry: at scale 1 the square's side is 20 pixels, the ellipse's axes 20 and 10, the heart about
18 wide; centres run over [16, 48] pixels, so every shape at every angle stays inside the frame.
The last orientation, 2 pi, is the same angle as the first, 0, and is drawn as 0: the two images
are identical, as in the original. The ellipse is symmetric under a half turn and the square under a
quarter turn; 39 steps of 2 pi / 39 meet neither symmetry, so apart from that end point every
orientation is a distinct angle of every shape (a grid of 40 steps of 2 pi / 40 would have given the
square only 10 distinct angles), though at small scales neighbouring angles may render alike.

Splits: `test` and `val` are two disjoint fixed random sets of 1,000 grid images each; `train` is the
other 735,280. Beside the images, `factors[split]` holds their factor indices (N, 5), named by
`DSprites.names`. The disentanglement metrics sample from the whole grid through
`DSprites` (see `FactorGrid.sample`, `sample_fixed`, `sample_pairs`).
"""

from __future__ import annotations

import math

import torch

from ..config import DataConfig
from ..errors import AezooError
from .base import Dataset, mix_seed, register_dataset

SEED = 2017  # the data's own seed: which grid images are held out for val and test
HELD_OUT = 1_000  # images in each of val and test
RENDER_CHUNK = 512  # images rendered at once: small enough that the per-pixel temporaries stay in cache


class FactorGrid:
    """A full product of independent discrete factors, `sizes[k]` values for factor k, with the
    sampling the disentanglement metrics need. Subclasses render the images of factor tuples."""

    names: tuple[str, ...] = ()
    sizes: tuple[int, ...] = ()
    categorical: tuple[bool, ...] = ()  # factors whose values have no order (dSprites' shape)
    image_shape: tuple[int, ...] = ()

    def __len__(self) -> int:
        return math.prod(self.sizes)

    def _radix(self, device) -> torch.Tensor:
        # place value of each factor in the flat index (the last factor fastest)
        strides = [math.prod(self.sizes[k + 1 :]) for k in range(len(self.sizes))]
        return torch.tensor(strides, dtype=torch.long, device=device)

    def to_index(self, factors: torch.Tensor) -> torch.Tensor:
        """(..., K) factor indices -> (...,) flat grid indices."""
        return (factors.long() * self._radix(factors.device)).sum(-1)

    def to_factors(self, index: torch.Tensor) -> torch.Tensor:
        """(...,) flat grid indices -> (..., K) factor indices."""
        sizes = torch.tensor(self.sizes, dtype=torch.long, device=index.device)
        return index.long().unsqueeze(-1) // self._radix(index.device) % sizes

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, K) factor tuples drawn uniformly from the grid (each factor independently)."""
        cols = [torch.randint(0, s, (n,), generator=generator) for s in self.sizes]
        return torch.stack(cols, 1)

    def sample_fixed(self, k: torch.Tensor, group: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """For each entry of `k` (P,), a group of `group` factor tuples sharing one random value of
        factor k[p], the other factors drawn freely: (P, group, K). The FactorVAE metric's votes."""
        out = self.sample(len(k) * group, generator).view(len(k), group, -1)
        shared = self.sample(len(k), generator)  # (P, K): the fixed value, taken from factor k[p]
        fix = torch.nn.functional.one_hot(k, len(self.sizes)).bool().unsqueeze(1)  # (P, 1, K)
        return torch.where(fix, shared.unsqueeze(1), out)

    def sample_pairs(self, k: torch.Tensor, pairs: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """For each entry of `k` (P,), `pairs` pairs of factor tuples, each pair agreeing on factor
        k[p] only (each pair with its own value): (P, pairs, 2, K). The beta-VAE metric's points."""
        p = len(k)
        a, b = self.sample(p * pairs, generator), self.sample(p * pairs, generator)
        fix = torch.nn.functional.one_hot(k.repeat_interleave(pairs), len(self.sizes)).bool()
        b = torch.where(fix, a, b)
        return torch.stack([a, b], 1).view(p, pairs, 2, -1)

    def render(self, factors: torch.Tensor) -> torch.Tensor:
        """(N, K) factor indices -> (N, *image_shape) uint8 images."""
        raise NotImplementedError

    def images(self, factors: torch.Tensor, device=None) -> torch.Tensor:
        """`render` in chunks of RENDER_CHUNK, on `device` (default: where `factors` are)."""
        factors = factors.to(device) if device is not None else factors
        if len(factors) <= RENDER_CHUNK:
            return self.render(factors)
        return torch.cat([self.render(f) for f in factors.split(RENDER_CHUNK)])


class DSprites(FactorGrid):
    """The dSprites grid and its renderer (module docstring for the geometry)."""

    names = ("shape", "scale", "orientation", "pos_x", "pos_y")
    sizes = (3, 6, 40, 32, 32)
    categorical = (True, False, False, False, False)
    image_shape = (1, 64, 64)
    shapes = ("square", "ellipse", "heart")
    size_px = 10.0  # half the side of the square at scale 1
    centre_lo, centre_hi = 16.0, 48.0  # pixel range of the centres

    def values(self, name: str) -> torch.Tensor:
        """The real values of a factor's grid (shape: 0, 1, 2)."""
        k = self.names.index(name)
        n = self.sizes[k]
        if name == "scale":
            return torch.linspace(0.5, 1.0, n)
        if name == "orientation":
            return torch.linspace(0.0, 2 * math.pi, n)
        if name in ("pos_x", "pos_y"):
            return torch.linspace(0.0, 1.0, n)
        return torch.arange(n, dtype=torch.float32)

    def render(self, factors: torch.Tensor) -> torch.Tensor:
        """(N, 5) factor indices -> (N, 1, 64, 64) uint8 in {0, 1}. Every pixel centre is mapped into
        the shape's own frame (undo the translation, rotation and scale), then tested against the
        shape: |u|, |v| <= 1 (square), u^2 + 4 v^2 <= 1 (ellipse), and the heart curve
        (x^2 + y^2 - 1)^3 <= x^2 y^3 with (x, y) = 1.25 (u, v) + (0, 0.15), tip pointing down."""
        dev = factors.device
        f = factors.long()
        shape = f[:, 0].view(-1, 1, 1)
        scale = (0.5 + 0.1 * f[:, 1].float()).view(-1, 1, 1)  # linspace(0.5, 1, 6)
        steps = self.sizes[2] - 1  # linspace(0, 2 pi, 40); 2 pi drawn as 0, so the two images are equal
        theta = ((f[:, 2] % steps).float() * (2 * math.pi / steps)).view(-1, 1, 1)
        span = self.centre_hi - self.centre_lo
        cx = (self.centre_lo + span * f[:, 3].float() / (self.sizes[3] - 1)).view(-1, 1, 1)
        cy = (self.centre_lo + span * f[:, 4].float() / (self.sizes[4] - 1)).view(-1, 1, 1)
        h, w = self.image_shape[1:]
        px = torch.arange(w, device=dev, dtype=torch.float32).view(1, 1, w) + 0.5
        py = torch.arange(h, device=dev, dtype=torch.float32).view(1, h, 1) + 0.5
        dx, dy = px - cx, cy - py  # (N, H, W), y pointing up
        cos, sin, r = theta.cos(), theta.sin(), scale * self.size_px
        u = (cos * dx + sin * dy) / r  # rotate by -theta into the shape's frame, in units of r
        v = (cos * dy - sin * dx) / r
        inside = torch.empty(u.shape, dtype=torch.bool, device=dev)
        for s, test in enumerate((_in_square, _in_ellipse, _in_heart)):  # each image runs its own test only
            pick = (shape.view(-1) == s).nonzero().squeeze(1)
            if len(pick):
                inside[pick] = test(u[pick], v[pick])
        return inside.to(torch.uint8).unsqueeze(1)


def _in_square(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.maximum(u.abs(), v.abs()) <= 1


def _in_ellipse(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return u * u + 4 * v * v <= 1


def _in_heart(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    x2, y = (1.25 * u) ** 2, 1.25 * v + 0.15
    c = x2 + y * y - 1
    return c * c * c <= x2 * y * y * y


class RenderedImages:
    """A split of a FactorGrid's images, held as flat grid indices and rendered when indexed.

    Stands in for an (N, *image_shape) uint8 tensor where the data code needs one: `len`, `shape`,
    `dtype`, `device`, `to`, indexing by integer tensors (renders that batch), slicing (a smaller view),
    `float()` (renders the whole view: for small views), and `torch.cat` of views.
    """

    def __init__(self, grid: FactorGrid, index: torch.Tensor, device=None):
        self.grid, self.index = grid, index
        self.device = torch.device(device) if device is not None else index.device

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.index), *self.grid.image_shape))

    dtype = torch.uint8

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return RenderedImages(self.grid, self.index[key], self.device)
        key = torch.as_tensor(key, device=self.index.device)
        picked = self.index[key.long()].reshape(-1)
        out = self.grid.images(self.grid.to_factors(picked), self.device)
        return out.view(*key.shape, *self.grid.image_shape)

    def to(self, device) -> RenderedImages:
        return RenderedImages(self.grid, self.index, device)

    def float(self) -> torch.Tensor:
        return self[torch.arange(len(self))].float()

    def __repr__(self) -> str:
        return f"RenderedImages({type(self.grid).__name__}, n={len(self)})"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.cat and all(isinstance(a, cls) for a in args[0]):
            parts = args[0]
            return cls(parts[0].grid, torch.cat([p.index for p in parts]), parts[0].device)
        raise AezooError(f"{getattr(func, '__name__', func)} is not available on procedurally rendered images "
                         "(dsprites is rendered batch by batch; data.pad_to does not apply to it)")


def factor_grid(ds: Dataset) -> FactorGrid | None:
    """The grid a dataset's images are rendered from, or None for data that is not (stored images)."""
    x = ds.x.get("train")
    return x.grid if isinstance(x, RenderedImages) else None


def split_indices(n: int, held_out: int = HELD_OUT, seed: int = SEED) -> dict[str, torch.Tensor]:
    """Flat grid indices of each split: val and test are random disjoint sets, train the rest (in order)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(seed)))
    val, test = perm[:held_out].sort().values, perm[held_out : 2 * held_out].sort().values
    keep = torch.ones(n, dtype=torch.bool)
    keep[perm[: 2 * held_out]] = False
    return {"train": keep.nonzero().squeeze(1), "val": val, "test": test}


def where(cfg: DataConfig) -> str:
    return "rendered procedurally (no files)"


@register_dataset("dsprites", "64x64 binary 2D shapes, 737,280 = 3 shapes x 6 scales x 40 angles x 32 x 32 "
                  "positions, ground-truth factors (beta-VAE)", where)
def load_dsprites(cfg: DataConfig) -> Dataset:
    if cfg.dir or cfg.file:
        raise AezooError("dsprites is rendered procedurally: data.dir and data.file do not apply")
    grid = DSprites()
    index = split_indices(len(grid))
    return Dataset(
        name="dsprites",
        x={k: RenderedImages(grid, v) for k, v in index.items()},
        factors={k: grid.to_factors(v) for k, v in index.items()},
        scale=1.0,
    )
