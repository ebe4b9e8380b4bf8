"""The EBM: its estimators against a naive loop, central differences in float64, closed forms
and quadrature; their standard errors against their empirical spread; the grown quadrature box;
training by torch.optim.LBFGS, the stopping rule and the selection; MALA against exact draws.

Tolerances: exact identities are checked in float64 at 1e-9 or tighter (only round-off separates
the two sides); central differences at 1e-6 (their truncation error at step 1e-6); Monte Carlo
claims are seeded and bounded by a few standard errors, stated beside each.
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import ebm
import gmm_em

MEANS, WEIGHTS = gmm_em.ring(10, 10.0)


def proposal(M, seed):
    x, _ = gmm_em.sample(M, MEANS, WEIGHTS, np.random.default_rng(seed))
    return ebm.Sample(torch.tensor(x), torch.tensor(gmm_em.log_prob(x, MEANS, WEIGHTS)))


def random_energy(seed, hidden=16, tau=1.0, scale=1.0):
    energy = ebm.Energy(hidden, tau, torch.Generator().manual_seed(seed)).double()
    with torch.no_grad():
        for p in energy.parameters():
            p.mul_(scale)
    return energy


def gaussian_energy(b, tau=3.0):
    """net = b (output weights zero): E = b - ||x||^2 / (2 tau^2), A = b + log(2 pi tau^2)."""
    energy = random_energy(0, tau=tau)
    with torch.no_grad():
        energy.net[2].weight.zero_()
        energy.net[2].bias.fill_(b)
    return energy, b + math.log(2 * math.pi * tau**2)


def gaussian_proposal(M, seed, s=6.0):
    """q = N(0, s^2 I), heavier-tailed than exp(E) with tau = 3, so the weights are bounded."""
    x = torch.tensor(np.random.default_rng(seed).normal(size=(M, 2)) * s)
    return ebm.Sample(x, -math.log(2 * math.pi * s * s) - (x * x).sum(1) / (2 * s * s))


def flat(grads):
    return torch.cat([g.reshape(-1) for g in grads])


def central_differences(f, energy, eps=1e-6):
    """d f(energy) / d theta by central differences, parameter by parameter (float64)."""

    def shifted(p, i, by):
        with torch.no_grad():
            p.view(-1)[i] += by
        return f(energy)

    out = []
    for p in energy.parameters():
        for i in range(p.numel()):
            up, down = shifted(p, i, eps), shifted(p, i, -2 * eps)
            shifted(p, i, eps)
            out.append((up - down) / (2 * eps))
    return torch.tensor(out, dtype=torch.float64)


# ---- the energy and the estimators of problems 1.5-1.6 -------------------------------------------


def test_energy_initialisation_is_a_function_of_the_generator():
    a, b = (ebm.Energy(8, 1.0, torch.Generator().manual_seed(3)) for _ in range(2))
    c = ebm.Energy(8, 1.0, torch.Generator().manual_seed(4))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.net[0].weight, c.net[0].weight)


def test_the_energy_counts_the_points_it_evaluates():
    """The routes table's cost column: every pass through the network adds its batch size; a
    small chunk size changes the number of calls, not of points."""
    energy, x = random_energy(2, hidden=4, tau=1.0), torch.zeros(7, 2, dtype=torch.float64)
    assert energy.evaluations == 0
    energy(x)
    ebm.energies(energy, x, chunk=3)
    ebm.energy_and_grad(energy, x)
    assert energy.evaluations == 3 * 7


def test_the_energy_is_the_formula_of_the_write_up():
    energy = random_energy(1, hidden=5, tau=1.7, scale=2.0)
    x = torch.tensor(np.random.default_rng(1).normal(size=(30, 2)) * 5)
    w1, b1, w2, b2 = (p.detach() for p in energy.parameters())
    by_hand = (
        torch.nn.functional.softplus(x @ w1.T + b1) @ w2[0] + b2 - (x * x).sum(1) / (2 * 1.7**2)
    )
    assert torch.allclose(energy(x).detach(), by_hand, rtol=0, atol=1e-12)


def test_is_gradient_equals_a_naive_ratio_of_sums():
    # F_hat = N_hat / D_hat with N_hat, D_hat the plain averages of problem 1.6, one per-sample
    # gradient at a time, no softmax and no log space: an independent route to the same number
    energy = random_energy(2, hidden=4)
    s = proposal(60, 2)
    params = list(energy.parameters())
    num, den = [torch.zeros_like(p) for p in params], 0.0
    for m in range(60):
        e = energy(s.x[m : m + 1])[0]
        ratio = torch.exp(e - s.log_q[m]).item()
        for acc, g in zip(num, torch.autograd.grad(e, params), strict=True):
            acc += g * ratio / 60
        den += ratio / 60
    assert torch.allclose(
        flat(ebm.grad_log_partition(energy, s)), flat(num) / den, rtol=1e-9, atol=1e-12
    )


def test_the_training_objective_and_its_gradient_match_central_differences():
    # L_hat = mean E(x_i) - A_hat written out, and its autograd gradient (the gradient L-BFGS
    # follows: mean grad E - F_hat) against central differences in float64
    energy = random_energy(4, hidden=3)
    s = proposal(400, 4)
    data = torch.tensor(gmm_em.sample(100, MEANS, WEIGHTS, np.random.default_rng(40))[0])
    value = ebm.log_likelihood(energy, data, s)
    with torch.no_grad():
        by_hand = float(
            energy(data).mean() - torch.logsumexp(energy(s.x) - s.log_q, 0) + math.log(400)
        )
    assert math.isclose(value.item(), by_hand, abs_tol=1e-10)
    grads = torch.autograd.grad(value, list(energy.parameters()))
    numeric = central_differences(lambda e: ebm.log_likelihood(e, data, s).detach().item(), energy)
    assert torch.allclose(flat(grads), numeric, atol=1e-6)


def test_quadrature_is_importance_sampling_with_a_uniform_proposal_on_the_grid():
    # the midpoint rule written out, against A_hat of the grid sample; and its gradient (the exact
    # gradient of problem 1.6) against central differences of the quadrature A
    energy = random_energy(5, hidden=3, tau=2.0, scale=1.5)
    h, step = 14.0, 0.2
    g = ebm.grid_points(half_width=h, step=step)
    with torch.no_grad():
        midpoint = float(torch.logsumexp(energy(g), 0) + 2 * math.log(step))
    sample = ebm.grid_sample(half_width=h, step=step, dtype=torch.float64)
    assert math.isclose(float(ebm.log_partition(energy, sample).detach()), midpoint, abs_tol=1e-10)
    assert math.isclose(
        ebm.log_partition_grid(energy, half_width=h, step=step), midpoint, abs_tol=1e-10
    )
    numeric = central_differences(
        lambda e: ebm.log_partition_grid(e, half_width=h, step=step), energy
    )
    assert torch.allclose(flat(ebm.grad_log_partition(energy, sample)), numeric, atol=1e-6)


def test_grid_and_is_recover_a_closed_form_partition_function():
    energy, exact = gaussian_energy(b=0.7)
    assert math.isclose(
        ebm.log_partition_grid(energy, half_width=20.0, step=0.05), exact, abs_tol=1e-10
    )
    s = gaussian_proposal(20_000, 8)
    a_hat, se, _ = ebm.log_mean_exp_se(ebm.sample_log_weights(energy, s))
    assert abs(a_hat - exact) < 4 * se  # 4 s.e.


def test_closed_form_gradient_of_a_gaussian_energy():
    # dA/d(b2) = E_p[1] = 1 exactly, by every estimator
    energy, _ = gaussian_energy(b=-2.0)
    for sample in (
        proposal(1000, 9),
        ebm.grid_sample(half_width=20.0, step=0.1, dtype=torch.float64),
    ):
        assert math.isclose(float(ebm.grad_log_partition(energy, sample)[3]), 1.0, abs_tol=1e-12)


def test_equal_weights_give_the_plain_average_of_contrastive_divergence():
    energy = random_energy(6, hidden=4)
    x = torch.tensor(np.random.default_rng(6).normal(size=(50, 2)) * 3)
    average = flat(torch.autograd.grad(energy(x).mean(), list(energy.parameters())))
    assert torch.allclose(
        flat(ebm.grad_log_partition(energy, ebm.equal_weights(energy, x))), average, atol=1e-12
    )


def test_is_estimates_converge_to_quadrature_as_M_grows():
    energy = random_energy(10, tau=3.0)
    exact = ebm.grid_sample(half_width=20.0, step=0.05, dtype=torch.float64)
    a_ref, g_ref = (
        ebm.log_partition_grid(energy, half_width=20.0, step=0.05),
        flat(ebm.grad_log_partition(energy, exact)),
    )
    errors = []
    for M in (300, 3_000, 300_000):
        a_err, g_err = [], []
        for seed in range(4):  # average over draws: a single draw can be lucky
            s = gaussian_proposal(M, 100 + seed)
            a_err.append(abs(float(ebm.log_partition(energy, s).detach()) - a_ref))
            g_err.append(float((flat(ebm.grad_log_partition(energy, s)) - g_ref).norm()))
        errors.append((np.mean(a_err), np.mean(g_err)))
    (a0, g0), (a1, g1), (a2, g2) = errors
    assert a2 < a1 < a0 and g2 < g1 < g0
    assert a2 < 0.01 and g2 < 0.05 * float(g_ref.norm())


def test_problem_17_by_importance_sampling_matches_closed_forms():
    # E = b - ||x||^2 / (2 tau^2) is N(0, tau^2 I) up to A; q = N(0, s^2 I). Then
    # KL(q || p_theta) = 2 log(tau / s) + s^2 / tau^2 - 1 in d = 2, and the test LL with A_hat is
    # the mean of E over the test points less A_hat (a naive loop).
    tau, s = 3.0, 6.0
    energy, exact = gaussian_energy(b=0.7, tau=tau)
    x_test = torch.tensor(np.random.default_rng(3).normal(size=(50, 2)) * tau)
    numbers, points = ebm.importance_sampled(energy, x_test, {"q": gaussian_proposal(20_000, 9)},
                                             exact)
    n = numbers["q"]
    assert abs(n["A"] - exact) < 4 * n["A_se"] and n["A_grid_minus"] == exact - n["A"]
    with torch.no_grad():
        naive = [float(energy(x[None])[0]) - n["A"] for x in x_test]
    np.testing.assert_allclose(points["q"], naive, rtol=0, atol=1e-12)
    assert math.isclose(n["test_ll"], np.mean(naive), abs_tol=1e-12)
    kl = 2 * math.log(tau / s) + s * s / tau**2 - 1
    assert abs(n["kl_jensen"] - kl) < 4 * n["kl_jensen_se"]


def test_a_shift_common_to_a_restarts_points_adds_its_standard_error():
    # 3 restarts, each 0.1 ahead of b on 400 points with noise 0.01: a clear lead, unless each
    # restart's A carries an s.e. of 1, which must then hide it.
    rng = np.random.default_rng(0)
    b = rng.normal(size=(3, 400))
    a = b + 0.1 + 0.01 * rng.normal(size=(3, 400))
    assert ebm.paired(a, b)["holds"] == 1
    shifted = ebm.paired(a, b, shift_se=[1.0, 1.0, 1.0])
    assert shifted["holds"] == 0
    point_se = (a - b).std(1, ddof=1) / math.sqrt(400)
    np.testing.assert_allclose(shifted["se_points"], np.sqrt(point_se**2 + 1.0), rtol=1e-12)


def test_the_overfit_is_the_gap_at_the_kept_iterate_less_the_truths_own():
    run = type("Run", (), {})()  # what overfit reads of a training run
    run.steps, run.objective, run.val_ll, run.best_iteration = [0, 20, 40], [-6, -5.0, -4.9], \
        [-6.5, -5.2, -5.3], 20
    out = ebm.overfit(run, dict(train=-5.05, val=-5.1))
    assert math.isclose(out["gap"], 0.2) and math.isclose(out["truth_gap"], 0.05)
    assert math.isclose(out["overfit"], 0.15)


def test_a_summary_over_restarts_is_their_mean_and_sd_and_one_restart_has_no_sd():
    rows = [dict(by_is=dict(q=dict(A_grid_minus=g, A_se=0.5))) for g in (0.2, -0.6, 1.0)]
    out = ebm.is_summary(rows)["q"]
    assert math.isclose(out["A_grid_minus"]["mean"], 0.2)
    assert math.isclose(out["A_grid_minus"]["sd"], np.std([0.2, -0.6, 1.0], ddof=1))
    assert math.isclose(out["min_gap_in_se"], -1.2) and math.isclose(out["max_gap_in_se"], 2.0)
    assert math.isnan(ebm.is_summary(rows[:1])["q"]["A_se"]["sd"])  # null in results.json


def test_standard_errors_match_the_spread_of_independent_estimates():
    # 400 independent samples of M = 2000: the sd of A_hat (and of the Jensen estimate) over
    # them against the delta-method formula, averaged. The sd of 400 draws is itself known to
    # ~3.5%, and the delta method is first order, so agreement within 15% is the claim.
    energy, _ = gaussian_energy(b=0.0)
    a_hats, a_ses, j_hats, j_ses = [], [], [], []
    for seed in range(400):
        lw = ebm.sample_log_weights(energy, gaussian_proposal(2000, 1000 + seed))
        a, se, _ = ebm.log_mean_exp_se(lw)
        j, jse = ebm.jensen_bound_se(lw)
        a_hats.append(a), a_ses.append(se), j_hats.append(j), j_ses.append(jse)
    assert 0.85 < np.std(a_hats, ddof=1) / np.mean(a_ses) < 1.15
    assert 0.85 < np.std(j_hats, ddof=1) / np.mean(j_ses) < 1.15


@pytest.mark.parametrize("scale", [1.0, 5.0])
def test_every_energy_is_normalisable(scale):
    # Large weights give a net that grows fast along some ray; the quadratic term still wins,
    # so A is finite and stops moving once the box holds the mass.
    energy = random_energy(11, scale=scale)
    a20 = ebm.log_partition_grid(energy, half_width=20.0 * scale, step=0.05 * scale)
    a40 = ebm.log_partition_grid(energy, half_width=40.0 * scale, step=0.05 * scale)
    assert math.isfinite(a20) and math.isclose(a20, a40, abs_tol=1e-8)


@pytest.mark.parametrize("tau", [1.0, 8.0])
def test_the_grown_box_holds_all_but_a_millionth_of_the_mass(tau):
    # a Gaussian energy N(0, tau^2 I): the mass outside [-h, h]^2 in closed form
    energy, exact = gaussian_energy(b=0.3, tau=tau)
    cert = ebm.quadrature_log_partition(energy, half_width=20.0, step=0.1)
    h = cert["half_width"]
    outside = 1 - (1 - 2 * stats.norm.sf(h / tau)) ** 2
    assert outside <= 1e-6 and cert["mass_outside"] <= 1e-6
    assert math.isclose(cert["A"], exact, abs_tol=2e-6)  # the missing mass, 1e-6, moves A by 1e-6
    if tau == 8.0:  # the starting box [-20, 20]^2 misses 1.8% of this one's mass: it had to grow
        assert h > 20.0 and 1 - (1 - 2 * stats.norm.sf(20.0 / tau)) ** 2 > 0.01


def test_effective_sample_size_limits():
    a, se, ess = ebm.log_mean_exp_se(torch.zeros(50, dtype=torch.float64))
    assert (
        abs(a) < 1e-14 and se < 1e-6 and math.isclose(ess, 50.0)
    )  # equal weights: no Monte Carlo error
    one_hot = torch.tensor([0.0] + [-1e4] * 49, dtype=torch.float64)
    assert math.isclose(ebm.log_mean_exp_se(one_hot)[2], 1.0)


# ---- L-BFGS, the stopping rule, the selection ----------------------------------------------------


def small_problem(seed=13, n=300):
    rng = np.random.default_rng(seed)
    draw = lambda m: torch.tensor(gmm_em.sample(m, MEANS, WEIGHTS, rng)[0], dtype=torch.float32)
    sample = lambda x: ebm.Sample(
        x, torch.tensor(gmm_em.log_prob(x.double().numpy(), MEANS, WEIGHTS), dtype=torch.float32)
    )
    train, val, prop, vprop = draw(n), draw(n), sample(draw(1000)), sample(draw(2000))
    return train, prop, ebm.score(val, vprop)


def test_training_raises_the_validation_likelihood_and_keeps_the_best_iterate():
    train, prop, score = small_problem()
    run = ebm.new_run(ebm.Energy(16, 1.0, torch.Generator().manual_seed(13)), eval_every=5)
    ebm.train(run, train, prop, score, 80)
    assert run.val_ll[-1] > run.val_ll[0] + 5.0 and run.best_val == max(run.val_ll)
    assert math.isclose(score(ebm.best_energy(run)), run.best_val, abs_tol=1e-6)  # the kept weights
    # the objective recorded is L_hat of the training sample at each scored iterate
    with torch.no_grad():
        assert math.isclose(
            run.objective[-1], ebm.log_likelihood(run.energy, train, prop).item(), abs_tol=1e-6
        )


def test_training_resumes_exactly_where_it_stopped():
    # successive halving pauses runs and resumes them: torch.optim.LBFGS keeps its memory between
    # calls, so 40 iterations in two calls are the 40 iterations of one call, bit for bit
    train, prop, score = small_problem()
    make = lambda: ebm.new_run(ebm.Energy(8, 1.0, torch.Generator().manual_seed(14)))
    straight = ebm.train(make(), train, prop, score, 40)
    paused = ebm.train(ebm.train(make(), train, prop, score, 20), train, prop, score, 40)
    assert paused.iterations == straight.iterations == 40 and paused.val_ll == straight.val_ll
    assert all(
        torch.equal(p, q)
        for p, q in zip(paused.energy.parameters(), straight.energy.parameters(), strict=True)
    )


@pytest.mark.parametrize("best, stop", [(0, 30), (20, 50), (200, 400)])
def test_the_plateau_must_be_as_long_as_the_climb_before_it(best, stop):
    # with patience 30 a run whose best came at `best` stops at max(best + 30, 2 best)
    assert ebm.has_converged(stop, best, 30) and not ebm.has_converged(stop - 1, best, 30)


@pytest.mark.parametrize("best_scoring", [0, 2, 6])
def test_training_stops_at_the_first_scoring_where_the_plateau_is_long_enough(best_scoring):
    # validation improves for `best_scoring` scorings, then never again
    train, prop, _ = small_problem()
    scores = iter(list(range(best_scoring + 1)) + [-1] * 1000)
    run = ebm.new_run(ebm.Energy(4, 1.0, torch.Generator().manual_seed(15)), eval_every=10)
    ebm.train(run, train, prop, lambda energy: float(next(scores)), 10**6, patience=30)
    assert run.converged and run.best_iteration == run.steps[best_scoring]
    assert [ebm.has_converged(s, run.best_iteration, 30) for s in run.steps[best_scoring:]] == [
        False
    ] * (len(run.steps) - best_scoring - 1) + [True]


def test_a_run_ends_when_lbfgs_stops_itself():
    # a gradient below L-BFGS's tolerance (here made huge) ends its step at once: the run is
    # over, whatever its budget and its plateau
    train, prop, score = small_problem()
    run = ebm.new_run(ebm.Energy(4, 1.0, torch.Generator().manual_seed(16)), eval_every=10)
    run.optimizer.param_groups[0]["tolerance_grad"] = 1e9
    calls = iter(range(10))  # without the rule the run would go on scoring forever: fail instead

    def scored(energy):
        if next(calls, None) is None:
            raise AssertionError("the run did not stop when L-BFGS did")
        return score(energy)

    ebm.train(run, train, prop, scored, 10**6)
    assert run.converged and run.iterations == 0 and run.steps == [0, 0]


def test_successive_halving_keeps_the_best_third_and_ranks_every_candidate():
    quality = dict(zip("abcdefghi", [3, 9, 1, 7, 5, 8, 2, 6, 4], strict=True))  # b > f > d > h
    runs = {name: ebm.Run(None, None) for name in quality}
    trained = {}

    def train_to(run, until):
        name = next(k for k, r in runs.items() if r is run)
        trained.setdefault(name, []).append(until)
        run.best_val = quality[name] + until / 1000

    ranking = ebm.successive_halving(runs, train_to, (10, 20, 30), keep=3)
    assert ranking[:3] == ["b", "f", "d"] and sorted(ranking) == sorted(quality)
    assert trained["b"] == [10, 20, 30] and trained["f"] == [10, 20] and trained["a"] == [10]


# ---- sampling from the model ---------------------------------------------------------------------


def test_mala_samples_a_gaussian_energy_with_the_target_acceptance():
    energy, _ = gaussian_energy(b=0.0, tau=3.0)  # p = N(0, 9 I)
    x0 = torch.zeros(4000, 2, dtype=torch.float64)
    x, rate, _, _ = ebm.mala(energy, x0, 150, torch.Generator().manual_seed(16), adapt=100)
    # 4000 independent chains: the mean has s.e. 3 / sqrt(4000) = 0.047 per coordinate and the
    # variance s.e. 9 sqrt(2 / 4000) = 0.20; 4 s.e. each
    assert np.abs(x.mean(0).numpy()).max() < 4 * 0.047
    assert np.abs(x.var(0).numpy() - 9.0).max() < 4 * 0.20
    assert abs(rate - 0.574) < 0.05


def test_independence_jumps_keep_the_chain_exact_and_let_it_leave_its_start():
    # N(0, 9 I) sampled from one far point with Langevin steps too small to get back in time:
    # the jumps (from a broad, misplaced Gaussian) must bring the chains to the target, and not
    # bias it (a jump accepted without the q-ratio would pull the mean towards 3)
    energy, _ = gaussian_energy(b=0.0, tau=3.0)
    x0 = torch.full((4000, 2), 30.0, dtype=torch.float64)
    proposal = (np.array([3.0, 3.0]), 36.0 * np.eye(2))
    x, _, jump_rate, _ = ebm.mala(
        energy,
        x0,
        60,
        torch.Generator().manual_seed(21),
        step_size=0.01,
        proposal=proposal,
        jump=0.5,
    )
    assert (
        np.abs(x.mean(0).numpy()).max() < 4 * 0.047
        and np.abs(x.var(0).numpy() - 9.0).max() < 4 * 0.20
    )
    assert 0.1 < jump_rate < 0.9
    stuck, _, _, _ = ebm.mala(energy, x0, 60, torch.Generator().manual_seed(21), step_size=0.01)
    assert stuck.mean() > 20  # without the jumps the chains are still near their start


def test_mode_masses_and_the_chi_square_test_of_the_chains():
    energy, _ = gaussian_energy(b=0.0, tau=3.0)  # round: every sector holds 1/K of the mass
    assert np.allclose(ebm.mode_masses(energy, 10, half_width=20.0, step=0.1), 0.1, atol=1e-3)
    # calibrated on exact draws of a lopsided model, powerful against chains stuck at their start
    model = random_energy(22, hidden=8, tau=2.0, scale=2.0)
    masses = ebm.mode_masses(model, 10, half_width=20.0, step=0.1)
    assert math.isclose(masses.sum(), 1.0) and masses.max() > 2 * masses.min()
    p_values = [
        ebm.chi_square_modes(
            ebm.sample_grid(
                model, 2000, half_width=20.0, step=0.1, generator=torch.Generator().manual_seed(s)
            ).numpy(),
            masses,
        )[1]
        for s in range(20)
    ]
    # about 5% rejected at the 5% level: 1 of 20 expected, 4 or more has probability 0.016
    assert np.sum(np.array(p_values) < 0.05) <= 3
    start = torch.tensor([[2.0, 0.5]] * 2000, dtype=torch.float64)
    stuck, _, _, _ = ebm.mala(model, start, 20, torch.Generator().manual_seed(23))
    assert ebm.chi_square_modes(stuck.numpy(), masses)[1] < 1e-6


def test_the_input_gradient_is_the_gaussians_score():
    energy, _ = gaussian_energy(b=0.0, tau=3.0)
    x = torch.tensor(np.random.default_rng(16).normal(size=(20, 2)) * 4)
    e, g = ebm.energy_and_grad(energy, x)
    assert torch.allclose(g, -x / 9.0, atol=1e-12) and torch.allclose(
        e, -(x * x).sum(1) / 18.0, atol=1e-12
    )


def test_mala_leaves_the_learned_model_where_it_is(quick):
    # started from exact draws of the learned energy, the chains must still be exact draws
    energy = ebm.load_energy(quick / "ebm_energy.pt")
    g = torch.Generator().manual_seed(17)
    start = ebm.sample_grid(energy, 3000, half_width=20.0, step=0.1, generator=g).float()
    x, _, _, _ = ebm.mala(energy, start, 100, g, adapt=50)
    fresh = ebm.sample_grid(energy, 3000, half_width=20.0, step=0.1, generator=g).numpy()
    x = x.double().numpy()
    for f in (lambda a: np.linalg.norm(a, axis=1), lambda a: np.arctan2(a[:, 1], a[:, 0])):
        assert stats.ks_2samp(f(x), f(fresh)).pvalue > 1e-3  # a wrong sampler gives p ~ 0


def test_grid_draws_have_the_gaussian_moments():
    energy, _ = gaussian_energy(b=1.0, tau=3.0)
    x = ebm.sample_grid(
        energy, 20_000, half_width=20.0, step=0.1, generator=torch.Generator().manual_seed(18)
    ).numpy()
    # s.e. of the variance 9 sqrt(2 / 20000) = 0.09 (plus step^2 / 12 = 0.0008 from the cells)
    assert np.abs(x.var(0) - 9.0).max() < 0.4 and np.abs(x.mean(0)).max() < 0.1


def test_a_saved_energy_reloads_whatever_its_architecture(tmp_path):
    for hidden, tau in ((20, 1.0), (3, 7.5)):
        energy = random_energy(20, hidden=hidden, tau=tau).float()
        ebm.save_energy(energy, tmp_path / "e.pt")
        loaded = ebm.load_energy(tmp_path / "e.pt")
        x = torch.randn(20, 2)
        with torch.no_grad():
            assert torch.equal(energy(x), loaded(x)) and loaded.spec == energy.spec


# ---- the training routes without the oracle (ebm.train_route, python VI.py --appendix) -----------


def test_contrastive_divergence_with_exact_draws_is_the_exact_gradient():
    # the negative phase of CD, the plain average of grad E over draws from p_theta, against grad A
    # by quadrature: with exact draws from the grid the difference is Monte Carlo noise, shrinking
    # like 1/sqrt(draws); its size is checked against the per-draw spread (4 standard errors)
    energy = random_energy(24, hidden=6, tau=1.5, scale=1.5)
    exact = flat(
        ebm.grad_log_partition(
            energy, ebm.grid_sample(half_width=20.0, step=0.05, dtype=torch.float64)
        )
    )
    for n, seed in ((4_000, 25), (64_000, 26)):
        x = ebm.sample_grid(
            energy, n, torch.Generator().manual_seed(seed), half_width=20.0, step=0.05
        )
        cd = flat(ebm.grad_log_partition(energy, ebm.equal_weights(energy, x)))
        per_draw = torch.stack(
            [
                flat(torch.autograd.grad(energy(x[i : i + 1])[0], list(energy.parameters())))
                for i in range(200)
            ]
        )
        se = per_draw.std(0) / math.sqrt(n)  # per-parameter standard error of the average
        assert (cd - exact).abs().max() < 4 * se.max() + 1e-9, n


def test_pcd_trains_the_energy_towards_the_data():
    # a short persistent contrastive divergence run raises the validation LL and keeps its best
    # iterate
    rng = np.random.default_rng(27)
    draw = lambda m: torch.tensor(gmm_em.sample(m, MEANS, WEIGHTS, rng)[0], dtype=torch.float32)
    train, val = draw(300), draw(300)
    run = ebm.train_pcd(
        ebm.Energy(16, 1.0, torch.Generator().manual_seed(27)),
        train,
        val,
        torch.Generator().manual_seed(28),
        half_width=20.0,
        step=0.2,
        chains=200,
        updates=300,
        eval_every=50,
    )
    assert run.val_ll[-1] > run.val_ll[0] + 3.0 and run.best_val == max(run.val_ll)
    energy = ebm.best_energy(run)
    assert math.isclose(
        float(ebm.energies(energy, val).mean())
        - ebm.log_partition_grid(energy, half_width=20.0, step=0.2),
        run.best_val,
        abs_tol=1e-9,
    )


def test_a_proposal_fitted_to_the_data_estimates_a_trained_models_A(quick):
    # the oracle-free proposal, a Gaussian with the training data's mean and covariance, against
    # quadrature on the quick run's trained energy: within 3 of its standard errors
    import VI

    energy = ebm.load_energy(quick / "ebm_energy.pt")
    train = np.load(quick / "data.npz")["train"]
    mean, cov = VI.fitted_gaussian(train)
    x = np.random.default_rng(29).multivariate_normal(mean, cov, size=50_000)
    sample = ebm.Sample(
        torch.tensor(x, dtype=torch.float32),
        torch.tensor(stats.multivariate_normal(mean, cov).logpdf(x), dtype=torch.float32),
    )
    a_hat, se, ess = ebm.log_mean_exp_se(ebm.sample_log_weights(energy, sample))
    a = ebm.quadrature_log_partition(energy, half_width=20.0, step=0.1)["A"]
    assert abs(a_hat - a) < 3 * se and ess > 1000


def test_one_restart_has_no_sd_and_the_json_holds_null_for_it():
    # a restart that diverged leaves one: its sd over restarts is undefined, not 0; a density
    # fitted once (the KDE) has no restarts and no spread
    from tools import outputs

    rng = np.random.default_rng(0)
    kde, one = rng.normal(size=50), rng.normal(size=(1, 50))
    res = ebm.compare(dict(truth=kde + 1, em=kde, kde=kde, ebm=one, ebm_fitted=one + 0.5,
                           ebm_is=one - 0.1, ebm_is_train=one))
    assert math.isnan(res["test_ll"]["ebm"]["sd"]) and math.isnan(res["ebm_minus_kde"]["sd"])
    assert res["test_ll"]["kde"]["sd"] == 0.0 and res["truth_minus_kde"]["sd"] == 0.0
    assert res["ebm_minus_kde"]["se"] == pytest.approx(res["ebm_minus_kde"]["se_points"][0])
    _, undefined = outputs.nulled(dict(compare=res))
    assert {"compare.test_ll.ebm.sd", "compare.ebm_minus_kde.sd"} <= set(undefined)
    two = ebm.compare(dict(truth=kde, em=kde, kde=kde, ebm=np.vstack([one, one + 1]),
                           ebm_fitted=np.vstack([one, one]), ebm_is=np.vstack([one, one]),
                           ebm_is_train=np.vstack([one, one])))
    assert two["test_ll"]["ebm"]["sd"] == pytest.approx(math.sqrt(0.5))
