"""A shallow-network energy-based model trained by maximum likelihood with an
importance-sampled gradient of the log-partition function (problems 1.4-1.7).

Convention of the homework: p_theta(x) = exp(E_theta(x) - A(theta)),
A(theta) = log int exp(E_theta(x)) dx, so E is a log-unnormalised density (larger is more
likely). Training maximises the average log-likelihood

    L(theta) = (1/n) sum_i E_theta(x_i) - A(theta),
    grad L   = (1/n) sum_i grad E_theta(x_i) - E_{x ~ p_theta} grad E_theta(x),

with the expectation replaced by the self-normalised importance-sampling estimator of problem
1.6: for x_m ~ q, m = 1..M (one sample, drawn once, reused at every step),

    F_hat = N_hat / D_hat = sum_m w_m grad E_theta(x_m),
    w_m = exp(E_theta(x_m) - log q(x_m)) / sum_m' exp(E_theta(x_m') - log q(x_m')),

computed as a softmax of log-weights. The same sample estimates A itself,
A_hat = log((1/M) sum_m exp(E_theta(x_m)) / q(x_m)), and F_hat is exactly grad A_hat, so the
fixed sample defines one smooth objective L_hat = mean E - A_hat with gradient
mean grad E - F_hat. It is maximised by L-BFGS, full batch; the validation log-likelihood, with
A from a separate held-out proposal sample, picks the iterate to keep.

The energy: E_theta(x) = w2^T softplus(W1 x + b1) + b2 - ||x||^2 / (2 tau^2).
A one-hidden-layer net alone can grow linearly along some direction, and then exp(E) has
an infinite integral, while an importance-sampling estimate from a light-tailed q stays finite
and hides that. The net is Lipschitz (|net(x)| <= a + b ||x||), so the fixed quadratic term
dominates far out and exp(E_theta) is integrable for every theta: the family is normalisable
by construction, and A(theta) is finite for any weights. Its scale tau and the width are
hyperparameters, chosen on validation data (VI.py).
"""
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.special import kolmogorov
from torch import nn
from torch.nn import functional as F


class Energy(nn.Module):
    """E_theta(x) = w2^T softplus(W1 x + b1) + b2 - ||x||^2 / (2 tau^2); x (n, 2) -> (n,).

    With a generator, the weights are drawn from it (PyTorch's default U(-1/sqrt(fan_in),
    1/sqrt(fan_in)) for weights and biases), so an initialisation is a function of a seed."""

    def __init__(self, hidden, tau, generator=None, dim=2):
        super().__init__()
        self.hidden = nn.Linear(dim, hidden)
        self.out = nn.Linear(hidden, 1)
        self.tau = float(tau)
        if generator is not None:
            with torch.no_grad():
                for layer in (self.hidden, self.out):
                    bound = 1.0 / math.sqrt(layer.in_features)
                    for p in layer.parameters():
                        p.uniform_(-bound, bound, generator=generator)

    def forward(self, x):
        net = self.out(F.softplus(self.hidden(x))).squeeze(-1)  # (n,)
        return net - (x * x).sum(-1) / (2.0 * self.tau**2)


@dataclass
class Sample:
    """Points drawn from a proposal q with their log-densities, kept together so that the
    two can never be passed in the wrong order or from different draws."""
    x: torch.Tensor  # (M, 2)
    log_q: torch.Tensor  # (M,)

    def __len__(self):
        return self.x.shape[0]


# ---- importance sampling (problems 1.5-1.7) ---------------------------------------------------

def log_weights(energy, sample):
    """Unnormalised log importance weights E_theta(x_m) - log q(x_m), shape (M,)."""
    return energy(sample.x) - sample.log_q


def log_partition_is(energy, sample):
    """A_hat = log((1/M) sum_m exp(E_theta(x_m)) / q(x_m)), in log space (differentiable)."""
    return torch.logsumexp(log_weights(energy, sample), 0) - math.log(len(sample))


def effective_sample_size(log_w):
    """ESS = (sum w)^2 / sum w^2 of the importance weights, from their logs."""
    log_w = log_w.double()
    return float(torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)))


def log_mean_exp_se(log_w):
    """A_hat = log mean_m exp(log_w_m) and its Monte Carlo standard error by the delta method:
    sd(log of a mean of M weights) ~ sd(w) / (sqrt(M) E w) ~ sqrt((M / ESS - 1) / M).
    Returns (A_hat, se, ESS) as floats."""
    log_w = log_w.detach().double()
    M, ess = log_w.shape[0], effective_sample_size(log_w)
    value = float(torch.logsumexp(log_w, 0)) - math.log(M)
    return value, math.sqrt(max(M / ess - 1.0, 0.0) / M), ess


def jensen_bound_se(log_w):
    """E_q[E - log q] <= A (the log of a mean exceeds the mean of the logs), estimated by the
    mean of the log-weights; returns (estimate, its standard error)."""
    log_w = log_w.detach().double()
    return float(log_w.mean()), float(log_w.std() / math.sqrt(log_w.shape[0]))


def param_grad(energy, x, c, h=None, s=None):
    """sum_j c_j grad_theta E_theta(x_j), one tensor per parameter (in energy.parameters()
    order), in closed form. With h = W1 x + b1, s = softplus(h), sigma = s' = sigmoid(h):

        dE/dW1 = (w2 * sigma(h)) x^T,  dE/db1 = w2 * sigma(h),  dE/dw2 = s(h),  dE/db2 = 1.

    Written out because it is what every gradient here is: the data term (c_i = 1/n), the
    estimator F_hat (c_m = w_m) and its quadrature counterpart (c_g = cell masses); a test
    checks it against autograd."""
    w2 = energy.out.weight[0]
    h = energy.hidden(x) if h is None else h  # (N, H)
    s = F.softplus(h) if s is None else s
    a = torch.sigmoid(h) * c[:, None]  # (N, H)
    xa = x.T.contiguous() @ a  # (2, H); the contiguous copy is tiny and makes the product 4x faster
    return [w2[:, None] * xa.T, w2 * a.sum(0), (s.T @ c)[None, :], c.sum()[None]]


def grad_log_partition_is(energy, sample):
    """F_hat = N_hat / D_hat = sum_m w_m grad E(x_m), with the self-normalised weights
    w = softmax(E - log q): the IS estimate of grad A = E_{p_theta} grad E (problem 1.6)."""
    with torch.no_grad():
        w = torch.softmax(log_weights(energy, sample), 0)  # (M,), sums to one
        return param_grad(energy, sample.x, w)


def is_objective(x_train, sample):
    """The training objective of problem 1.6 for a fixed proposal sample: a function
    energy -> (L_hat, grad L_hat) with L_hat = mean E(x_i) - A_hat and
    grad L_hat = mean grad E(x_i) - F_hat = sum_j c_j grad E(x_j) over data and sample, with
    c = (1/n, ..., 1/n, -w_1, ..., -w_M). One pass through the network serves both sets."""
    n, x = x_train.shape[0], torch.cat([x_train, sample.x])
    quad = (x * x).sum(1)

    @torch.no_grad()
    def objective(energy):
        h = energy.hidden(x)  # (n + M, H)
        s = F.softplus(h)
        e = s @ energy.out.weight[0] + energy.out.bias - quad / (2 * energy.tau**2)
        log_w = e[n:] - sample.log_q
        value = e[:n].double().mean() - torch.logsumexp(log_w.double(), 0) + math.log(len(sample))
        c = torch.cat([torch.full((n,), 1.0 / n, dtype=x.dtype), -torch.softmax(log_w, 0)])
        return float(value), param_grad(energy, x, c, h, s)

    return objective


def is_score(x, sample):
    """energy -> mean E(x) - A_hat(sample): a log-likelihood with A from a proposal sample."""
    def score(energy):
        with torch.no_grad():
            return float(energy(x).double().mean() - log_partition_is(energy, sample).double())
    return score


# ---- quadrature: the exact A and grad A, possible because d = 2 -------------------------------

def grid_points(half_width, step):
    """Midpoints of the cells of side `step` tiling [-half_width, half_width]^2, shape (G, 2),
    float64."""
    n = int(round(2 * half_width / step))
    axis = -half_width + step * (torch.arange(n, dtype=torch.float64) + 0.5)
    gx, gy = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)


@torch.no_grad()
def _grid_energy(energy, half_width, step, chunk=2**16):
    """The grid (G, 2) in the energy's dtype and E on it, float64 (G,)."""
    g = grid_points(half_width, step).to(next(energy.parameters()).dtype)
    return g, torch.cat([energy(c).double() for c in g.split(chunk)])


def log_partition_grid(energy, half_width, step):
    """A by the midpoint rule: A ~= log(step^2 sum_g exp(E(g))), a logsumexp over cells."""
    return float(torch.logsumexp(_grid_energy(energy, half_width, step)[1], 0) + 2 * math.log(step))


def grad_log_partition_grid(energy, half_width, step):
    """(A, grad A) by the midpoint rule: grad A = E_p grad E = sum_g p_g grad E(g), with the
    cell masses p_g = step^2 exp(E(g) - A) = softmax(E)_g."""
    g, e = _grid_energy(energy, half_width, step)
    with torch.no_grad():
        return (float(torch.logsumexp(e, 0) + 2 * math.log(step)),
                [t.double() for t in param_grad(energy, g, torch.softmax(e, 0).to(g.dtype))])


def grid_objective(x_train, half_width, step):
    """The exact-gradient counterpart of is_objective: L = mean E(x_i) - A and
    grad L = mean grad E(x_i) - E_p grad E, with A and the expectation by quadrature."""
    n = x_train.shape[0]
    g = grid_points(half_width, step).to(x_train.dtype)
    x = torch.cat([x_train, g])
    quad, log_cell = (x * x).sum(1), 2 * math.log(step)

    @torch.no_grad()
    def objective(energy):
        h = energy.hidden(x)
        s = F.softplus(h)
        e = s @ energy.out.weight[0] + energy.out.bias - quad / (2 * energy.tau**2)
        value = e[:n].double().mean() - torch.logsumexp(e[n:].double(), 0) - log_cell
        c = torch.cat([torch.full((n,), 1.0 / n, dtype=x.dtype), -torch.softmax(e[n:], 0)])
        return float(value), param_grad(energy, x, c, h, s)

    return objective


def grid_score(x, half_width, step):
    """energy -> mean E(x) - A with A by quadrature."""
    def score(energy):
        with torch.no_grad():
            return float(energy(x).double().mean()) - log_partition_grid(energy, half_width, step)
    return score


# ---- training: full-batch L-BFGS on L_hat, the best validation iterate kept ---------------------

class LBFGS:
    """Limited-memory BFGS for maximising a smooth f (Nocedal & Wright 2006, Algorithm 7.4:
    the two-loop recursion) with a backtracking line search for Armijo's condition. Its state
    lives here, so training can stop after any iteration and resume where it was (the
    successive halving of the model selection does). x is a float64 numpy vector;
    value_and_grad(x) returns (f, grad f), the gradient a float64 numpy vector (numpy, not
    torch: the recursion is many operations on short vectors, where torch's per-call
    overhead would cost more than the network)."""

    def __init__(self, x, value_and_grad, memory=20):
        self.x, self.value_and_grad, self.memory = x, value_and_grad, memory
        self.f, self.g = value_and_grad(x)
        self.s, self.y = [], []  # the last `memory` steps and changes of the gradient of -f
        self.stopped = False  # no step raises f any more (float32 resolution reached)

    def direction(self):
        """H g, with H the L-BFGS approximation of the inverse Hessian of -f: an ascent direction."""
        q, alphas = self.g.copy(), []
        for s, y in zip(reversed(self.s), reversed(self.y)):
            alpha = (s @ q) / (y @ s)
            alphas.append(alpha)
            q -= alpha * y
        if self.s:  # initial scaling gamma = s^T y / y^T y (N&W eq. 7.20)
            q *= (self.s[-1] @ self.y[-1]) / (self.y[-1] @ self.y[-1])
        for s, y, alpha in zip(self.s, self.y, reversed(alphas)):
            q += s * (alpha - (y @ q) / (y @ s))
        return q

    def step(self, c1=1e-4, shrink=0.5, tries=30):
        """One iteration; returns False (and sets stopped) when no step length raises f."""
        d = self.direction()
        slope = self.g @ d
        if not slope > 0:  # lost the ascent direction: restart from the gradient
            self.s, self.y, d = [], [], self.g.copy()
            slope = self.g @ d
        if not slope > 0:  # the gradient is zero: a stationary point
            self.stopped = True
            return False
        t = 1.0 if self.s else min(1.0, 1.0 / np.abs(self.g).sum())
        for _ in range(tries):
            x = self.x + t * d
            f, g = self.value_and_grad(x)
            if f >= self.f + c1 * t * slope:
                s, y = x - self.x, self.g - g
                if s @ y > 1e-10 * (y @ y):  # keep the curvature pair only if positive
                    self.s.append(s), self.y.append(y)
                    del self.s[:-self.memory], self.y[:-self.memory]
                self.x, self.f, self.g = x, f, g
                return True
            t *= shrink
        self.stopped = True
        return False


@dataclass
class Run:
    """One model under training; train can be called again to continue it."""
    energy: Energy
    optimizer: LBFGS = None
    iterations: int = 0
    steps: list = field(default_factory=list)  # iterations at which the model was scored
    objective: list = field(default_factory=list)  # training objective L_hat there
    val_ll: list = field(default_factory=list)  # validation score there
    best_val: float = -math.inf
    best_iteration: int = 0
    best_state: dict = None
    snapshots: dict = field(default_factory=dict)  # iteration -> state, for later analysis
    early_stopped: bool = False  # the score stopped improving
    seconds: float = 0.0

    @property
    def stopped(self):
        """True once training will not go on: L-BFGS found no ascent step, or patience ran out."""
        return (self.optimizer is not None and self.optimizer.stopped) or self.early_stopped


def _state(energy):
    return {k: v.clone() for k, v in energy.state_dict().items()}


def train(run, objective, score, until, eval_every=10, memory=20, snapshot_at=(), patience=None):
    """Continue maximising objective(energy) with L-BFGS until `until` iterations in all.

    The model is scored (score(energy), the validation log-likelihood) at iteration 0, every
    eval_every iterations and at the end; the best-scoring weights are kept in run.best_state.
    Training ends early once the score has not improved for `patience` iterations.
    States at the iterations in snapshot_at are stored in run.snapshots. Raises
    FloatingPointError if the objective stops being finite.
    """
    energy = run.energy
    params = list(energy.parameters())
    sizes = [p.numel() for p in params]
    start = time.perf_counter()

    def assign(x):
        with torch.no_grad():
            for p, chunk in zip(params, torch.from_numpy(x).split(sizes)):
                p.copy_(chunk.view(p.shape))

    def value_and_grad(x):
        assign(x)
        f, grads = objective(energy)
        if not math.isfinite(f):
            raise FloatingPointError(f"EBM training diverged at iteration {run.iterations} (objective {f}); "
                                     f"check the data and the initial weights")
        return f, torch.cat([g.reshape(-1) for g in grads]).double().numpy()

    def record():
        val = score(energy)
        if not math.isfinite(val):
            raise FloatingPointError(f"EBM training diverged at iteration {run.iterations} (validation {val})")
        run.steps.append(run.iterations), run.objective.append(run.optimizer.f), run.val_ll.append(val)
        if val > run.best_val:
            run.best_val, run.best_iteration, run.best_state = val, run.iterations, _state(energy)

    if run.optimizer is None:
        run.optimizer = LBFGS(torch.cat([p.detach().reshape(-1) for p in params]).double().numpy(), value_and_grad, memory)
        record()
    opt = run.optimizer
    while run.iterations < until and not run.stopped:
        if run.iterations in snapshot_at:
            run.snapshots[run.iterations] = _state(energy)
        if not opt.step():
            break
        run.iterations += 1
        assign(opt.x)
        if run.iterations % eval_every == 0:
            record()
            run.early_stopped = patience is not None and run.iterations - run.best_iteration >= patience
    assign(opt.x)
    if run.steps[-1] != run.iterations:
        record()
    run.seconds += time.perf_counter() - start
    return run


def restore_best(run):
    """Load the best-scoring weights into run.energy and return it."""
    run.energy.load_state_dict(run.best_state)
    return run.energy


# ---- sampling from the learned model: Metropolis-adjusted Langevin ------------------------------

@torch.no_grad()
def energy_and_grad(energy, x):
    """E(x) and grad_x E(x) = W1^T (w2 * sigmoid(W1 x + b1)) - x / tau^2 for a batch of
    points, shape (n,) and (n, 2)."""
    w1, w2 = energy.hidden.weight, energy.out.weight[0]
    h = energy.hidden(x)
    e = F.softplus(h) @ w2 + energy.out.bias - (x * x).sum(1) / (2 * energy.tau**2)
    return e, (torch.sigmoid(h) * w2) @ w1 - x / energy.tau**2


def mala(energy, x0, steps, generator, adapt=0, step_size=0.5, target=0.574):
    """Metropolis-adjusted Langevin chains for p(x) proportional to exp(E(x)), one per row of x0.

    Proposal y = x + (h/2) grad E(x) + sqrt(h) xi, xi ~ N(0, I), accepted with probability
    min(1, exp(E(y) - E(x) + log k(x | y) - log k(y | x))). For the first `adapt` steps the
    shared step size h is tuned towards the acceptance rate `target` (0.574 is MALA's
    asymptotically optimal rate; Roberts & Rosenthal 1998); it is then frozen, so the last
    `steps` steps are a valid, time-homogeneous Markov chain. Returns (final points,
    acceptance rate of the frozen phase, h).
    """
    x = x0.clone()
    e, g = energy_and_grad(energy, x)
    log_h = math.log(step_size)

    def log_kernel(to, frm, g_frm, h):  # log k(to | frm) up to a constant
        return -((to - frm - 0.5 * h * g_frm) ** 2).sum(1) / (2 * h)

    accepted = 0.0
    for t in range(adapt + steps):
        h = math.exp(log_h)
        y = x + 0.5 * h * g + math.sqrt(h) * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        e_y, g_y = energy_and_grad(energy, y)
        log_alpha = e_y - e + log_kernel(x, y, g_y, h) - log_kernel(y, x, g, h)
        accept = torch.log(torch.rand(x.shape[0], generator=generator, dtype=x.dtype)) < log_alpha
        x, e, g = torch.where(accept[:, None], y, x), torch.where(accept, e_y, e), torch.where(accept[:, None], g_y, g)
        rate = float(accept.double().mean())
        if t < adapt:
            log_h += 2.0 * (rate - target) / math.sqrt(t + 1)  # Robbins-Monro on log h
        else:
            accepted += rate
    return x, accepted / max(steps, 1), math.exp(log_h)


def sample_grid(energy, half_width, step, n, generator):
    """n exact draws from the midpoint-rule version of p: a cell with probability
    proportional to exp(E(midpoint)), then a uniform point inside it. Shape (n, 2), float64."""
    g = grid_points(half_width, step)
    with torch.no_grad():
        e = torch.cat([energy(c.to(next(energy.parameters()).dtype)).double() for c in g.split(2**16)])
    idx = torch.multinomial(torch.softmax(e, 0), n, replacement=True, generator=generator)
    return g[idx] + step * (torch.rand(n, 2, generator=generator, dtype=torch.float64) - 0.5)


def ks_two_sample(a, b):
    """Kolmogorov-Smirnov distance between two 1-D samples and its asymptotic p-value."""
    a, b = np.sort(np.asarray(a)), np.sort(np.asarray(b))
    grid = np.concatenate([a, b])
    d = float(np.abs(np.searchsorted(a, grid, side="right") / a.size
                     - np.searchsorted(b, grid, side="right") / b.size).max())
    n_eff = a.size * b.size / (a.size + b.size)
    return d, float(kolmogorov(math.sqrt(n_eff) * d))


# ---- saving ------------------------------------------------------------------------------------------

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
