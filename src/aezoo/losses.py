"""Loss terms as pure functions of tensors, for the regularised autoencoders (Weng 2018, sections
"Sparse Autoencoder", "k-Sparse Autoencoder" and "Contractive Autoencoder").

One reduction everywhere in aezoo: a term is summed over data and latent dimensions to one value per
example, then averaged over the batch. The functions here return the per-example values (B,) where a
term has them; the batch-level sparsity KL, whose rho_hat is itself a batch mean, returns one value
per unit.

- Sparsity (Ng's sparse autoencoder notes; survey eq. L_SAE): KL(rho || rho_hat_j) between Bernoulli
  means, rho_hat_j the mean activation of unit j over the batch.
- k-sparse (Makhzani & Frey 2013): keep the k largest units of each code and zero the rest; the
  gradient flows only through the kept units.
- Contractive (Rifai et al. 2011, eq. 1-2): ||J_f(x)||_F^2 = sum_ij (dh_j / dx_i)^2 of the encoder h = f(x),
  computed in closed form for one elementwise layer (their eq. 2), exactly without materialising J for
  two layers h = W2 s(W1 x + b1) + b2, as a batched Jacobian (vectorised VJPs, torch.func) for any
  encoder, and by an unbiased random-projection (Hutchinson) estimator.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# --- sparsity ------------------------------------------------------------------------------------


def _floor_straight_through(x: torch.Tensor, lo: float) -> torch.Tensor:
    """x raised to lo where it is smaller, with the gradient of x itself everywhere (also below lo)."""
    return x + (x.clamp(min=lo) - x).detach()


def sparsity_kl(rho: float, rho_hat: torch.Tensor) -> torch.Tensor:
    """KL(Bernoulli(rho) || Bernoulli(rho_hat)) per unit, for the mean activations rho_hat (H,) in [0, 1]:
    rho log(rho / rho_hat) + (1 - rho) log((1 - rho) / (1 - rho_hat)), computed in float32 at least.

    Exact, value and gradient, wherever rho_hat and 1 - rho_hat are at least sqrt(smallest normal
    number) of the dtype (1e-19 in float32): d KL / d rho_hat = (1 - rho) / (1 - rho_hat) - rho / rho_hat,
    so a nearly dead unit (rho_hat -> 0) is pushed up towards rho and a saturated one down, as hard as
    the KL says. Below that floor (a unit exactly dead or saturated, where the KL is infinite)
    rho_hat and 1 - rho_hat are raised to the floor straight-through: the value stays finite and the
    unit still receives the derivative at the floor (finite, of the right sign), never zero. The large
    derivative near 0 or 1 is tamed by the sigmoid before it reaches the weights: rho_hat is the batch
    mean of activations a_b = sigmoid(u_b), sigmoid'(u_b) = a_b (1 - a_b), so sum_b |d KL / d u_b| <= 1
    whatever rho_hat is."""
    if rho_hat.dtype.itemsize < 4:
        rho_hat = rho_hat.float()
    lo = torch.finfo(rho_hat.dtype).tiny ** 0.5
    p, q = _floor_straight_through(rho_hat, lo), _floor_straight_through(1 - rho_hat, lo)
    return rho * torch.log(rho / p) + (1 - rho) * torch.log((1 - rho) / q)


# --- k-sparse --------------------------------------------------------------------------------------


def topk_mask(z: torch.Tensor, k: int) -> torch.Tensor:
    """(B, H) boolean mask of the k largest entries of each row of z (ties broken by torch.topk)."""
    idx = z.topk(min(k, z.shape[1]), dim=1).indices
    return torch.zeros_like(z, dtype=torch.bool).scatter_(1, idx, True)


def keep_topk(z: torch.Tensor, k: int) -> torch.Tensor:
    """z with all but the k largest entries of each row set to 0 (supp_k of Makhzani & Frey). The
    mask is a constant, so d out / d z is 1 on the kept units and 0 elsewhere."""
    if k >= z.shape[1]:
        return z
    return z * topk_mask(z.detach(), k)


# --- contractive ---------------------------------------------------------------------------------

# s'(u) written in terms of the activation's output a = s(u), so that no pre-activation need be kept.
_DERIVATIVE_FROM_OUTPUT: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "linear": torch.ones_like,
    "sigmoid": lambda a: a * (1 - a),
    "tanh": lambda a: 1 - a * a,
    "relu": lambda a: (a > 0).to(a.dtype),
    "leaky_relu": lambda a: torch.where(a > 0, torch.ones_like(a), torch.full_like(a, 0.01)),  # nn.LeakyReLU's slope
    "elu": lambda a: torch.where(a > 0, torch.ones_like(a), a + 1),  # alpha = 1: s'(u) = e^u = a + 1 for u < 0
    "softplus": lambda a: -torch.expm1(-a),  # sigmoid(u) = 1 - e^(-softplus(u))
}
ELEMENTWISE_DERIVATIVES = frozenset(_DERIVATIVE_FROM_OUTPUT)


def activation_derivative(a: torch.Tensor, activation: str) -> torch.Tensor:
    """s'(u) at the units whose outputs are a = s(u), for the activations in ELEMENTWISE_DERIVATIVES."""
    return _DERIVATIVE_FROM_OUTPUT[activation](a)


def contractive_one_layer(ds: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """||J||_F^2 (B,) of h = s(W x + b): sum_j s'_j^2 sum_i W_ji^2 (Rifai et al. 2011, eq. 2, there for
    the sigmoid, s' = h (1 - h)). ds: (B, H) the derivatives s'; weight: W (H, D)."""
    return ds.pow(2) @ weight.pow(2).sum(1)


class _Gram(torch.autograd.Function):
    """W W^T, whose gradient G W + G^T W autograd would take as two products; here one, (G + G^T) W."""

    @staticmethod
    def forward(ctx, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(w)
        return w @ w.T

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (w,) = ctx.saved_tensors
        return (grad + grad.T) @ w


def gram(w: torch.Tensor) -> torch.Tensor:
    """W W^T (differentiable, half the backward products of `w @ w.T`)."""
    return _Gram.apply(w)


def contractive_two_layer(ds: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """||J||_F^2 (B,) of h = W2 s(W1 x + b1) + b2, whose Jacobian is J = W2 diag(s') W1, without forming J:

        ||W2 diag(s') W1||_F^2 = sum_jk s'_j s'_k (W2^T W2)_jk (W1 W1^T)_jk = s'^T ((W2^T W2) o (W1 W1^T)) s'

    one (H, H) matrix per step, then a quadratic form per example. ds: (B, H) the hidden derivatives s';
    w1: (H, D); w2: (K, H)."""
    m = gram(w2.T) * gram(w1)  # (H, H)
    return ((ds @ m) * ds).sum(1)


def _vjp_norms(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, cotangents: torch.Tensor) -> torch.Tensor:
    """||v_m^T J(x_b)||^2 for cotangents v (M, B, K): (M, B), with one forward pass and M vectorised
    backward passes. Each example's code depends on that example alone, so one VJP of the batch gives
    every example's v^T J at once. Differentiable in f's parameters (double backpropagation)."""
    _, vjp_fn = torch.func.vjp(f, x)
    (g,) = torch.func.vmap(vjp_fn)(cotangents)  # (M, B, *x.shape[1:])
    return g.pow(2).flatten(2).sum(2)


def contractive_jacobian(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, code_dim: int) -> torch.Tensor:
    """Exact ||J_f(x)||_F^2 (B,) for any encoder f: (B, ...) -> (B, K), K = code_dim: the batched
    Jacobian, its K rows e_k^T J taken as vectorised VJPs (what torch.func.jacrev does), never a Python
    loop over units. Holds K * B * D numbers."""
    basis = torch.eye(code_dim, device=x.device, dtype=x.dtype)[:, None, :].expand(code_dim, len(x), code_dim)
    return _vjp_norms(f, x, basis).sum(0)


def contractive_estimate(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, code_dim: int,
                         projections: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Unbiased estimate (B,) of ||J_f(x)||_F^2: the mean of ||v^T J||^2 over `projections` Rademacher
    vectors v in code space. E[v v^T] = I gives E||v^T J||^2 = tr(J J^T) = ||J||_F^2 (Hutchinson's
    trace estimator); it costs one backward pass per projection whatever the input size."""
    shape = (projections, len(x), code_dim)
    v = torch.randint(0, 2, shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1
    return _vjp_norms(f, x, v).mean(0)
