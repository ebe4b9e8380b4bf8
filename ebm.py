"""A shallow-network energy-based model trained by maximum likelihood with an
importance-sampled gradient of the log-partition function (problems 1.4-1.7).

Convention of the assignment: p_theta(x) = exp(E_theta(x) - A(theta)),
A(theta) = log int exp(E_theta(x)) dx, so E is a log-unnormalised density (larger is more
likely). Training maximises the average log-likelihood

    L(theta) = (1/n) sum_i E_theta(x_i) - A(theta),
    grad L   = (1/n) sum_i grad E_theta(x_i) - E_{x ~ p_theta} grad E_theta(x),

with the expectation replaced by the self-normalised importance-sampling estimator of problem
1.6: for x_m ~ q, m = 1..M (one sample, drawn once, reused at every step),

    F_hat = N_hat / D_hat = sum_m w_m grad E_theta(x_m),
    w_m = exp(E_theta(x_m) - log q(x_m)) / sum_m' exp(E_theta(x_m') - log q(x_m')),

computed as a softmax of log-weights. The same sample estimates A itself,
A_hat = log((1/M) sum_m exp(E_theta(x_m)) / q(x_m)); F_hat is exactly grad A_hat.

The energy: E_theta(x) = w2^T softplus(W1 x + b1) + b2 - ||x||^2 / (2 tau^2).
A one-hidden-layer net alone can grow linearly along some direction, and then exp(E) has
an infinite integral, while an importance-sampling estimate from a light-tailed q stays finite
and hides that. The net is Lipschitz (|net(x)| <= a + b ||x||), so the fixed quadratic term
dominates far out and exp(E_theta) is integrable for every theta: the family is normalisable
by construction, and A(theta) is finite for any weights.
"""
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class Energy(nn.Module):
    """E_theta(x) = w2^T softplus(W1 x + b1) + b2 - ||x||^2 / (2 tau^2); x (n, 2) -> (n,)."""

    def __init__(self, hidden=64, tau=10.0, dim=2):
        super().__init__()
        self.hidden = nn.Linear(dim, hidden)
        self.out = nn.Linear(hidden, 1)
        self.tau = float(tau)

    def forward(self, x):
        net = self.out(F.softplus(self.hidden(x))).squeeze(-1)  # (n,)
        return net - (x * x).sum(-1) / (2.0 * self.tau**2)


def log_weights(energy, x, log_q):
    """Unnormalised log importance weights E_theta(x_m) - log q(x_m), shape (M,)."""
    return energy(x) - log_q


def log_partition_is(energy, x, log_q):
    """A_hat = log((1/M) sum_m exp(E_theta(x_m)) / q(x_m)), in log space."""
    return torch.logsumexp(log_weights(energy, x, log_q), 0) - math.log(x.shape[0])


def effective_sample_size(log_w):
    """ESS = (sum w)^2 / sum w^2 of the importance weights, from their logs."""
    return float(torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)))


def grad_log_partition_is(energy, x, log_q):
    """F_hat = N_hat / D_hat = sum_m w_m grad E(x_m): the self-normalised IS estimate of
    grad A = E_{p_theta} grad E, returned as one tensor per parameter.

    The normalised weights w = softmax(E - log q) are held constant (detached), so the
    gradient of sum_m w_m E(x_m) is the weighted mean of the per-sample gradients.
    """
    with torch.no_grad():
        w = torch.softmax(log_weights(energy, x, log_q), 0)  # (M,), sums to one
    return torch.autograd.grad((w * energy(x)).sum(), list(energy.parameters()))


def surrogate_loss(energy, x_data, x_prop, log_q_prop):
    """A scalar whose gradient is -(grad mean E(x_i) - F_hat) = -grad L_hat.

    Its value is not L; the training objective L_hat = mean E - A_hat is reported apart.
    One forward pass serves both sets; the weights are detached, as in grad_log_partition_is.
    """
    e = energy(torch.cat([x_data, x_prop]))
    e_data, e_prop = e[: x_data.shape[0]], e[x_data.shape[0]:]
    w = torch.softmax((e_prop - log_q_prop).detach(), 0)
    return -(e_data.mean() - (w * e_prop).sum())


def log_partition_grid(energy, half_width, step, chunk=2**16):
    """A by the midpoint rule on [-half_width, half_width]^2 with spacing `step`:
    A ~= log(step^2 sum_g exp(E(g))), a logsumexp over grid cells in chunks."""
    n = int(round(2 * half_width / step))
    axis = -half_width + step * (torch.arange(n, dtype=torch.float64) + 0.5)
    gx, gy = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    dtype = next(energy.parameters()).dtype
    with torch.no_grad():
        parts = [torch.logsumexp(energy(g.to(dtype)).double(), 0) for g in grid.split(chunk)]
    return float(torch.logsumexp(torch.stack(parts), 0) + 2 * math.log(step))


def log_partition_is_stream(energy, draw, M, chunk=2**17):
    """A_hat from M fresh proposal points drawn in chunks by draw(m) -> (x, log q(x)), so
    memory stays at one chunk. Returns (A_hat, ESS, E_q[E - log q]); the last is Jensen's
    lower bound on A (log of a mean >= mean of the logs)."""
    lse, lse2, total, done = [], [], 0.0, 0
    with torch.no_grad():
        while done < M:
            x, log_q = draw(min(chunk, M - done))
            lw = log_weights(energy, x, log_q).double()
            lse.append(torch.logsumexp(lw, 0))
            lse2.append(torch.logsumexp(2 * lw, 0))
            total += float(lw.sum())
            done += x.shape[0]
    lse, lse2 = torch.logsumexp(torch.stack(lse), 0), torch.logsumexp(torch.stack(lse2), 0)
    return float(lse - math.log(M)), float(torch.exp(2 * lse - lse2)), total / M


class CosineAdam:
    """Adam (Kingma & Ba 2015, Algorithm 1) with the step size decayed from lr to 0 by a
    half cosine over `steps` steps: large steps find the ring early, small ones settle its
    fine shape. Written out because torch.optim's first use imports torch._dynamo, over a
    second of this pipeline's 30 s budget; tests check it against torch.optim.Adam with
    CosineAnnealingLR step for step."""

    def __init__(self, params, lr, steps, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.steps, self.betas, self.eps = list(params), lr, max(steps, 1), betas, eps
        self.m = [torch.zeros_like(p) for p in self.params]  # first-moment estimates
        self.v = [torch.zeros_like(p) for p in self.params]  # second-moment estimates
        self.t = 0

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        self.t += 1
        (b1, b2), t = self.betas, self.t
        lr = self.lr * 0.5 * (1.0 + math.cos(math.pi * (t - 1) / self.steps))
        for p, m, v in zip(self.params, self.m, self.v):
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            denom = (v / (1 - b2**t)).sqrt_().add_(self.eps)
            p.addcdiv_(m, denom, value=-lr / (1 - b1**t))


@dataclass
class TrainLog:
    steps: list = field(default_factory=list)
    train_objective: list = field(default_factory=list)  # mean E(train) - A_hat(proposal)
    val_ll: list = field(default_factory=list)  # mean E(val) - A_hat(held-out proposal)
    best_step: int = 0
    seconds: float = 0.0


def train(energy, x_train, x_prop, log_q_prop, x_val, x_vprop, log_q_vprop,
          steps=2000, lr=1e-2, eval_every=50, print_every=500, log=print):
    """Gradient ascent on L_hat with cosine-decayed Adam, full batch. Every eval_every steps the model is
    scored on the validation set with A from a held-out proposal sample (never the training
    one, which the net can learn to overfit); the best-scoring weights are restored."""
    opt = CosineAdam(energy.parameters(), lr, steps)
    hist, best_val, best_state = TrainLog(), -math.inf, None
    start = time.perf_counter()
    for step in range(steps + 1):
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                obj = float(energy(x_train).mean() - log_partition_is(energy, x_prop, log_q_prop))
                val = float(energy(x_val).mean() - log_partition_is(energy, x_vprop, log_q_vprop))
            if not (math.isfinite(obj) and math.isfinite(val)):
                raise FloatingPointError(f"EBM training diverged at step {step} (train objective "
                                         f"{obj}, validation {val}); lower the learning rate")
            hist.steps.append(step), hist.train_objective.append(obj), hist.val_ll.append(val)
            if val > best_val:
                best_val, hist.best_step = val, step
                best_state = {k: v.clone() for k, v in energy.state_dict().items()}
            if log and (step % print_every == 0 or step == steps):
                log(f"  step {step:5d}  train objective {obj:8.4f}  validation LL {val:8.4f}")
        if step == steps:
            break
        opt.zero_grad()
        surrogate_loss(energy, x_train, x_prop, log_q_prop).backward()
        opt.step()
    energy.load_state_dict(best_state)
    hist.seconds = time.perf_counter() - start
    return hist


def save_energy(energy, path):
    torch.save({"state_dict": energy.state_dict(), "hidden": energy.hidden.out_features,
                "tau": energy.tau}, path)


def load_energy(path):
    """Load a trained energy saved by save_energy; returns E, a callable mapping a float
    tensor of shape (n, 2) to E_theta(x) of shape (n,). Example:

        E = load_energy("plots/ebm_energy.pt")
        with torch.no_grad():
            values = E(torch.zeros(1, 2))
    """
    blob = torch.load(path, weights_only=True)
    energy = Energy(hidden=blob["hidden"], tau=blob["tau"])
    energy.load_state_dict(blob["state_dict"])
    return energy.eval()
