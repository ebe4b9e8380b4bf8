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
smooth objective L_hat = mean E - A_hat, maximised here by full-batch L-BFGS, with gradients
from autograd. The proposals differ only in the sample:

    the homework's q        draws from the true mixture (an oracle: it knows the answer);
    a broad Gaussian        fitted to the training data (knows nothing of the ring);
    quadrature              the midpoints of a grid with q uniform on the box: A_hat is then
                            the midpoint rule, exact to round-off once the box holds the mass;
    contrastive divergence  draws from p_theta itself (MCMC chains): log q = E_theta up to a
                            constant, equal weights, and F_hat is the plain average over the chains.

The energy: E_theta(x) = w2^T softplus(W1 x + b1) + b2 - ||x||^2 / (2 tau^2).
A one-hidden-layer net alone can grow linearly along some direction, and then exp(E) has an
infinite integral, while an importance-sampling estimate from a light-tailed q stays finite and
hides that. The net is Lipschitz, so the fixed quadratic term dominates far out and exp(E_theta)
is integrable for every theta. Its scale tau and the width H are chosen on validation data.
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
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Softplus(), nn.Linear(hidden, 1))
        if generator is not None:
            with torch.no_grad():
                for layer in (m for m in self.net if isinstance(m, nn.Linear)):
                    bound = 1.0 / math.sqrt(layer.in_features)
                    for p in layer.parameters():
                        p.uniform_(-bound, bound, generator=generator)

    def forward(self, x):
        return self.net(x).squeeze(-1) - (x * x).sum(-1) / (2.0 * self.tau**2)


def save_energy(energy, path):
    torch.save({"spec": energy.spec, "state_dict": energy.state_dict()}, path)


def load_energy(path):
    """A trained energy saved by save_energy: a callable from (n, 2) tensors to E_theta(x), (n,).

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
    copy = Energy(**energy.spec).to(dtype_of(energy))
    copy.load_state_dict(state)
    return copy


# ---- proposal samples: one estimator family for every expectation under p_theta -----------------

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
    log q = -log(box area). Then A_hat = log(area * mean_g exp E(g)) = log(step^2 sum_g exp E(g)),
    the midpoint rule, and F_hat weighs each cell by its mass."""
    g = grid_points(half_width, step)
    area = (step * round(2 * half_width / step)) ** 2
    return Sample(g.to(dtype), torch.full((g.shape[0],), -math.log(area), dtype=dtype))


def equal_weights(energy, x):
    """Draws x from p_theta itself (MCMC chains): log q = E_theta(x) up to a constant, so every
    importance weight is equal and F_hat is the plain average: contrastive divergence's
    negative phase."""
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
    L_hat = mean E(x_i) - A_hat(sample). The sample is the proposal: the homework's, a fitted
    Gaussian, or the quadrature grid (the exact gradient)."""
    n, x = x_train.shape[0], torch.cat([x_train, sample.x])  # one pass through the network

    def value_and_grad(energy):
        e = energy(x)
        value = e[:n].double().mean() - torch.logsumexp((e[n:] - sample.log_q).double(), 0) + math.log(len(sample))
        grads = torch.autograd.grad(value, list(energy.parameters()))
        return float(value.detach()), grads

    return value_and_grad


def score(x, sample):
    """energy -> mean E(x) - A_hat(sample): a log-likelihood with A from a proposal sample."""
    return lambda energy: float(energies(energy, x).mean()) - log_mean_exp_se(sample_log_weights(energy, sample))[0]


# ---- quadrature that certifies its box ------------------------------------------------------------

def log_partition_grid(energy, half_width, step):
    """A by the midpoint rule on [-half_width, half_width]^2 (no certificate)."""
    return log_mean_exp_se(sample_log_weights(energy, grid_sample(half_width, step, dtype_of(energy))))[0]


def certified_log_partition(energy, step, half_width=20.0, tol=1e-6, grow=1.5, coarse=4, largest=400.0):
    """A by the midpoint rule on a box [-h, h]^2 that holds all but `tol` of the model's mass.
    The mass outside the box is measured on a box `grow` times as wide, on cells `coarse` times
    as large (a tail mass needs no fine cells); while it exceeds tol the box grows. Returns
    dict(A, half_width, mass_outside)."""
    h, dtype, wide = half_width, dtype_of(energy), coarse * step
    while True:
        big = wide * round(grow * h / wide)  # a whole number of cells, aligned with the box's
        g = grid_points(big, wide)
        e = energies(energy, g.to(dtype))
        inside = (g.abs() < h).all(1)
        mass_outside = max(0.0, -math.expm1(float(torch.logsumexp(e[inside], 0) - torch.logsumexp(e, 0))))
        if mass_outside <= tol or big > largest:
            return dict(A=log_partition_grid(energy, h, step), half_width=h, mass_outside=mass_outside)
        h = big


# ---- training: full-batch L-BFGS, the best validation iterate kept -------------------------------

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


def has_converged(iteration, best_iteration, patience):
    """The stopping rule: no validation gain for as many iterations as it took to reach the best,
    and at least `patience`. A plateau ends a run only once it is as long as the run before it,
    so a model still climbing slowly after a pause is not cut off, and the cost at most doubles."""
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
            run.best_val, run.best_iteration, run.best_state = val, run.iterations, state_of(energy)

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


def best_energy(run):
    """The run's best-scoring weights, in a copy of its energy."""
    return with_state(run.energy, run.best_state)


def successive_halving(runs, train_to, rungs, keep, pmap=map):
    """Model selection on a budget: every run in `runs` ({name: Run}) is trained to rungs[0]
    iterations, the best 1/keep by best validation score go on to rungs[1], and so on.
    train_to(until) returns a function Run -> Run; pmap maps it (in parallel, if it can: the
    runs are independent and deterministic). Returns the runs and every name ranked: by the last
    round reached, then by score (the first is the choice)."""
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
    samples = (training, validation) proposal samples; search = dict(taus, widths, rungs, keep,
    restarts, max_iter); settings: keyword arguments of train; grid = (step, half_width) of the
    quadrature. Returns (numbers, models): models holds the runs, the kept energies, their test
    log-densities (restarts, n) and the CPU seconds of the route."""
    objective_, score_ = objective(x["train"], samples[0]), score(x["val"], samples[1])
    train_to = lambda until: lambda run: train(run, objective_, score_, until, **settings)  # noqa: E731
    runs = {(tau, h): Run(init(h, tau, 0)) for h in search["widths"] for tau in search["taus"]}
    runs, ranking = successive_halving(runs, train_to, search["rungs"], search["keep"], pmap)
    tau, h = ranking[0]
    first = copy.deepcopy(runs[(tau, h)])  # continued: the candidate stays as the selection left it
    fits = pmap(train_to(search["max_iter"]), [first] + [Run(init(h, tau, r)) for r in range(1, search["restarts"])])
    models = pmap(lambda run: fitted_density(run, x["test"], *grid), fits)
    # candidates are only ranked, so cells twice as wide do
    certs = pmap(lambda run: certified_log_partition(best_energy(run), 2 * grid[0], grid[1]), runs.values())
    seconds = sum(r.seconds for r in runs.values()) - runs[(tau, h)].seconds + sum(r.seconds for r in fits)
    numbers = dict(tau=tau, hidden=h, candidates=[dict(tau=t, hidden=w, rank=ranking.index((t, w)), **_row(run, cert),
                                                       val_ll_grid=float(energies(best_energy(run), x["val"]).mean()) - cert["A"])
                                                  for ((t, w), run), cert in zip(runs.items(), certs)],
                   restarts=[dict(restart=r, **_row(run, cert), test_ll=float(ll.mean()), test_ll_se=float(ll.std(ddof=1) / math.sqrt(ll.size)),
                                  ess_train=log_mean_exp_se(sample_log_weights(e, samples[0]))[2])
                             for r, (run, (e, cert, ll)) in enumerate(zip(fits, models))])
    return numbers, dict(runs=fits, energies=[m[0] for m in models], test=np.stack([m[2] for m in models]), seconds=seconds)


def _row(run, cert):
    return dict(iterations=run.iterations, best_iteration=run.best_iteration, converged=run.converged,
                val_ll=run.best_val, A=cert["A"], half_width=cert["half_width"], mass_outside=cert["mass_outside"])


def fitted_density(run, x_test, step, half_width):
    """The run's kept model as a fitted density: its energy, the certified quadrature A and the
    per-point test log-densities log p_theta(x_test) = E(x_test) - A, shape (n,)."""
    energy = best_energy(run)
    cert = certified_log_partition(energy, step, half_width)
    return energy, cert, (energies(energy, x_test) - cert["A"]).numpy()


# ---- problem 1.7: A three ways, and the gradient of problem 1.6 measured ------------------------

def partition_estimates(energy, train_sample, fresh_sample, step, half_width):
    """A from the training proposal sample and from a fresh one, each with its delta-method
    standard error and ESS; Jensen's lower bound E_q[E - log q] from the fresh sample; A by
    certified quadrature, and how far enlarging its box by half or halving its step moves it."""
    lw_train, lw_fresh = sample_log_weights(energy, train_sample), sample_log_weights(energy, fresh_sample)
    (a_train, se_train, ess_train), (a_fresh, se_fresh, ess_fresh) = map(log_mean_exp_se, (lw_train, lw_fresh))
    jensen, jensen_se = jensen_bound_se(lw_fresh)
    grid = certified_log_partition(energy, step, half_width)
    h = grid["half_width"]
    moved = max(abs(log_partition_grid(energy, *box) - grid["A"]) for box in ((1.5 * h, step), (h, step / 2)))
    return dict(A_train_is=a_train, A_train_se=se_train, ess_train=ess_train, A_fresh_is=a_fresh,
                A_fresh_se=se_fresh, ess_fresh=ess_fresh, jensen_bound=jensen, jensen_se=jensen_se,
                A_grid=grid["A"], grid_half_width=h, mass_outside=grid["mass_outside"], grid_delta=moved)


def relative_error_and_cosine(estimate, reference):
    """||estimate - reference|| / ||reference|| and the cosine of their angle."""
    norms = estimate.norm() * reference.norm()
    return float((estimate - reference).norm() / reference.norm()), float(estimate @ reference / norms)


def gradient_errors(energy, states, train_sample, probes, exact):
    """At each stored state {iteration: weights}: the IS estimate F_hat of grad A from the
    fixed training sample and from fresh samples (probes) of the same size, against grad A from
    the sample `exact` (the quadrature grid): relative error ||F_hat - grad A|| / ||grad A|| and
    cosine similarity."""
    flat = lambda grads: torch.cat([g.reshape(-1).double() for g in grads])  # noqa: E731
    rows = []
    for it, state in states.items():
        e = with_state(energy, state)
        ref = flat(grad_log_partition(e, exact))
        compare = lambda s: relative_error_and_cosine(flat(grad_log_partition(e, s)), ref)  # noqa: E731
        rel, cos = compare(train_sample)
        fresh = np.array([compare(s) for s in probes])
        rows.append(dict(iteration=it, rel_err_train=rel, cos_train=cos, rel_err_fresh=float(fresh[:, 0].mean()),
                         rel_err_fresh_sd=float(fresh[:, 0].std(ddof=1)), cos_fresh=float(fresh[:, 1].mean()),
                         grad_norm=float(ref.norm())))
    return rows


# ---- sampling from the learned model -------------------------------------------------------------

def energy_and_grad(energy, x):
    """E(x) and grad_x E(x) for a batch of points, shape (n,) and (n, d), by autograd."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        e = energy(x)
        (g,) = torch.autograd.grad(e.sum(), x)
    return e.detach(), g


def mala(energy, x0, steps, generator, adapt=0, step_size=0.5, target=0.574, proposal=None, jump=0.0):
    """Metropolis-adjusted Langevin chains for p(x) proportional to exp(E(x)), one per row of x0,
    with an optional independence move that lets a chain cross the valleys between modes.

    Each step, a chain proposes with probability `jump` a draw y ~ N(mean, cov) = proposal (a
    broad Gaussian, e.g. fitted to the training data), else the Langevin move
    y = x + (h/2) grad E(x) + sqrt(h) xi, xi ~ N(0, I). Either is accepted with the
    Metropolis-Hastings probability min(1, exp(E(y) - E(x) + log k(x | y) - log k(y | x))), so
    each kernel, and their state-independent mixture, leaves p invariant. For the first `adapt`
    steps the step size h is tuned towards the Langevin acceptance rate `target` (0.574 is
    optimal; Roberts & Rosenthal 1998), then frozen: the last `steps` steps are a
    time-homogeneous Markov chain. Returns (points, Langevin and jump acceptance rates there, h)."""
    mean, cov = (torch.as_tensor(a, dtype=x0.dtype) for a in (proposal or (np.zeros(2), np.eye(2))))
    root, precision = torch.linalg.cholesky(cov), torch.linalg.inv(cov)
    log_q = lambda z: -0.5 * (((z - mean) @ precision) * (z - mean)).sum(1)  # noqa: E731
    log_k = lambda to, frm, g_frm, h: -((to - frm - 0.5 * h * g_frm) ** 2).sum(1) / (2 * h)  # noqa: E731
    x, (e, g), log_h = x0.clone(), energy_and_grad(energy, x0), math.log(step_size)
    counts = np.zeros(4)  # Langevin accepted, proposed; jumps accepted, proposed (frozen phase)
    for t in range(adapt + steps):
        h = math.exp(log_h)
        is_jump = torch.rand(x.shape[0], generator=generator, dtype=x.dtype) < jump
        xi = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        y = torch.where(is_jump[:, None], mean + xi @ root.T, x + 0.5 * h * g + math.sqrt(h) * xi)
        e_y, g_y = energy_and_grad(energy, y)
        log_alpha = e_y - e + torch.where(is_jump, log_q(x) - log_q(y), log_k(x, y, g_y, h) - log_k(y, x, g, h))
        accept = torch.log(torch.rand(x.shape[0], generator=generator, dtype=x.dtype)) < log_alpha
        x, e, g = torch.where(accept[:, None], y, x), torch.where(accept, e_y, e), torch.where(accept[:, None], g_y, g)
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
    d = float(np.abs(np.searchsorted(a, grid, side="right") / a.size
                     - np.searchsorted(b, grid, side="right") / b.size).max())
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
    same point (a start that holds none of the answer), against the model: chain counts per mode
    against the mode masses by quadrature (chi-square), and the radius and the angle against
    exact draws from the grid (Kolmogorov-Smirnov). generators = (for MALA, for the exact
    draws). Returns (numbers, MALA points, exact draws) as float64 numpy."""
    x, rate, jump_rate, h = mala(energy, start, generator=generators[0], **mala_settings)
    exact = sample_grid(energy, grid[1], grid[0], len(start), generators[1]).numpy()
    x, masses = x.double().numpy(), mode_masses(energy, K, grid[1], grid[0])
    radius = lambda a: np.linalg.norm(a, axis=1)  # noqa: E731
    angle = lambda a: np.arctan2(a[:, 1], a[:, 0])  # noqa: E731
    (ks_r, p_r), (ks_a, p_a) = ks_two_sample(radius(x), radius(exact)), ks_two_sample(angle(x), angle(exact))
    (chi2, p_modes), (chi2_start, p_start) = chi_square_modes(x, masses), chi_square_modes(start.double().numpy(), masses)
    return dict(chains=len(start), acceptance=rate, jump_acceptance=jump_rate, step_size=h, ks_radius=ks_r,
                p_radius=p_r, ks_angle=ks_a, p_angle=p_a, chi2_modes=chi2, p_modes=p_modes, chi2_start=chi2_start,
                p_start=p_start, masses=masses.tolist(),
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
    res["samples"], mala_x, exact_x = sample_checks(energy, samples["start"], K, grid, mala_settings, generators)
    res["history"] = dict(steps=run.steps, objective=run.objective, val_ll=run.val_ll)
    return res, dict(mala=mala_x, exact=exact_x)
