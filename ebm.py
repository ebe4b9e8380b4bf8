"""A shallow-network energy-based model fitted by maximum likelihood (problems 1.4-1.7).

p_theta(x) = exp(E_theta(x) - A(theta)), A = log int exp(E_theta); the mean log-likelihood is
L = mean_i E(x_i) - A, with grad L = mean_i grad E(x_i) - E_{p_theta} grad E. Problem 1.6 takes
A from M draws x_m of a proposal q, log-weights l_m = E(x_m) - log q(x_m):

    A_hat = log((1/M) sum_m exp(l_m)),    F_hat = N_hat / D_hat = sum_m softmax(l)_m grad E(x_m).

q does not depend on theta, so grad A_hat = F_hat: autograd of A_hat *is* the self-normalised
estimate, and one fixed sample gives one smooth objective L_hat = mean E - A_hat for L-BFGS.
That is the first part of this file; selection, quadrature, PCD, MALA and diagnostics follow.
E = w2^T softplus(W1 x + b1) + b2 - ||x||^2 / (2 tau^2): the network alone may grow linearly
along a ray (no finite integral, which an IS estimate would hide); the quadratic term wins.
"""
import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import stats
from torch import nn

# ================================ Problem 1.6: the homework ==================================


class Energy(nn.Module):
    """E(x) = w2^T softplus(W1 x + b1) + b2 - ||x||^2 / (2 tau^2), x (n, d) -> (n,); a generator
    draws every weight as nn.Linear does, U(+-1/sqrt(fan_in)); `spec` is saved with them."""

    def __init__(self, hidden, tau, generator=None, dim=2):
        super().__init__()
        self.spec = dict(hidden=int(hidden), tau=float(tau), dim=int(dim))
        self.tau = float(tau)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Softplus(), nn.Linear(hidden, 1))
        self.evaluations = 0  # points through the network: a cost no machine changes
        if generator is not None:
            with torch.no_grad():
                for layer in (self.net[0], self.net[2]):
                    bound = 1.0 / math.sqrt(layer.in_features)
                    for p in layer.parameters():
                        p.uniform_(-bound, bound, generator=generator)

    def forward(self, x):
        self.evaluations += x.shape[0]
        return self.net(x).squeeze(-1) - (x * x).sum(-1) / (2.0 * self.tau**2)  # (n,)


@dataclass
class Sample:
    """Proposal draws x (M, d) with their log-densities log q(x) (M,), kept together."""
    x: torch.Tensor
    log_q: torch.Tensor


def log_partition(energy, sample):
    """A_hat = log (1/M) sum_m exp(E(x_m) - log q(x_m)), in float64 log space; differentiable."""
    log_w = energy(sample.x).double() - sample.log_q.double()  # (M,)
    return torch.logsumexp(log_w, 0) - math.log(sample.x.shape[0])


def grad_log_partition(energy, sample):
    """F_hat = sum_m softmax(l)_m grad E(x_m) = grad A_hat (problem 1.6), per parameter."""
    return list(torch.autograd.grad(log_partition(energy, sample), list(energy.parameters())))


def log_likelihood(energy, x, sample):
    """L_hat = (1/n) sum_i E(x_i) - A_hat: the mean log-likelihood with A from the sample."""
    return energy(x).double().mean() - log_partition(energy, sample)


@dataclass
class Run:
    """A model under training; torch.optim.LBFGS keeps its state between calls of train."""
    energy: Energy
    optimizer: torch.optim.LBFGS
    iterations: int = 0
    steps: list = field(default_factory=list)  # iterations at which the model was scored
    objective: list = field(default_factory=list)  # L_hat on the training set there
    val_ll: list = field(default_factory=list)  # the validation score there
    best_val: float = -math.inf
    best_iteration: int = 0
    best_state: dict = None  # the weights of the best validation score, kept like a checkpoint
    snapshots: dict = field(default_factory=dict)  # iteration -> weights, for the diagnostics
    converged: bool = False
    failed: str = ""  # why training stopped on a non-finite number; such a run is never chosen
    seconds: float = 0.0


def new_run(energy, eval_every=20, memory=20):
    """Each optimizer.step: eval_every L-BFGS iterations, strong-Wolfe line searches (max_eval
    high enough never to cut a step short)."""
    optimizer = torch.optim.LBFGS(energy.parameters(), max_iter=eval_every,
                                  max_eval=10 * eval_every, history_size=memory,
                                  line_search_fn="strong_wolfe")
    return Run(energy, optimizer)


def train(run, x_train, proposal, score, until, patience=300, snapshot_at=()):
    """Maximise L_hat = mean E(x_train) - A_hat(proposal) by L-BFGS up to `until` iterations,
    scored by score(energy) (validation LL) after every step, keeping the best weights; stop
    once has_converged or L-BFGS stops itself (a step of fewer iterations than asked)."""
    energy, optimizer, start = run.energy, run.optimizer, time.perf_counter()

    def closure():
        optimizer.zero_grad()
        loss = -log_likelihood(energy, x_train, proposal)
        loss.backward()
        return loss
    if not run.steps:
        record(run, score, x_train, proposal, snapshot_at, after=-1)
    while run.iterations < until and not run.converged:
        before = run.iterations
        optimizer.step(closure)
        run.iterations = optimizer.state[optimizer.param_groups[0]["params"][0]]["n_iter"]
        record(run, score, x_train, proposal, snapshot_at, after=before)
        stopped = run.iterations - before < optimizer.param_groups[0]["max_iter"]  # tolerances
        run.converged = stopped or has_converged(run.iterations, run.best_iteration, patience)
    run.seconds += time.perf_counter() - start
    return run


@torch.no_grad()
def record(run, score, x_train, proposal, snapshot_at, after):
    """Score the model now, keep its weights if the score is the best so far, and snapshot them
    if a checkpoint of snapshot_at lies in (after, now]."""
    energy, it = run.energy, run.iterations
    objective, val = float(log_likelihood(energy, x_train, proposal)), score(energy)
    if not (math.isfinite(objective) and math.isfinite(val)):  # diverged: stop, keep the best
        run.failed = f"diverged at iteration {it} (objective {objective}, validation {val})"
        run.converged = True
        return
    run.steps.append(it), run.objective.append(objective), run.val_ll.append(val)
    if val > run.best_val:
        run.best_val, run.best_iteration, run.best_state = val, it, copy.deepcopy(
            energy.state_dict())
    for c in snapshot_at:
        if after < c <= it:
            run.snapshots[c] = copy.deepcopy(energy.state_dict())


def has_converged(iteration, best_iteration, patience):
    """No validation gain for as many iterations as it took to reach the best, and at least
    `patience`: a plateau ends a run only once it is as long as the climb before it."""
    return iteration - best_iteration >= max(patience, best_iteration)


def best_energy(run):
    """The run's best-scoring weights, in a copy of its energy."""
    return with_state(run.energy, run.best_state)


# ===================================== Beyond the homework ====================================
# ---- the energy saved and copied ---------------------------------------------------------------

def save_energy(energy, path):
    torch.save({"spec": energy.spec, "state_dict": energy.state_dict()}, path)


def load_energy(path):
    """A trained energy saved by save_energy, e.g. E = load_energy("plots/ebm_energy.pt")."""
    blob = torch.load(path, weights_only=True)
    energy = Energy(**blob["spec"])
    energy.load_state_dict(blob["state_dict"])
    return energy.eval()


def with_state(energy, state):
    """A copy of energy's architecture holding the weights `state`."""
    clone = Energy(**energy.spec).to(dtype_of(energy))
    clone.load_state_dict(state)
    return clone


def dtype_of(energy):
    return next(energy.parameters()).dtype


def state_as_arrays(energy):
    """The weights as numpy arrays with the spec: what a worker process sends back (numbers,
    not tensors, which torch pickles through shared memory)."""
    return energy.spec, {k: v.detach().numpy().copy() for k, v in energy.state_dict().items()}


def energy_from_arrays(spec, arrays):
    energy = Energy(**spec)
    energy.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})
    return energy.eval()


# ---- every expectation under p_theta as one estimator of a proposal sample -------------------

@torch.no_grad()
def energies(energy, x, chunk=2**16):
    """E_theta(x) without a graph, in chunks of rows, as float64, shape (M,)."""
    return torch.cat([energy(c).double() for c in x.split(chunk)])


def sample_log_weights(energy, sample):
    """l_m = E(x_m) - log q(x_m) without a graph, for samples of any size, float64 (M,)."""
    return energies(energy, sample.x) - sample.log_q.double()


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


def score(x, sample):
    """energy -> mean E(x) - A_hat(sample), without a graph: the validation log-likelihood."""
    def mean_log_likelihood(energy):
        return float(energies(energy, x).mean()) - log_mean_exp_se(
            sample_log_weights(energy, sample))[0]
    return mean_log_likelihood


def grid_points(*, half_width, step):
    """Midpoints of the cells of side `step` tiling [-half_width, half_width]^2, (G, 2) float64."""
    n = int(round(2 * half_width / step))
    axis = -half_width + step * (torch.arange(n, dtype=torch.float64) + 0.5)
    gx, gy = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)


def grid_sample(*, half_width, step, dtype=torch.float32):
    """Quadrature as importance sampling: the cell midpoints, q uniform on the box
    (log q = -log area). A_hat is then the midpoint rule, log(step^2 sum_g exp E(g))."""
    g = grid_points(half_width=half_width, step=step)
    area = (step * round(2 * half_width / step)) ** 2
    return Sample(g.to(dtype), torch.full((g.shape[0],), -math.log(area), dtype=dtype))


def equal_weights(energy, x):
    """Draws x from p_theta itself (MCMC chains): log q = E_theta(x) up to a constant, so every
    weight is equal and F_hat is the plain average, contrastive divergence's negative phase."""
    with torch.no_grad():
        return Sample(x, energy(x))


def log_partition_grid(energy, *, half_width, step):
    """A by the midpoint rule on [-half_width, half_width]^2."""
    cells = grid_sample(half_width=half_width, step=step, dtype=dtype_of(energy))
    return log_mean_exp_se(sample_log_weights(energy, cells))[0]


def quadrature_log_partition(energy, *, half_width, step, tol=1e-6, grow=1.5, coarse=4,
                             largest=400.0):
    """A by the midpoint rule on a box [-h, h]^2 grown until the model's mass measured outside
    it is below tol. That mass is measured on a box `grow` times as wide, on cells `coarse`
    times as large (a tail needs no fine cells): a measurement, not a bound. Returns
    dict(A, half_width, mass_outside)."""
    h, wide = half_width, coarse * step
    while True:
        big = wide * round(grow * h / wide)  # a whole number of cells, aligned with the box's
        g = grid_points(half_width=big, step=wide)
        e = energies(energy, g.to(dtype_of(energy)))
        inside = torch.logsumexp(e[(g.abs() < h).all(1)], 0)
        mass_outside = max(0.0, -math.expm1(float(inside - torch.logsumexp(e, 0))))
        if mass_outside <= tol or big > largest:
            a = log_partition_grid(energy, half_width=h, step=step)
            return dict(A=a, half_width=h, mass_outside=mass_outside)
        h = big


# ---- model selection: (tau, H) by successive halving on validation data ----------------------

def successive_halving(runs, train_to, rungs, keep):
    """Every run of `runs` ({name: Run}) is trained to rungs[0] iterations, the best 1/keep by
    best validation score go on to rungs[1], and so on; train_to(run, until) trains one. Returns
    every name ranked: by the last round reached, then by score (the first is the choice)."""
    alive, cut = list(runs), []
    for r, until in enumerate(rungs):
        for name in alive:
            train_to(runs[name], until)
        alive = [name for name in alive if not runs[name].failed]  # a diverged run is out
        alive.sort(key=lambda name: -runs[name].best_val)  # stable: ties keep the grid's order
        if r < len(rungs) - 1:
            survivors = math.ceil(len(alive) / keep)
            alive, cut = alive[:survivors], alive[survivors:] + cut
    return alive + cut + [name for name in runs if runs[name].failed]


def fit_route(init, x, samples, *, taus, widths, rungs, keep, restarts, max_iter, eval_every,
              memory, patience, snapshot_at, half_width, step, fresh=None):
    """One importance-sampling route of problem 1.6: (tau, H) chosen by successive halving,
    then `restarts` initialisations of the choice trained until has_converged (or max_iter),
    each a fitted density with A by quadrature. init(H, tau, r) is the r-th initialisation (the
    candidates are r = 0, so the first restart continues the chosen candidate's run);
    x = dict(train, val, test); samples = (training, validation) proposal samples; every
    restart's A is also estimated by importance sampling (problem 1.7), from the training sample
    and from `fresh`, an independent proposal sample, if given.
    Returns (numbers, models: runs, kept energies, test log-densities (restarts, n) with A by
    quadrature, and by_is: {sample: (test log-densities (restarts, n), A's s.e. per restart)},
    seconds)."""
    validation = score(x["val"], samples[1])
    train_to = lambda run, until: train(run, x["train"], samples[0], validation, until,
                                        patience, snapshot_at)
    make = lambda h, tau, r: new_run(init(h, tau, r), eval_every, memory)
    runs = {(tau, h): make(h, tau, 0) for h in widths for tau in taus}
    ranking = successive_halving(runs, train_to, rungs, keep)
    candidates = [dict(tau=t, hidden=w, rank=ranking.index((t, w)), failed=run.failed,
                       **candidate_row(run, x["val"], half_width=half_width, step=2 * step))
                  for (t, w), run in runs.items()]  # ranked only: cells twice as wide do
    if runs[ranking[0]].failed:
        raise FloatingPointError("every (tau, H) candidate diverged in training; try other "
                                 "--ebm-taus or --ebm-widths")
    tau, h = ranking[0]
    tried = [runs[(tau, h)]] + [make(h, tau, r) for r in range(1, restarts)]
    for run in tried:
        train_to(run, max_iter)
    fits = [run for run in tried if not run.failed]  # a diverged restart is reported, not used
    if not fits:
        raise FloatingPointError(f"every restart of the chosen tau = {tau:g}, H = {h} diverged")
    models = [fitted_density(run, x["test"], half_width=half_width, step=step) for run in fits]
    by = dict(train=samples[0]) if fresh is None else dict(train=samples[0], fresh=fresh)
    rows, by_is = restart_rows(fits, tried, models, x["test"], by)
    seconds = sum(r.seconds for r in runs.values()) + sum(r.seconds for r in tried[1:])
    failed = [dict(restart=r, failed=run.failed) for r, run in enumerate(tried) if run.failed]
    return dict(tau=tau, hidden=h, candidates=candidates, restarts=rows, by_is=is_summary(rows),
                failed_restarts=failed), \
        dict(runs=fits, energies=[m[0] for m in models], test=np.stack([m[2] for m in models]),
             by_is=by_is, seconds=seconds)


def restart_rows(fits, tried, models, x_test, by):
    """Each trained restart's numbers, A by quadrature and by importance sampling from each
    sample of `by`; by_is: {sample: (test log-densities (restarts, n), A's s.e. per restart)}."""
    is_ = [importance_sampled(energy, x_test, by, cert["A"]) for energy, cert, _ in models]
    rows = [dict(restart=tried.index(run), **summary(run, cert), test_ll=float(ll.mean()),
                 test_ll_se=float(ll.std(ddof=1) / math.sqrt(ll.size)),
                 ess_train=numbers["train"]["ess"], by_is=numbers)
            for run, (energy, cert, ll), (numbers, _) in zip(fits, models, is_)]
    return rows, {name: (np.stack([points[name] for _, points in is_]),
                         [numbers[name]["A_se"] for numbers, _ in is_]) for name in by}


def summary(run, cert):
    return dict(iterations=run.iterations, best_iteration=run.best_iteration,
                converged=run.converged, evaluations=run.energy.evaluations, val_ll=run.best_val,
                A=cert["A"],
                half_width=cert["half_width"], mass_outside=cert["mass_outside"])


def candidate_row(run, x_val, *, half_width, step):
    """A candidate's numbers, with its validation LL also from A by quadrature (None for a run
    that diverged before its first score)."""
    if run.best_state is None:
        return dict(iterations=run.iterations, converged=run.converged, val_ll=None,
                    val_ll_grid=None, A=None)
    energy = best_energy(run)
    cert = quadrature_log_partition(energy, half_width=half_width, step=step)
    return dict(**summary(run, cert), val_ll_grid=float(energies(energy, x_val).mean()) - cert["A"])


def fitted_density(run, x_test, *, half_width, step):
    """The run's kept model as a fitted density: its energy, A by quadrature and the per-point
    test log-densities log p_theta(x_test) = E(x_test) - A, shape (n,)."""
    energy = best_energy(run)
    cert = quadrature_log_partition(energy, half_width=half_width, step=step)
    return energy, cert, (energies(energy, x_test) - cert["A"]).numpy()


def importance_sampled(energy, x_test, samples, a_grid):
    """Problem 1.7 as asked, from each proposal sample of `samples` ({name: Sample}): A_hat with
    its standard error and ESS, the test log-densities E(x_test) - A_hat (n,), how far A_hat is
    from A by quadrature, and A - E_q[E - log q] = KL(q || p_theta), Jensen's gap, which is
    KL(p || p_theta) when q is the true density. Returns ({name: numbers}, {name: points})."""
    e_test, numbers, points = energies(energy, x_test), {}, {}
    for name, sample in samples.items():
        log_w = sample_log_weights(energy, sample)
        a, se, ess = log_mean_exp_se(log_w)
        jensen, jensen_se = jensen_bound_se(log_w)
        points[name] = (e_test - a).numpy()
        numbers[name] = dict(A=a, A_se=se, ess=ess, A_grid_minus=a_grid - a,
                             test_ll=float(points[name].mean()), kl_jensen=a_grid - jensen,
                             kl_jensen_se=jensen_se)
    return numbers, points


def spread(values):
    """Mean and sd over restarts (restart_sd: undefined for one), and the extremes."""
    v = np.asarray(values, dtype=float)
    return dict(mean=float(v.mean()), sd=restart_sd(v, over_restarts=True),
                minimum=float(v.min()), maximum=float(v.max()))


def is_summary(rows):
    """Every number of importance_sampled over the restarts, per sample: spread of each, and the
    distance of A by quadrature from A_hat in A_hat's standard errors, its least (signed) and its
    largest (in absolute value)."""
    out = {}
    for name, keys in rows[0]["by_is"].items():
        out[name] = {key: spread([r["by_is"][name][key] for r in rows]) for key in keys}
        gaps = [r["by_is"][name]["A_grid_minus"] / r["by_is"][name]["A_se"] for r in rows]
        out[name].update(min_gap_in_se=min(gaps), max_gap_in_se=max(map(abs, gaps)))
    return out


# ---- problem 1.7: the fitted densities compared, point by point and over restarts --------

COMPARISONS = {"ebm_is_minus_kde": ("ebm_is", "kde"), "truth_minus_ebm_is": ("truth", "ebm_is"),
               "ebm_minus_kde": ("ebm", "kde"), "truth_minus_ebm": ("truth", "ebm"),
               "fitted_minus_kde": ("ebm_fitted", "kde"), "ebm_minus_fitted": ("ebm", "ebm_fitted"),
               "truth_minus_kde": ("truth", "kde")}


def restart_sd(values, over_restarts):
    """The sd of values over restarts; of one restart NaN (undefined: null in results.json, n/a
    in the macros); of a density fitted once, without restarts, 0."""
    if len(values) > 1:
        return float(np.std(values, ddof=1))
    return math.nan if over_restarts else 0.0


def paired(a, b, shift_se=0.0):
    """Mean of log p_a - log p_b over the test points per restart (rows of (restarts, n), paired
    by initialisation) with its standard error; over restarts, mean, sd and a standard error that
    adds both noises. shift_se (per restart) is the s.e. of a shift common to a restart's points,
    an A by importance sampling: it adds to the points' s.e. `holds` is +1 (-1) if a beats b
    (loses) on every restart by two of its standard errors, or on average by two combined ones;
    else 0: no claim. With one restart the standard error is the points' alone."""
    d = np.atleast_2d(a - b)  # (restarts, n)
    means = d.mean(1)
    ses = np.hypot(d.std(1, ddof=1) / math.sqrt(d.shape[1]), shift_se)
    sd = restart_sd(means, np.ndim(a - b) == 2)
    spread = sd**2 / len(means) if len(means) > 1 else 0.0
    se, mean = math.sqrt(spread + float(ses.mean()) ** 2), float(means.mean())
    holds = next((s for s in (1, -1) if all(s * means > 2 * ses) or s * mean > 2 * se), 0)
    return dict(per_restart=means.tolist(), se_points=ses.tolist(), mean=mean, sd=sd, se=se,
                holds=holds, minimum=float(means.min()), maximum=float(means.max()))


def compare(log_densities, shift_se=None):
    """Each density's test LL (its mean over the points; over restarts, their mean and sd) and
    the paired differences of COMPARISONS; shift_se = {name: s.e. of its A per restart} for the
    densities whose A is an importance-sampling estimate."""
    shift_se = shift_se or {}
    lls = {}
    for name, ld in log_densities.items():
        rows = np.atleast_2d(ld)
        per = rows.mean(1)
        se_points = [row.std(ddof=1) / math.sqrt(row.size) for row in rows]
        lls[name] = dict(mean=float(per.mean()), sd=restart_sd(per, np.ndim(ld) == 2),
                         se_points=float(np.mean(se_points)), per_restart=per.tolist())
    pairs = {key: paired(log_densities[a], log_densities[b], shift_se.get(a, 0.0))
             for key, (a, b) in COMPARISONS.items()}
    return dict(test_ll=lls, **pairs)


# ---- problem 1.7: A three ways, and the gradient of problem 1.6 measured -----------------------

def quadrature_check(energy, *, half_width, step):
    """A by quadrature, and how far enlarging its box by half or halving its step moves it."""
    grid = quadrature_log_partition(energy, half_width=half_width, step=step)
    h, a = grid["half_width"], grid["A"]
    moved = max(abs(log_partition_grid(energy, half_width=hw, step=s) - a)
                for hw, s in ((1.5 * h, step), (h, step / 2)))
    return dict(A_grid=a, grid_half_width=h, grid_delta=moved, mass_outside=grid["mass_outside"])


def overfit(run, truth_ll):
    """At the kept iterate: the objective's lead over the validation LL, the true density's own
    lead of the training over the validation data (truth_ll = dict(train, val)), and what is
    left of the first, the overfit."""
    at = lambda key: float(np.interp(run.best_iteration, run.steps, getattr(run, key)))
    gap, own = at("objective") - at("val_ll"), truth_ll["train"] - truth_ll["val"]
    return dict(gap=gap, truth_gap=own, overfit=gap - own)


def relative_error_and_cosine(estimate, reference):
    """||estimate - reference|| / ||reference|| and the cosine of their angle."""
    cosine = estimate @ reference / (estimate.norm() * reference.norm())
    return float((estimate - reference).norm() / reference.norm()), float(cosine)


def gradient_errors(energy, states, train_sample, probes, exact):
    """At each stored state {iteration: weights}: F_hat from the fixed training sample and from
    fresh samples (probes) of the same size, against grad A from the sample `exact` (the
    quadrature grid): relative error and cosine similarity."""
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


def examine(run, energy, samples, truth_ll, *, K, half_width, step, mala_settings, generators):
    """Problem 1.6's checks on one trained model: its quadrature box, its overfit, the IS
    gradient against quadrature along training, samples by MALA. samples = dict(train, probes,
    start). Returns (numbers, dict(mala, exact) points)."""
    res = quadrature_check(energy, half_width=half_width, step=step)
    res["overfit"] = overfit(run, truth_ll)
    states = {it: st for it, st in run.snapshots.items() if it < run.best_iteration}
    states[run.best_iteration] = run.best_state
    exact = grid_sample(half_width=res["grid_half_width"], step=step)
    res["gradient"] = gradient_errors(energy, states, samples["train"], samples["probes"], exact)
    res["samples"], mala_x, exact_x = sample_checks(energy, samples["start"], K,
                                                    half_width=half_width, step=step,
                                                    mala_settings=mala_settings,
                                                    generators=generators)
    res["history"] = dict(steps=run.steps, objective=run.objective, val_ll=run.val_ll)
    return res, dict(mala=mala_x, exact=exact_x)


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


def sample_grid(energy, n, generator, *, half_width, step):
    """n exact draws from the midpoint-rule version of p: a cell with probability proportional
    to exp(E(midpoint)), then a uniform point inside it. Shape (n, 2), float64."""
    g = grid_points(half_width=half_width, step=step)
    e = energies(energy, g.to(dtype_of(energy)))
    idx = torch.multinomial(torch.softmax(e, 0), n, replacement=True, generator=generator)
    return g[idx] + step * (torch.rand(n, 2, generator=generator, dtype=torch.float64) - 0.5)


def sectors(x, K):
    """The mode of each point: the angular sector of width 2 pi / K centred on angle 2 pi k / K."""
    x = np.asarray(x, dtype=np.float64)
    return np.rint(np.arctan2(x[:, 1], x[:, 0]) / (2 * np.pi / K)).astype(int) % K


def mode_masses(energy, K, *, half_width, step):
    """The model's mass in each of the K sectors, by the midpoint rule on the grid."""
    g = grid_points(half_width=half_width, step=step)
    w = torch.softmax(energies(energy, g.to(dtype_of(energy))), 0).numpy()
    return np.bincount(sectors(g.numpy(), K), weights=w, minlength=K)


def chi_square_modes(x, masses):
    """Pearson's chi-square test of the points' sector counts against the model's masses."""
    counts = np.bincount(sectors(x, len(masses)), minlength=len(masses))
    statistic, p = stats.chisquare(counts, len(x) * masses / masses.sum())
    return float(statistic), float(p)


def sample_checks(energy, start, K, *, half_width, step, mala_settings, generators):
    """Samples from the learned EBM by MALA with independence jumps, every chain started at the
    same point (a start that holds none of the answer), against the model: chain counts per
    mode against the mode masses by quadrature (chi-square), and the radius and the angle
    against exact draws from the grid (two-sample Kolmogorov-Smirnov). generators = (for MALA,
    for the exact draws). Returns (numbers, MALA points, exact draws) as float64 numpy."""
    box = dict(half_width=half_width, step=step)
    x, rate, jump_rate, h = mala(energy, start, generator=generators[0], **mala_settings)
    exact = sample_grid(energy, len(start), generators[1], **box).numpy()
    x, masses = x.double().numpy(), mode_masses(energy, K, **box)
    radius = lambda a: np.linalg.norm(a, axis=1)
    angle = lambda a: np.arctan2(a[:, 1], a[:, 0])
    ks_r, ks_a = stats.ks_2samp(radius(x), radius(exact)), stats.ks_2samp(angle(x), angle(exact))
    chi2, p_modes = chi_square_modes(x, masses)
    chi2_start, p_start = chi_square_modes(start.double().numpy(), masses)
    return dict(chains=len(start), acceptance=rate, jump_acceptance=jump_rate, step_size=h,
                ks_radius=float(ks_r.statistic), p_radius=float(ks_r.pvalue),
                ks_angle=float(ks_a.statistic), p_angle=float(ks_a.pvalue), chi2_modes=chi2,
                p_modes=p_modes, chi2_start=chi2_start, p_start=p_start, masses=masses.tolist(),
                counts=np.bincount(sectors(x, K), minlength=K).tolist()), x, exact


# ---- persistent contrastive divergence: the oracle-free route without a proposal -------------

def train_pcd(energy, x_train, x_val, generator, *, half_width, step, chains=1000, mala_steps=2,
              updates=3000, lr=0.05, eval_every=25, target=0.574, max_step=4.0):
    """Persistent contrastive divergence: the model's expectation E_p grad E replaced by the
    plain average over `chains` persistent MALA chains, which take `mala_steps` steps after
    every update. torch.optim.Adam without momentum (the chains would lag a model that coasts)
    and a cosine decay of the learning rate; every eval_every updates the validation LL, with A
    by quadrature, picks the iterate to keep. The chains start from N(0, s^2 I), s the training
    data's sd; the MALA step size follows the acceptance rate towards `target`, never above
    max_step (a broad early model would otherwise grow it until the chains freeze once the
    model sharpens). Returns a Run."""
    optimizer = torch.optim.Adam(energy.parameters(), lr=lr, betas=(0.0, 0.99))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=updates)
    run, start = Run(energy, optimizer, converged=True), time.perf_counter()
    validation = score(x_val, grid_sample(half_width=half_width, step=step, dtype=x_train.dtype))
    z = float(x_train.std()) * torch.randn(chains, x_train.shape[1], generator=generator,
                                           dtype=x_train.dtype)
    h = 0.5
    for t in range(updates + 1):
        if t % eval_every == 0 or t == updates:
            run.iterations = t
            record(run, validation, x_train, equal_weights(energy, z), (), after=t)
        if t == updates:
            break
        optimizer.zero_grad()
        loss = -log_likelihood(energy, x_train, equal_weights(energy, z))
        loss.backward()
        optimizer.step()
        schedule.step()
        z, rate, _, _ = mala(energy, z, mala_steps, generator, step_size=h)
        h = min(max_step, h * math.exp(0.05 * (rate - target)))
    run.seconds = time.perf_counter() - start
    return run


# ---- the training routes compared (python VI.py --appendix) ----------------------------------

NEEDS_TRUTH = {"exact": False, "truth": True, "fitted": False, "pcd": False}  # route: its q
EXACT_STEP = 0.25  # quadrature cells of the exact route's objective (its models are then
# scored at the fine step)
PCD = dict(chains=1000, mala_steps=2, updates=3000)


def train_route(route, init, x, samples, generator, *, tau, hidden, r, max_iter, eval_every,
                memory, patience, half_width, step):
    """The r-th restart of one training route at (tau, hidden), trained to convergence:
    exact (the gradient and A by quadrature), truth or fitted (importance sampling from
    samples[route] = (training, validation) samples), or pcd. Returns (row, test log-densities)."""
    energy = init(hidden, tau, r)
    if route == "pcd":
        run = train_pcd(energy, x["train"], x["val"], generator, half_width=half_width,
                        step=step, **PCD)
    else:
        grid = grid_sample(half_width=half_width, step=EXACT_STEP)
        proposal, validation = (grid, grid) if route == "exact" else samples[route]
        run = train(new_run(energy, eval_every, memory), x["train"], proposal,
                    score(x["val"], validation), max_iter, patience)
    if run.failed:  # reported as such: route_summary pairs restarts, so it stops the appendix
        raise FloatingPointError(f"the {route} route at tau = {tau:g}, H = {hidden}, restart "
                                 f"{r}: {run.failed}")
    evaluations = run.energy.evaluations  # training's, before the test density adds its own
    _, cert, ll = fitted_density(run, x["test"], half_width=half_width, step=step)
    return dict(restart=r, iterations=run.iterations, best_iteration=run.best_iteration,
                converged=run.converged, evaluations=evaluations, seconds=run.seconds,
                test_ll=float(ll.mean()), mass_outside=cert["mass_outside"]), ll


def route_summary(e, log_densities, done, *, taus, restarts):
    """The appendix's routes: every route at its (tau, H) with its restarts, paired by
    paired against the KDE and each other, and the homework route at every tau.
    e = results["ebm"]; the truth and fitted routes are the main run's own models; done holds
    train_route's (row, test log-densities) of the other jobs."""
    if e["truth"]["failed_restarts"] or e["fitted"]["failed_restarts"]:
        raise FloatingPointError("a restart of the main run diverged; the appendix pairs every "
                                 "restart by initialisation, so it needs all of them")
    kde_ll, restarts = log_densities["kde"], range(restarts)
    own = {("truth", e["truth"]["tau"]): (e["truth"]["restarts"], log_densities["ebm"]),
           ("fitted", e["fitted"]["tau"]): (e["fitted"]["restarts"], log_densities["ebm_fitted"])}
    rows = lambda route, t, h: own[(route, t)][0] if (route, t) in own else \
        [done[("route", route, t, h, r)][0] for r in restarts]
    lls = lambda route, t, h: own[(route, t)][1] if (route, t) in own else \
        np.stack([done[("route", route, t, h, r)][1] for r in restarts])
    chosen = {route: (e[key]["tau"], e[key]["hidden"]) for route, key in
              (("exact", "truth"), ("truth", "truth"), ("fitted", "fitted"), ("pcd", "fitted"))}
    routes = {route: dict(tau=t, hidden=h, needs_truth=NEEDS_TRUTH[route],
                          restarts=rows(route, t, h), minus_kde=paired(lls(route, t, h), kde_ll))
              for route, (t, h) in chosen.items()}
    routes["truth"]["minus_exact"] = paired(lls("truth", *chosen["truth"]),
                                            lls("exact", *chosen["exact"]))
    routes["pcd"]["minus_fitted"] = paired(lls("pcd", *chosen["pcd"]),
                                           lls("fitted", *chosen["fitted"]))
    hidden, widest = chosen["truth"][1], max(taus)
    return dict(routes=routes, tau_sweep=[dict(tau=t, restarts=rows("truth", t, hidden))
                                          for t in taus],
                uninformed=dict(tau=widest, chosen_minus=paired(lls("truth", *chosen["truth"]),
                                                                lls("truth", widest, hidden)),
                                minus_kde=paired(lls("truth", widest, hidden), kde_ll)))
