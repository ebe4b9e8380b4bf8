"""A shallow-network energy-based model fitted by maximum likelihood (problems 1.4-1.7).

Convention of the homework: p_theta(x) = exp(E_theta(x) - A(theta)),
A(theta) = log int exp(E_theta(x)) dx, so E is a log-unnormalised density (larger is more
likely). Training maximises the mean log-likelihood

    L(theta) = (1/n) sum_i E_theta(x_i) - A(theta),
    grad L   = (1/n) sum_i grad E_theta(x_i) - E_{x ~ p_theta} grad E_theta(x).

Every expectation under p_theta is one estimator that takes a proposal sample (x_m, log q(x_m)),
m = 1..M: with the log-weights l_m = E_theta(x_m) - log q(x_m),

    A_hat = log((1/M) sum_m exp(l_m)),    F_hat = N_hat / D_hat = sum_m softmax(l)_m f(x_m),

the self-normalised importance-sampling estimator of problems 1.5-1.6, and F_hat for
f = grad E is exactly grad A_hat (q does not depend on theta). So a fixed sample defines one
smooth objective L_hat = mean E - A_hat, maximised here by full-batch L-BFGS. The proposals
differ only in the sample:

    the homework's q        draws from the true mixture (an oracle: it knows the answer);
    a broad Gaussian        fitted to the training data (knows nothing of the ring);
    quadrature              the midpoints of a grid with q uniform on the box: A_hat is then
                            the midpoint rule, exact to round-off once the box holds the mass;
    contrastive divergence  draws from p_theta itself (MCMC chains): log q = E_theta up to a
                            constant, equal weights, F_hat the plain average over the chains.

The energy: E_theta(x) = w2^T softplus(W1 x + b1) + b2 - ||x||^2 / (2 tau^2). A one-hidden-layer
net alone can grow linearly along some direction, and then exp(E) has an infinite integral,
while an importance-sampling estimate from a light-tailed q stays finite and hides that. The
net is Lipschitz, so the fixed quadratic term dominates far out and exp(E_theta) is integrable
for every theta. Its scale tau and the width H are chosen on validation data.
"""
import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import stats
from scipy.special import kolmogorov
from torch import nn


class Linear(nn.Linear):
    """nn.Linear on (n, in) batches, multiplying by a contiguous copy of the weight's transpose:
    MKL's reproducible mode (VI.NUMERICS) runs F.linear's transposed view 3x slower."""

    def forward(self, x):
        return torch.addmm(self.bias, x, self.weight.T.contiguous())


def softplus(h):
    """log(1 + e^h), computed as relu(h) - log sigmoid(|h|): finite for every h, +-inf included,
    within about one float epsilon of max(1, value), and with derivative sigmoid(h) to full
    relative precision (see _Softplus). Not F.softplus: its log1p(exp(h)) runs at half speed
    under the AVX2 kernels that VI.NUMERICS pins and took a third of python VI.py's time; this
    form brought the pinned run from 12.4 to 11.6 s (bench/timing.py, median of 5; the
    AVX-512 run, which had the fast F.softplus, went from 9.8 to 11.0 s)."""
    return _Softplus.apply(h)


class _Softplus(torch.autograd.Function):
    """softplus with its derivative, sigmoid(h), written out: autograd of the formula would give
    0 at h = 0 (relu's and abs's choice there) and 1 - sigmoid(|h|), all round-off, in the left
    tail. The backward is built from differentiable ops, so second derivatives work too."""

    @staticmethod
    def forward(ctx, h):
        ctx.save_for_backward(h)
        return torch.relu(h).sub_(torch.sigmoid(h.abs()).log_())

    @staticmethod
    def backward(ctx, grad):
        (h,) = ctx.saved_tensors
        return grad * torch.sigmoid(h)


class Softplus(nn.Module):
    def forward(self, h):
        return softplus(h)


class Energy(nn.Module):
    """E_theta(x) = w2^T softplus(W1 x + b1) + b2 - ||x||^2 / (2 tau^2); x (n, dim) -> (n,).

    The only definition of the network: every objective, estimator and sampler calls it, and
    `spec` (the constructor's arguments) is saved with the weights, so a saved energy reloads
    whatever its architecture. With a generator, the weights are drawn from it (PyTorch's
    default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases)."""

    def __init__(self, hidden, tau, generator=None, dim=2):
        super().__init__()
        self.spec = dict(hidden=int(hidden), tau=float(tau), dim=int(dim))
        self.tau = float(tau)
        self.evaluations = 0  # points through the network so far: a cost no machine changes
        self.net = nn.Sequential(Linear(dim, hidden), Softplus(), Linear(hidden, 1))
        if generator is not None:
            with torch.no_grad():
                for layer in (m for m in self.net if isinstance(m, nn.Linear)):
                    bound = 1.0 / math.sqrt(layer.in_features)
                    for p in layer.parameters():
                        p.uniform_(-bound, bound, generator=generator)

    def forward(self, x):
        self.evaluations += x.shape[0]
        return self.net(x).squeeze(-1) - (x * x).sum(-1) / (2.0 * self.tau**2)

    @torch.no_grad()
    def energy_and_vjp(self, x):
        """E(x), shape (n,), and the function c -> sum_j c_j grad_theta E(x_j), one tensor per
        parameter: the training objective's gradient in closed form. With h = W1 x + b1,

            dE/dW1 = (w2 * sigmoid(h)) x^T,  dE/db1 = w2 * sigmoid(h),
            dE/dw2 = softplus(h),            dE/db2 = 1.

        Each gradient costs a fifth less than autograd's (0.54 against 0.69 ms at 6000 points
        and H = 32, pinned kernels); a test holds it to autograd of forward, the definition."""
        (first, _, last), w2 = self.net, self.net[2].weight[0]
        self.evaluations += x.shape[0]
        h = first(x)  # (n, H)
        s = softplus(h)
        e = s @ w2 + last.bias - (x * x).sum(-1) / (2.0 * self.tau**2)

        @torch.no_grad()
        def vjp(c):
            a = torch.sigmoid(h) * c[:, None]  # (n, H)
            xa = x.T.contiguous() @ a  # (2, H); a tiny copy that makes the product 4x faster
            return [w2[:, None] * xa.T, w2 * a.sum(0), (s.T @ c)[None, :], c.sum()[None]]
        return e, vjp


def save_energy(energy, path):
    torch.save({"spec": energy.spec, "state_dict": energy.state_dict()}, path)


def load_energy(path):
    """A trained energy saved by save_energy: a callable from (n, 2) tensors to E_theta(x).

        E = load_energy("plots/ebm_energy.pt")
        with torch.no_grad():
            values = E(torch.zeros(1, 2))
    """
    blob = torch.load(path, weights_only=True)
    energy = Energy(**blob["spec"])
    energy.load_state_dict(blob["state_dict"])
    return energy.eval()


def dtype_of(energy):
    return next(energy.parameters()).dtype


def state_of(energy):
    return {k: v.clone() for k, v in energy.state_dict().items()}


def with_state(energy, state):
    """A copy of energy's architecture holding the weights `state`."""
    clone = Energy(**energy.spec).to(dtype_of(energy))
    clone.load_state_dict(state)
    return clone


# ---- proposal samples: one estimator family for every expectation under p_theta ---------------

@dataclass
class Sample:
    """Points x_m (M, d) with their proposal log-densities log q(x_m) (M,), kept together so
    that the two can never come from different draws."""
    x: torch.Tensor
    log_q: torch.Tensor

    def __len__(self):
        return self.x.shape[0]


def grid_points(half_width, step):
    """Midpoints of the cells of side `step` tiling [-half_width, half_width]^2, (G, 2) float64."""
    n = int(round(2 * half_width / step))
    axis = -half_width + step * (torch.arange(n, dtype=torch.float64) + 0.5)
    gx, gy = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)


def grid_sample(half_width, step, dtype=torch.float32):
    """Quadrature as importance sampling: the cell midpoints with q uniform on the box,
    log q = -log(area). Then A_hat = log(area mean_g exp E(g)) = log(step^2 sum_g exp E(g)), the
    midpoint rule, and F_hat weighs each cell by its mass."""
    g = grid_points(half_width, step)
    area = (step * round(2 * half_width / step)) ** 2
    return Sample(g.to(dtype), torch.full((g.shape[0],), -math.log(area), dtype=dtype))


def equal_weights(energy, x):
    """Draws x from p_theta itself (MCMC chains): log q = E_theta(x) up to a constant, so every
    weight is equal and F_hat is the plain average: contrastive divergence's negative phase."""
    with torch.no_grad():
        return Sample(x, energy(x))


@torch.no_grad()
def energies(energy, x, chunk=2**16):
    """E_theta(x) without a graph, in chunks of rows, as float64, shape (M,)."""
    return torch.cat([energy(c).double() for c in x.split(chunk)])


def log_weights(energy, sample):
    """l_m = E_theta(x_m) - log q(x_m), differentiable, shape (M,)."""
    return energy(sample.x) - sample.log_q


def log_partition(energy, sample):
    """A_hat = log mean_m exp(l_m), in float64 log space; differentiable in theta."""
    return torch.logsumexp(log_weights(energy, sample).double(), 0) - math.log(len(sample))


def grad_log_partition(energy, sample):
    """F_hat = sum_m softmax(l)_m grad E(x_m) = grad A_hat (problem 1.6), by autograd; one
    tensor per parameter."""
    return list(torch.autograd.grad(log_partition(energy, sample), list(energy.parameters())))


def log_mean_exp_se(log_w):
    """A_hat = log mean exp(log_w), its delta-method standard error
    sd(log of a mean of M weights) ~ sqrt((M / ESS - 1) / M), and ESS = (sum w)^2 / sum w^2."""
    log_w = log_w.double()
    M = log_w.shape[0]
    ess = float(torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)))
    value = float(torch.logsumexp(log_w, 0)) - math.log(M)
    return value, math.sqrt(max(M / ess - 1.0, 0.0) / M), ess


def jensen_bound_se(log_w):
    """E_q[E - log q] <= A (the log of a mean exceeds the mean of the logs): the mean of the
    log-weights and its standard error."""
    log_w = log_w.double()
    return float(log_w.mean()), float(log_w.std() / math.sqrt(log_w.shape[0]))


def sample_log_weights(energy, sample):
    """l_m without a graph, chunked (for samples of any size), float64."""
    return energies(energy, sample.x) - sample.log_q.double()


def objective(x_train, sample):
    """energy -> (L_hat, grad L_hat) for the L-BFGS training of problem 1.6, with
    L_hat = mean E(x_i) - A_hat(sample) and grad L_hat = mean grad E(x_i) - F_hat, a weighted
    sum sum_j c_j grad E(x_j) over data and sample with c = (1/n, ..., 1/n, -w_1, ..., -w_M).
    The sample is the proposal: the homework's, a fitted Gaussian, or the quadrature grid."""
    n, x = x_train.shape[0], torch.cat([x_train, sample.x])  # one pass through the network

    def value_and_grad(energy):
        e, vjp = energy.energy_and_vjp(x)
        log_w = e[n:] - sample.log_q
        value = e[:n].double().mean() - torch.logsumexp(log_w.double(), 0) + math.log(len(sample))
        weights = torch.cat([torch.full((n,), 1.0 / n, dtype=x.dtype), -torch.softmax(log_w, 0)])
        return float(value), vjp(weights)

    return value_and_grad


def score(x, sample):
    """energy -> mean E(x) - A_hat(sample): a log-likelihood with A from a proposal sample."""
    def log_likelihood(energy):
        a_hat = log_mean_exp_se(sample_log_weights(energy, sample))[0]
        return float(energies(energy, x).mean()) - a_hat
    return log_likelihood


# ---- quadrature that certifies its box ---------------------------------------------------------

def log_partition_grid(energy, half_width, step):
    """A by the midpoint rule on [-half_width, half_width]^2 (no certificate)."""
    cells = grid_sample(half_width, step, dtype_of(energy))
    return log_mean_exp_se(sample_log_weights(energy, cells))[0]


def certified_log_partition(energy, step, half_width=20.0, tol=1e-6, grow=1.5, coarse=4,
                            largest=400.0):
    """A by the midpoint rule on a box [-h, h]^2 that holds all but `tol` of the model's mass.
    The mass outside the box is measured on a box `grow` times as wide, on cells `coarse` times
    as large (a tail mass needs no fine cells); while it exceeds tol the box grows. Returns
    dict(A, half_width, mass_outside)."""
    h, wide = half_width, coarse * step
    while True:
        big = wide * round(grow * h / wide)  # a whole number of cells, aligned with the box's
        g = grid_points(big, wide)
        e = energies(energy, g.to(dtype_of(energy)))
        inside = torch.logsumexp(e[(g.abs() < h).all(1)], 0)
        mass_outside = max(0.0, -math.expm1(float(inside - torch.logsumexp(e, 0))))
        if mass_outside <= tol or big > largest:
            a = log_partition_grid(energy, h, step)
            return dict(A=a, half_width=h, mass_outside=mass_outside)
        h = big


# ---- training: full-batch L-BFGS, the best validation iterate kept -----------------------------

class LBFGS:
    """Limited-memory BFGS maximising a smooth f (Nocedal & Wright 2006, Algorithm 7.4, the
    two-loop recursion) with a backtracking line search for Armijo's condition. Its state is
    plain float64 numpy data (x, f, grad f and the last `memory` curvature pairs), so a run can
    pause, travel to another process and resume where it was; the function is passed to step."""

    def __init__(self, x, f, g, memory=20):
        self.x, self.f, self.g, self.memory = x, f, g, memory
        self.s, self.y = [], []  # steps and changes of the gradient of -f
        self.stopped = False  # no step raises f any more (float32 resolution reached)

    def direction(self):
        """H g, with H the L-BFGS inverse-Hessian approximation of -f: an ascent direction."""
        q, alphas = self.g.copy(), []
        for s, y in zip(reversed(self.s), reversed(self.y)):
            alphas.append((s @ q) / (y @ s))
            q -= alphas[-1] * y
        if self.s:  # initial scaling gamma = s^T y / y^T y (N&W eq. 7.20)
            q *= (self.s[-1] @ self.y[-1]) / (self.y[-1] @ self.y[-1])
        for s, y, alpha in zip(self.s, self.y, reversed(alphas)):
            q += s * (alpha - (y @ q) / (y @ s))
        return q

    def step(self, value_and_grad, c1=1e-4, shrink=0.5, tries=30):
        """One iteration; returns False (and sets stopped) when no step length raises f."""
        d = self.direction()
        if not self.g @ d > 0:  # lost the ascent direction: restart from the gradient
            self.s, self.y, d = [], [], self.g.copy()
        slope = self.g @ d
        if not slope > 0:  # the gradient is zero: a stationary point
            self.stopped = True
            return False
        t = 1.0 if self.s else min(1.0, 1.0 / np.abs(self.g).sum())
        for _ in range(tries):
            f, g = value_and_grad(self.x + t * d)
            if f >= self.f + c1 * t * slope:
                s, y = t * d, self.g - g
                if s @ y > 1e-10 * (y @ y):  # keep the curvature pair only if positive
                    self.s, self.y = (self.s + [s])[-self.memory:], (self.y + [y])[-self.memory:]
                self.x, self.f, self.g = self.x + s, f, g
                return True
            t *= shrink
        self.stopped = True
        return False


@dataclass
class Run:
    """One model under training; `train` continues it. Picklable, so runs can be trained in
    other processes."""
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
    converged: bool = False  # stopped by the convergence rule or at a stationary point
    seconds: float = 0.0

    @property
    def stopped(self):
        return self.converged or (self.optimizer is not None and self.optimizer.stopped)

    def record(self, step, val, objective_value=None, energy=None):
        """Note the validation score `val` at `step`, keeping the best weights."""
        self.steps.append(step), self.val_ll.append(val)
        if objective_value is not None:
            self.objective.append(objective_value)
        if val > self.best_val:
            self.best_val, self.best_iteration = val, step
            self.best_state = state_of(energy or self.energy)


def has_converged(iteration, best_iteration, patience):
    """The stopping rule: no validation gain for as many iterations as it took to reach the
    best, and at least `patience`. A plateau ends a run only once it is as long as the run before
    it, so a model still climbing slowly after a pause is not cut off; the cost at most doubles."""
    return iteration - best_iteration >= max(patience, best_iteration)


def _flat_params(energy):
    return torch.cat([p.detach().reshape(-1) for p in energy.parameters()]).double().numpy()


def _assign(energy, x):
    with torch.no_grad():
        params = list(energy.parameters())
        for p, chunk in zip(params, torch.from_numpy(x).split([p.numel() for p in params])):
            p.copy_(chunk.view(p.shape))


def train(run, objective, score, until, eval_every=10, memory=20, patience=100, snapshot_at=()):
    """Continue maximising objective(energy) by L-BFGS up to `until` iterations in all, or until
    has_converged. The model is scored (score(energy): the validation log-likelihood) at
    iteration 0 and every eval_every iterations; the best-scoring weights are kept in
    run.best_state, and states at the iterations in snapshot_at in run.snapshots. Raises
    FloatingPointError once the objective or the score stops being finite."""
    energy, start = run.energy, time.perf_counter()

    def value_and_grad(x):
        _assign(energy, x)
        f, grads = objective(energy)
        finite_or_raise(f, f"EBM training diverged at iteration {run.iterations} (objective {f}); "
                           f"check the data and the initial weights")
        return f, torch.cat([g.reshape(-1) for g in grads]).double().numpy()

    def record():
        val = score(energy)
        finite_or_raise(val, f"EBM training diverged at iteration {run.iterations} "
                             f"(validation {val})")
        run.record(run.iterations, val, run.optimizer.f)

    if run.optimizer is None:
        x = _flat_params(energy)
        run.optimizer = LBFGS(x, *value_and_grad(x), memory)
        record()
    while run.iterations < until and not run.stopped:
        if run.iterations in snapshot_at:
            run.snapshots[run.iterations] = state_of(energy)
        if not run.optimizer.step(value_and_grad):
            break
        run.iterations += 1
        _assign(energy, run.optimizer.x)
        if run.iterations % eval_every == 0:
            record()
            run.converged = has_converged(run.iterations, run.best_iteration, patience)
    _assign(energy, run.optimizer.x)
    run.converged |= run.optimizer.stopped
    run.seconds += time.perf_counter() - start
    return run


def finite_or_raise(value, message):
    if not math.isfinite(value):
        raise FloatingPointError(message)


def train_pcd(energy, x_train, x_val, generator, chains=1000, steps=2, updates=3000, lr=0.05,
              betas=(0.0, 0.99), eval_every=25, grid=(0.2, 20.0), target=0.574, max_step=4.0):
    """Persistent contrastive divergence: grad L = mean grad E(x_i) - E_{p_theta} grad E with the
    model's expectation replaced by the plain average over `chains` persistent MALA chains (a
    sample with equal weights), which take `steps` MALA steps after every update. Adam with a
    cosine decay of the learning rate (no momentum: the chains would lag a model that coasts);
    every eval_every updates the validation LL, with A by quadrature on the grid
    (step, half_width), picks the iterate to keep. The chains start from N(0, s^2 I), s the
    training data's standard deviation; the MALA step size follows the acceptance rate towards
    `target`, never above max_step (a broad early model would otherwise grow it until the chains
    freeze once the model sharpens). Returns a Run."""
    run, start, params = Run(energy, converged=True), time.perf_counter(), list(energy.parameters())
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    validation, h = score(x_val, grid_sample(grid[1], grid[0], x_train.dtype)), 0.5
    z = torch.randn(chains, x_train.shape[1], generator=generator, dtype=x_train.dtype)
    z = float(x_train.std()) * z
    for t in range(updates + 1):
        if t % eval_every == 0 or t == updates:
            val = validation(energy)
            finite_or_raise(val, f"PCD diverged at update {t} (validation {val})")
            run.record(t, val)
        if t == updates:
            break
        objective_ = energy(x_train).mean() - log_partition(energy, equal_weights(energy, z))
        grads = torch.autograd.grad(objective_, params)
        z, rate, _, _ = mala(energy, z, steps, generator, step_size=h)
        h = min(max_step, h * math.exp(0.05 * (rate - target)))
        lr_t = 0.5 * lr * (1 + math.cos(math.pi * t / updates))
        adam_ascent(params, grads, moments, t + 1, lr_t, betas)
    run.iterations, run.seconds = updates, time.perf_counter() - start
    return run


@torch.no_grad()
def adam_ascent(params, grads, moments, t, lr, betas, eps=1e-8):
    """One Adam step uphill (Kingma & Ba 2015), moments = [(m, v)] updated in place."""
    for p, g, (m, v) in zip(params, grads, moments):
        m.mul_(betas[0]).add_(g, alpha=1 - betas[0])
        v.mul_(betas[1]).addcmul_(g, g, value=1 - betas[1])
        p.add_(lr * (m / (1 - betas[0] ** t)) / ((v / (1 - betas[1] ** t)).sqrt() + eps))


def best_energy(run):
    """The run's best-scoring weights, in a copy of its energy."""
    return with_state(run.energy, run.best_state)


def successive_halving(runs, train_to, rungs, keep, pmap=map):
    """Model selection on a budget: every run in `runs` ({name: Run}) is trained to rungs[0]
    iterations, the best 1/keep by best validation score go on to rungs[1], and so on.
    train_to(until) returns a function Run -> Run; pmap maps it (in parallel, if it can: the
    runs are independent and deterministic). Returns the runs and every name ranked: by the
    last round reached, then by score (the first is the choice)."""
    alive, cut = list(runs), []
    for r, until in enumerate(rungs):
        runs.update(zip(alive, pmap(train_to(until), [runs[name] for name in alive])))
        alive.sort(key=lambda name: -runs[name].best_val)  # stable: ties keep the grid's order
        if r < len(rungs) - 1:
            survivors = math.ceil(len(alive) / keep)
            alive, cut = alive[:survivors], alive[survivors:] + cut
    return runs, alive + cut


def fit_route(init, x, samples, search, settings, grid, pmap=map):
    """One training route of problem 1.6: (tau, H) chosen by successive halving on a budget,
    then search["restarts"] initialisations of the choice trained until has_converged (or
    search["max_iter"]), each a fitted density with a certified A.

    init(H, tau, r) gives the r-th initialisation (the candidates use r = 0, so the first
    restart continues the chosen candidate's own run); x = dict(train, val, test) tensors;
    samples = (training, validation) proposal samples; search = dict(taus, widths, rungs,
    keep, restarts, max_iter); settings: keyword arguments of train; grid = (step, half_width)
    of the quadrature. Returns (numbers, models): models holds the runs, the kept energies,
    their test log-densities (restarts, n) and the CPU seconds of the route."""
    objective_, score_ = objective(x["train"], samples[0]), score(x["val"], samples[1])
    train_to = lambda until: lambda run: train(run, objective_, score_, until, **settings)
    runs = {(tau, h): Run(init(h, tau, 0)) for h in search["widths"] for tau in search["taus"]}
    runs, ranking = successive_halving(runs, train_to, search["rungs"], search["keep"], pmap)
    tau, h = ranking[0]
    first = copy.deepcopy(runs[(tau, h)])  # continued: the candidate stays as selection left it
    fresh = [Run(init(h, tau, r)) for r in range(1, search["restarts"])]
    fits = pmap(train_to(search["max_iter"]), [first] + fresh)
    models = pmap(lambda run: fitted_density(run, x["test"], *grid), fits)
    # the candidates are only ranked, so cells twice as wide do
    certs = pmap(lambda run: certified_log_partition(best_energy(run), 2 * grid[0], grid[1]),
                 runs.values())
    seconds = sum(r.seconds for r in runs.values()) - runs[(tau, h)].seconds
    candidates = [dict(tau=t, hidden=w, rank=ranking.index((t, w)), **_row(run, cert),
                       val_ll_grid=float(energies(best_energy(run), x["val"]).mean()) - cert["A"])
                  for ((t, w), run), cert in zip(runs.items(), certs)]
    restarts = [dict(restart=r, **_row(run, cert), test_ll=float(ll.mean()),
                     test_ll_se=float(ll.std(ddof=1) / math.sqrt(ll.size)),
                     ess_train=log_mean_exp_se(sample_log_weights(energy, samples[0]))[2])
                for r, (run, (energy, cert, ll)) in enumerate(zip(fits, models))]
    return dict(tau=tau, hidden=h, candidates=candidates, restarts=restarts), \
        dict(runs=fits, energies=[m[0] for m in models], test=np.stack([m[2] for m in models]),
             seconds=seconds + sum(r.seconds for r in fits))


def _row(run, cert):
    return dict(iterations=run.iterations, best_iteration=run.best_iteration,
                converged=run.converged, val_ll=run.best_val, A=cert["A"],
                half_width=cert["half_width"], mass_outside=cert["mass_outside"])


def fitted_density(run, x_test, step, half_width):
    """The run's kept model as a fitted density: its energy, the certified quadrature A and the
    per-point test log-densities log p_theta(x_test) = E(x_test) - A, shape (n,)."""
    energy = best_energy(run)
    cert = certified_log_partition(energy, step, half_width)
    return energy, cert, (energies(energy, x_test) - cert["A"]).numpy()


# ---- problem 1.7: A three ways, and the gradient of problem 1.6 measured -----------------------

def partition_estimates(energy, train_sample, fresh_sample, step, half_width):
    """A from the training proposal sample and from a fresh one, each with its delta-method
    standard error and ESS; Jensen's lower bound E_q[E - log q] from the fresh sample; A by
    certified quadrature, and how far enlarging its box by half or halving its step moves it."""
    lw_train, lw_fresh = (sample_log_weights(energy, s) for s in (train_sample, fresh_sample))
    a_train, se_train, ess_train = log_mean_exp_se(lw_train)
    a_fresh, se_fresh, ess_fresh = log_mean_exp_se(lw_fresh)
    jensen, jensen_se = jensen_bound_se(lw_fresh)
    grid = certified_log_partition(energy, step, half_width)
    h, a = grid["half_width"], grid["A"]
    moved = max(abs(log_partition_grid(energy, *box) - a)
                for box in ((1.5 * h, step), (h, step / 2)))
    return dict(A_train_is=a_train, A_train_se=se_train, ess_train=ess_train, A_fresh_is=a_fresh,
                A_fresh_se=se_fresh, ess_fresh=ess_fresh, jensen_bound=jensen,
                jensen_se=jensen_se, A_grid=a, grid_half_width=h, grid_delta=moved,
                mass_outside=grid["mass_outside"], A_grid_minus_train=a - a_train,
                A_grid_minus_fresh=a - a_fresh, A_train_gap_ratio=(a - a_train) / se_train)


def relative_error_and_cosine(estimate, reference):
    """||estimate - reference|| / ||reference|| and the cosine of their angle."""
    cosine = estimate @ reference / (estimate.norm() * reference.norm())
    return float((estimate - reference).norm() / reference.norm()), float(cosine)


def gradient_errors(energy, states, train_sample, probes, exact):
    """At each stored state {iteration: weights}: the IS estimate F_hat of grad A from the
    fixed training sample and from fresh samples (probes) of the same size, against grad A from
    the sample `exact` (the quadrature grid): relative error and cosine similarity."""
    flat = lambda grads: torch.cat([g.reshape(-1).double() for g in grads])
    rows = []
    for it, state in states.items():
        e = with_state(energy, state)
        ref = flat(grad_log_partition(e, exact))
        estimates = [flat(grad_log_partition(e, s)) for s in [train_sample, *probes]]
        (rel, cos), *fresh = [relative_error_and_cosine(f_hat, ref) for f_hat in estimates]
        fresh = np.array(fresh)
        rows.append(dict(iteration=it, rel_err_train=rel, cos_train=cos,
                         rel_err_fresh=float(fresh[:, 0].mean()),
                         rel_err_fresh_sd=float(fresh[:, 0].std(ddof=1)),
                         cos_fresh=float(fresh[:, 1].mean()), grad_norm=float(ref.norm())))
    return rows


# ---- sampling from the learned model -----------------------------------------------------------

def energy_and_grad(energy, x):
    """E(x) and grad_x E(x) for a batch of points, shape (n,) and (n, d), by autograd."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        e = energy(x)
        (g,) = torch.autograd.grad(e.sum(), x)
    return e.detach(), g


def mala(energy, x0, steps, generator, adapt=0, step_size=0.5, target=0.574, proposal=None,
         jump=0.0):
    """Metropolis-adjusted Langevin chains for p(x) proportional to exp(E(x)), one per row of
    x0, with an optional independence move that lets a chain cross the valleys between modes.

    Each step, a chain proposes with probability `jump` a draw y ~ N(mean, cov) = proposal (a
    broad Gaussian, e.g. fitted to the training data), else the Langevin move
    y = x + (h/2) grad E(x) + sqrt(h) xi, xi ~ N(0, I). Either is accepted with the
    Metropolis-Hastings probability min(1, exp(E(y) - E(x) + log k(x | y) - log k(y | x))), so
    each kernel, and their state-independent mixture, leaves p invariant. For the first `adapt`
    steps the step size h is tuned towards the Langevin acceptance rate `target` (0.574 is
    optimal; Roberts & Rosenthal 1998), then frozen: the last `steps` steps are a
    time-homogeneous Markov chain. Returns (points, Langevin and jump acceptance rates, h)."""
    mean, cov = (torch.as_tensor(a, dtype=x0.dtype) for a in (proposal or (np.zeros(2), np.eye(2))))
    root, precision = torch.linalg.cholesky(cov), torch.linalg.inv(cov)
    log_q = lambda z: -0.5 * (((z - mean) @ precision) * (z - mean)).sum(1)
    log_k = lambda to, frm, g_frm, h: -((to - frm - 0.5 * h * g_frm) ** 2).sum(1) / (2 * h)
    x, (e, g), log_h = x0.clone(), energy_and_grad(energy, x0), math.log(step_size)
    counts = np.zeros(4)  # Langevin accepted, proposed; jumps accepted, proposed (frozen phase)
    for t in range(adapt + steps):
        h = math.exp(log_h)
        is_jump = torch.rand(x.shape[0], generator=generator, dtype=x.dtype) < jump
        xi = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        y = torch.where(is_jump[:, None], mean + xi @ root.T, x + 0.5 * h * g + math.sqrt(h) * xi)
        e_y, g_y = energy_and_grad(energy, y)
        kernels = torch.where(is_jump, log_q(x) - log_q(y), log_k(x, y, g_y, h) - log_k(y, x, g, h))
        u = torch.rand(x.shape[0], generator=generator, dtype=x.dtype)
        accept = torch.log(u) < e_y - e + kernels
        x, e = torch.where(accept[:, None], y, x), torch.where(accept, e_y, e)
        g = torch.where(accept[:, None], g_y, g)
        tally = np.array([float((accept & ~is_jump).sum()), float((~is_jump).sum()),
                          float((accept & is_jump).sum()), float(is_jump.sum())])
        if t < adapt:  # Robbins-Monro on log h, from the Langevin moves only
            log_h += 2.0 * (tally[0] / max(tally[1], 1.0) - target) / math.sqrt(t + 1)
        else:
            counts += tally
    return x, counts[0] / max(counts[1], 1.0), counts[2] / max(counts[3], 1.0), math.exp(log_h)


def sample_grid(energy, half_width, step, n, generator):
    """n exact draws from the midpoint-rule version of p: a cell with probability proportional
    to exp(E(midpoint)), then a uniform point inside it. Shape (n, 2), float64."""
    g = grid_points(half_width, step)
    e = energies(energy, g.to(dtype_of(energy)))
    idx = torch.multinomial(torch.softmax(e, 0), n, replacement=True, generator=generator)
    return g[idx] + step * (torch.rand(n, 2, generator=generator, dtype=torch.float64) - 0.5)


def ks_two_sample(a, b):
    """Kolmogorov-Smirnov distance between two 1-D samples and its asymptotic p-value."""
    a, b = np.sort(np.asarray(a)), np.sort(np.asarray(b))
    grid = np.concatenate([a, b])
    cdf = lambda s: np.searchsorted(s, grid, side="right") / s.size
    d = float(np.abs(cdf(a) - cdf(b)).max())
    return d, float(kolmogorov(math.sqrt(a.size * b.size / (a.size + b.size)) * d))


def sectors(x, K):
    """The mode of each point: the angular sector of width 2 pi / K centred on angle 2 pi k / K."""
    x = np.asarray(x, dtype=np.float64)
    return np.rint(np.arctan2(x[:, 1], x[:, 0]) / (2 * np.pi / K)).astype(int) % K


def mode_masses(energy, K, half_width, step):
    """The model's mass in each of the K sectors, by the midpoint rule on the grid."""
    g = grid_points(half_width, step)
    w = torch.softmax(energies(energy, g.to(dtype_of(energy))), 0).numpy()
    return np.bincount(sectors(g.numpy(), K), weights=w, minlength=K)


def chi_square_modes(x, masses):
    """Pearson's chi-square test of the points' sector counts against the model's masses."""
    counts = np.bincount(sectors(x, len(masses)), minlength=len(masses))
    statistic, p = stats.chisquare(counts, len(x) * masses / masses.sum())
    return float(statistic), float(p)


def sample_checks(energy, start, K, grid, mala_settings, generators):
    """Samples from the learned EBM by MALA with independence jumps, every chain started at the
    same point (a start that holds none of the answer), against the model: chain counts per
    mode against the mode masses by quadrature (chi-square), and the radius and the angle
    against exact draws from the grid (Kolmogorov-Smirnov). generators = (for MALA, for the
    exact draws). Returns (numbers, MALA points, exact draws) as float64 numpy."""
    x, rate, jump_rate, h = mala(energy, start, generator=generators[0], **mala_settings)
    exact = sample_grid(energy, grid[1], grid[0], len(start), generators[1]).numpy()
    x, masses = x.double().numpy(), mode_masses(energy, K, grid[1], grid[0])
    radius = lambda a: np.linalg.norm(a, axis=1)
    angle = lambda a: np.arctan2(a[:, 1], a[:, 0])
    ks_r, p_r = ks_two_sample(radius(x), radius(exact))
    ks_a, p_a = ks_two_sample(angle(x), angle(exact))
    chi2, p_modes = chi_square_modes(x, masses)
    chi2_start, p_start = chi_square_modes(start.double().numpy(), masses)
    return dict(chains=len(start), acceptance=rate, jump_acceptance=jump_rate, step_size=h,
                ks_radius=ks_r, p_radius=p_r, ks_angle=ks_a, p_angle=p_a, chi2_modes=chi2,
                p_modes=p_modes, chi2_start=chi2_start, p_start=p_start, masses=masses.tolist(),
                counts=np.bincount(sectors(x, K), minlength=K).tolist()), x, exact


def examine(run, energy, samples, x_test, K, grid, mala_settings, generators):
    """Problems 1.6-1.7 on one trained model: A three ways with standard errors, the IS gradient
    against quadrature along training, samples by MALA. samples = dict(train, fresh, probes,
    start); grid = (step, half_width). Returns (numbers, dict(mala, exact) points)."""
    res = partition_estimates(energy, samples["train"], samples["fresh"], *grid)
    e_test = float(energies(energy, x_test).mean())
    res.update({f"test_ll_{k}": e_test - res[f"A_{k}"] for k in ("train_is", "fresh_is", "grid")})
    # with q = p the Jensen gap A - E_p[E - log p] is E_p[log p - log p_theta] = KL(p || p_theta)
    res["kl_from_jensen"] = res["A_grid"] - res["jensen_bound"]
    states = {it: st for it, st in run.snapshots.items() if it < run.best_iteration}
    states[run.best_iteration] = run.best_state
    exact = grid_sample(res["grid_half_width"], grid[0])
    res["gradient"] = gradient_errors(energy, states, samples["train"], samples["probes"], exact)
    res["samples"], mala_x, exact_x = sample_checks(energy, samples["start"], K, grid,
                                                    mala_settings, generators)
    res["history"] = dict(steps=run.steps, objective=run.objective, val_ll=run.val_ll)
    return res, dict(mala=mala_x, exact=exact_x)


# ---- the EBM's figures (drawn on axes laid out by VI.py, which also styles and saves them) ------

def candidate_name(tau, hidden, tex=False):
    """The one name of an EBM candidate: in figures (τ = 1, H = 32) or in LaTeX."""
    return f"$\\tau={tau:g}$, $H={hidden}$" if tex else f"τ = {tau:g}, H = {hidden}"


def draw_training(axes, model, route, truth, colors):
    """Problem 1.6: training of the examined model (left), the IS gradient measured (right)."""
    ax, h = axes[0], model["history"]
    ax.plot(h["steps"], h["objective"], c=colors["fit"], label="objective (training set)")
    ax.plot(h["steps"], h["val_ll"], c=colors["val"], label="validation LL")
    ax.axhline(truth["train"], c=colors["fit"], ls=":", label="true density, training set")
    ax.axhline(truth["val"], c=colors["val"], ls=":", label="true density, validation set")
    best = route["restarts"][0]["best_iteration"]
    ax.axvline(best, c=colors["grey"], lw=1, label=f"kept iterate {best}")
    top = max(max(h["objective"]), truth["train"], truth["val"])
    below = next(s for s, v in zip(h["steps"], h["val_ll"], strict=True) if v >= top - 0.8)
    name = candidate_name(route["tau"], route["hidden"])
    ax.set(ylim=(top - 0.8, top + 0.05), xlabel="L-BFGS iteration",
           ylabel="mean log-likelihood (nats)", title=f"training ({name})")
    ax.text(0.02, 0.03, f"iterations < {below}: below the axis", transform=ax.transAxes)
    ax.legend(loc="center right")
    ax, g = axes[1], model["gradient"]
    x = np.arange(len(g))
    column = lambda key: [r[key] for r in g]
    ax.plot(x, column("rel_err_train"), "o-", c=colors["fit"], label="fixed training sample")
    ax.errorbar(x, column("rel_err_fresh"), yerr=column("rel_err_fresh_sd"), fmt="s--",
                c=colors["kde"], capsize=3, label="fresh samples (mean ± sd)")
    ax.set(yscale="log", xticks=x, xticklabels=[str(i) for i in column("iteration")],
           xlabel="L-BFGS iteration (last: kept)", ylabel="‖F̂ − ∇A‖ / ‖∇A‖",
           title="the IS gradient against quadrature")
    ax.legend(loc="upper right")


def draw_density(axes, maps, colors):
    """Problem 1.7: the true, KDE and EBM log-densities on one colour scale cut below at
    vmin; the fourth axes holds the colour bar."""
    vmin, half = maps["true"].max() - 12, (maps["axis"][1] - maps["axis"][0]) / 2
    extent = (maps["axis"][0] - half, maps["axis"][-1] + half) * 2
    titles = ("true mixture", "KDE", "EBM (A by quadrature)")
    for ax, key, title in zip(axes, ("true", "kde", "ebm"), titles):
        im = ax.imshow(np.maximum(maps[key], vmin).reshape(maps["axis"].size, -1), cmap="viridis",
                       vmin=vmin, origin="lower", extent=extent, interpolation="bilinear")
        ax.set(title=title, xlabel="x₁")
    axes[0].set_ylabel("x₂"), axes[1].set_yticks([]), axes[2].set_yticks([])
    axes[0].figure.colorbar(im, cax=axes[3], label=f"log p(x), cut at {vmin:.1f}")


def draw_selection(axes, route, colors):
    """The (tau, H) selection: each candidate's best validation LL on its budget, with A from the
    held-out proposal sample (circles) and by quadrature (dashes); widths side by side."""
    from matplotlib.lines import Line2D
    ax, rows = axes[0], route["candidates"]
    widths, taus = sorted({r["hidden"] for r in rows}), sorted({r["tau"] for r in rows})
    shade = dict(zip(widths, (colors["kde"], colors["fit"], colors["ebm"], colors["other"])))
    last = max(r["iterations"] for r in rows)
    for r in rows:
        x = taus.index(r["tau"]) + 0.18 * (widths.index(r["hidden"]) - (len(widths) - 1) / 2)
        full = r["iterations"] >= last or r["converged"]
        colour = shade[r["hidden"]]
        ax.plot(x, r["val_ll"], "o", c=colour, mfc=colour if full else "white", ms=5)
        ax.plot(x, r["val_ll_grid"], "_", c=colour, ms=9, mew=1.5)
        if (r["tau"], r["hidden"]) == (route["tau"], route["hidden"]):
            ax.plot(x, r["val_ll"], "*", ms=14, mfc="none", c=colors["true"])
    handles = [Line2D([], [], ls="", marker="o", c=shade[h], label=f"H = {h}") for h in widths]
    handles += [Line2D([], [], ls="", marker="o", c="k", mfc="white", label="cut early"),
                Line2D([], [], ls="", marker="_", c="k", ms=9, mew=1.5, label="A by quadrature"),
                Line2D([], [], ls="", marker="*", c="k", mfc="none", ms=10, label="chosen")]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5))
    ax.set(xticks=range(len(taus)), xticklabels=[f"{t:g}" for t in taus],
           xlabel="confinement scale τ", ylabel="best validation LL (nats)",
           title="EBM selection (markers: A by importance sampling)")


def draw_samples(axes, train, mala_x, exact_x, samples, colors):
    """Beyond the homework: samples from the learned EBM over the training data; the chains'
    share of each mode against the model's mass; their radius against exact draws."""
    ax = axes[0]
    ax.scatter(*train.T, s=2, c=colors["grey"], alpha=0.6, label="data", rasterized=True)
    ax.scatter(*mala_x.T, s=2, c=colors["ebm"], alpha=0.4, label="MALA", rasterized=True)
    ax.set(title="samples from the EBM", xlabel="x₁", ylabel="x₂", aspect="equal")
    ax.legend(loc="center", markerscale=4, handletextpad=0.1)
    ax, k = axes[1], np.arange(len(samples["masses"]))
    expected = np.array(samples["masses"]) * samples["chains"]
    ax.bar(k, expected, color=colors["grey"], alpha=0.6, label="model")
    ax.plot(k, samples["counts"], "o", c=colors["ebm"], label="MALA")
    ax.set(xlabel="mode k (sector at angle 2πk/K)", ylabel="chains",
           title=f"modes: χ² p = {samples['p_modes']:.2f}", ylim=(0, 1.5 * max(samples["counts"])))
    ax.legend(loc="upper right")
    ax, r_exact = axes[2], np.linalg.norm(exact_x, axis=1)
    bins = np.linspace(0, r_exact.max(), 40)
    ax.hist(r_exact, bins, density=True, color=colors["grey"], alpha=0.6, label="exact draws")
    ax.hist(np.linalg.norm(mala_x, axis=1), bins, density=True, histtype="step",
            color=colors["ebm"], lw=1.5, label="MALA")
    ax.set(xlabel="‖x‖", ylabel="density", title=f"radius: KS p = {samples['p_radius']:.2f}")
    ax.legend(loc="upper left")
