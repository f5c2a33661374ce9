"""Networks of docs/methods.md §2: Fourier time embedding, main network, score-weight net, and the
control.

The control (DIS, CDDS teacher, SCDS; d is SCDS only):

    u_θ(x, t[, d]) = C_m(NN_θ(x, t[, d]))
                     + σ(t)·C_m(s_φ(t))·C_s((1 − t/T)·∇log p_prior(x) + (t/T)·∇log ρ(x))

with C_c(z) = clamp(z, −c, c) element-wise and ∇log p_prior(x) = −x. At initialization NN ≡ 0 and
s_φ ≡ 1, so the sampler follows the interpolated score.

Everything that depends on time only (embeddings, s_φ(t), σ(t)) is computed once per distinct time
by `Control.time_conditioning`, then broadcast over the batch: a simulation step never recomputes
it per sample, and a training step computes it for the whole grid in one call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from cds.sde import VPSchedule

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
}

FOURIER_FREQUENCIES = 64
FOURIER_MIN_FREQ = 0.1
FOURIER_MAX_FREQ = 100.0


def make_activation(name: str) -> nn.Module:
    """Activation module by name; raises with the valid names for an unknown one."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class FourierEmbedding(nn.Module):
    """E(a): [sin(c·a + φ), cos(c·a + φ)] with 64 fixed c ∈ linspace(0.1, 100) and a learnable
    phase φ ~ N(0, 1), then Linear(128→width) → act → Linear(width→out)."""

    def __init__(self, width: int, out_dim: int, activation: str = "gelu"):
        super().__init__()
        self.register_buffer(
            "frequencies", torch.linspace(FOURIER_MIN_FREQ, FOURIER_MAX_FREQ, FOURIER_FREQUENCIES)
        )
        self.phase = nn.Parameter(torch.randn(FOURIER_FREQUENCIES))
        self.mlp = nn.Sequential(
            nn.Linear(2 * FOURIER_FREQUENCIES, width),
            make_activation(activation),
            nn.Linear(width, out_dim),
        )

    def forward(self, a: Tensor) -> Tensor:
        """a: times of shape (K,) or (K, 1) → (K, out_dim)."""
        arg = a.reshape(-1, 1) * self.frequencies + self.phase
        return self.mlp(torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1))


class MainNetwork(nn.Module):
    """NN(x, t[, d]) of docs/methods.md §2 with `depth` linear layers on the x path (default 4,
    width 64).

    h = Linear(D→W)(x) + E_t(t) [+ E_d(d)]; (depth − 2) × h ← Linear(W→W)(act(h));
    output Linear(W→D)(act(h)) initialized to zero.
    """

    def __init__(
        self,
        dim: int,
        width: int = 64,
        depth: int = 4,
        activation: str = "gelu",
        step_conditioned: bool = False,
    ):
        super().__init__()
        if depth < 2:
            raise ValueError(f"network depth must be >= 2, got {depth}")
        self.dim = dim
        self.step_conditioned = step_conditioned
        self.input = nn.Linear(dim, width)
        self.time_embedding = FourierEmbedding(width, width, activation)
        self.step_embedding = (
            FourierEmbedding(width, width, activation) if step_conditioned else None
        )
        self.act = make_activation(activation)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 2))
        self.output = nn.Linear(width, dim)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def embed(self, t: Tensor, d: Tensor | None = None) -> Tensor:
        """Summed time (and step) embedding for times t (K,) → (K, W)."""
        emb = self.time_embedding(t)
        if self.step_embedding is not None:
            if d is None:
                raise ValueError("this network is step-conditioned: a step size d is required")
            emb = emb + self.step_embedding(d.expand_as(t) if d.numel() == 1 else d)
        elif d is not None:
            raise ValueError("this network is not step-conditioned but a step size d was given")
        return emb

    def body(self, x: Tensor, embedding: Tensor) -> Tensor:
        """The network given a precomputed embedding broadcastable to x's leading shape."""
        return self.head(self.input(x) + embedding)

    def head(self, h: Tensor) -> Tensor:
        """Everything after the input layer: first pre-activation h (…, W) → output (…, D)."""
        for layer in self.hidden:
            h = layer(self.act(h))
        return self.output(self.act(h))

    def forward(self, x: Tensor, t: Tensor, d: Tensor | None = None) -> Tensor:
        """x (B, D), t (B,) or scalar tensor → (B, D)."""
        return self.body(x, self.embed(t.reshape(-1), None if d is None else d.reshape(-1)))


class ScoreWeightNet(nn.Module):
    """s_φ(t): Fourier features → Linear(128→W) → act → 2 × [Linear(W→W) → act] → Linear(W→1),
    the last layer initialized to weight 0 and bias 1 (so s_φ ≡ 1). Never step-conditioned."""

    def __init__(self, width: int = 64, activation: str = "gelu"):
        super().__init__()
        self.register_buffer(
            "frequencies", torch.linspace(FOURIER_MIN_FREQ, FOURIER_MAX_FREQ, FOURIER_FREQUENCIES)
        )
        self.phase = nn.Parameter(torch.randn(FOURIER_FREQUENCIES))
        layers: list[nn.Module] = [
            nn.Linear(2 * FOURIER_FREQUENCIES, width),
            make_activation(activation),
        ]
        for _ in range(2):
            layers += [nn.Linear(width, width), make_activation(activation)]
        last = nn.Linear(width, 1)
        nn.init.zeros_(last.weight)
        nn.init.ones_(last.bias)
        self.mlp = nn.Sequential(*layers, last)

    def forward(self, t: Tensor) -> Tensor:
        """t (K,) → (K,)."""
        arg = t.reshape(-1, 1) * self.frequencies + self.phase
        return self.mlp(torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)).squeeze(-1)


class Control(nn.Module):
    """The control u_θ(x, t[, d]) of docs/methods.md §2, with its clip values as (saved) buffers."""

    def __init__(
        self,
        dim: int,
        schedule: VPSchedule,
        width: int = 64,
        depth: int = 4,
        activation: str = "gelu",
        step_conditioned: bool = False,
        clip_net: float = 10.0,
        clip_score: float = 10.0,
    ):
        super().__init__()
        self.dim = dim
        self.schedule = schedule
        self.net = MainNetwork(dim, width, depth, activation, step_conditioned)
        self.score_weight = ScoreWeightNet(width, activation)
        self.register_buffer("clip_net", torch.tensor(float(clip_net)))
        self.register_buffer("clip_score", torch.tensor(float(clip_score)))

    @property
    def step_conditioned(self) -> bool:
        return self.net.step_conditioned

    def set_clips(self, clip_net: float, clip_score: float) -> None:
        """Set the clamp values c_m and c_s (the clip schedule of docs/methods.md §2)."""
        self.clip_net.fill_(clip_net)
        self.clip_score.fill_(clip_score)

    def time_conditioning(self, t: Tensor, d: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """For K times: the network embedding (K, W) and σ(t)·C_m(s_φ(t)) of shape (K,)."""
        embedding = self.net.embed(t, d)
        c = self.clip_net
        weight = self.schedule.sigma(t) * torch.clamp(self.score_weight(t), -c, c)
        return embedding, weight

    def guidance(self, x: Tensor, t: Tensor | float, target_score: Tensor | None) -> Tensor:
        """C_s((1 − t/T)·(−x) + (t/T)·∇log ρ(x)); θ-independent. `t` is one time, or one per
        sample with shape (B, 1); `target_score` may be None where every t is 0 (weight 0)."""
        lam = t / self.schedule.T
        mix = -(1.0 - lam) * x
        if lam != 0.0 if isinstance(lam, float) else bool(lam.ne(0).any()):
            if target_score is None:
                raise ValueError(f"a target score is needed at t = {t} > 0")
            mix = mix + lam * target_score
        c = self.clip_score
        return torch.clamp(mix, -c, c)

    def evaluate(
        self, x: Tensor, embedding: Tensor, score_weight: Tensor, guidance: Tensor
    ) -> Tensor:
        """u from precomputed time conditioning (the integrators compute it once per grid);
        `embedding` and `score_weight` must broadcast against x (e.g. (1, W) and a scalar for
        one time, (N, 1, W) and (N, 1, 1) for a grid)."""
        c = self.clip_net
        return torch.clamp(self.net.body(x, embedding), -c, c) + score_weight * guidance

    def forward(
        self,
        x: Tensor,
        t: Tensor | float,
        score_fn: Callable[[Tensor], Tensor] | None,
        d: Tensor | float | None = None,
    ) -> Tensor:
        """u_θ(x, t[, d]) for a batch x (B, D): u = C_m(NN(x, t[, d])) + σ(t)·C_m(s_φ(t))·g with
        the guidance g of `guidance` (docs/methods.md §2). `t` (and `d`) is one time for the
        batch or one per sample, shape (B,). `score_fn` is ∇log ρ, called only when some t > 0
        (its weight is 0 at t = 0), so it may be None for a batch at t = 0."""
        if isinstance(t, Tensor):
            embedding, weight = self.time_conditioning(t, d)  # type: ignore[arg-type]
            weight, t_b, needs_score = weight[:, None], t[:, None], bool((t > 0).any())
        else:
            steps = None if d is None else torch.tensor([d], dtype=x.dtype, device=x.device)
            times = torch.tensor([t], dtype=x.dtype, device=x.device)
            embedding, weight = self.time_conditioning(times, steps)
            t_b, needs_score = t, t != 0.0
        score = score_fn(x) if needs_score and score_fn is not None else None
        return self.evaluate(x, embedding, weight, self.guidance(x, t_b, score))


#: σ_d of the consistency parametrization (docs/methods.md §4).
SIGMA_DATA = 0.5


def consistency_scalings(tau: Tensor, sigma_data: float = SIGMA_DATA) -> tuple[Tensor, Tensor]:
    """c_skip(τ) = σ_d²/(τ² + σ_d²) and c_out(τ) = τ·σ_d/√(τ² + σ_d²), so f(x, 0) = x."""
    denom = tau.square() + sigma_data**2
    return sigma_data**2 / denom, tau * sigma_data / denom.sqrt()


class ConsistencyStudent(nn.Module):
    """CDDS consistency function f_θ(x, τ) = c_skip(τ)·x + c_out(τ)·F_θ(x, τ) (docs/methods.md §4).

    τ = T − t is the time to go. F_θ is the main network of docs/methods.md §2 fed τ where t would
    go, with no score branch and no step input, so sampling needs no ∇log ρ.
    """

    def __init__(
        self, dim: int, T: float, width: int = 64, depth: int = 4, activation: str = "gelu"
    ):
        super().__init__()
        self.dim = dim
        self.T = T
        self.net = MainNetwork(dim, width, depth, activation, step_conditioned=False)

    def warm_start_from(self, control: Control) -> None:
        """Copy the teacher's main-network weights (only a warm start: semantics differ)."""
        self.net.load_state_dict(control.net.state_dict())

    def forward(self, x: Tensor, tau: Tensor | float) -> Tensor:
        """x (B, D) and τ (scalar, (1,) or (B,)) → (B, D)."""
        tau_t = torch.as_tensor(tau, dtype=x.dtype, device=x.device).reshape(-1)
        c_skip, c_out = consistency_scalings(tau_t)
        out = self.net.body(x, self.net.embed(tau_t))
        return c_skip[:, None] * x + c_out[:, None] * out

    def at(self, tau: float) -> Callable[[Tensor], Tensor]:
        """x ↦ f_θ(x, τ) for one fixed τ, with the τ terms (embedding, c_skip, c_out) computed
        once: the same values as `forward`, with a few torch calls per batch instead of some
        thirty, for sampling many chunks at one τ."""
        net = self.net
        tau_t = torch.as_tensor(tau, dtype=net.input.weight.dtype, device=net.input.weight.device)
        c_skip, c_out = (c[:, None] for c in consistency_scalings(tau_t.reshape(-1)))
        embedding = net.embed(tau_t.reshape(-1))

        def f(x: Tensor) -> Tensor:
            return c_skip * x + c_out * net.body(x, embedding)

        return f

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """One-step samples f_θ(x_0, T), x_0 ~ N(0, I): one network evaluation, on the
        student's device (the generator must be there too)."""
        device = next(self.parameters()).device
        return self(torch.randn(n, self.dim, generator=generator, device=device), self.T)
