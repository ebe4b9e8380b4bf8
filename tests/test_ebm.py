"""The EBM: its closed-form gradients against autograd, a naive loop, central differences and
closed forms; the importance-sampling estimates and their standard errors against quadrature
and their empirical spread; L-BFGS; MALA against exact draws.

Tolerances: exact identities are checked in float64 at 1e-10 or tighter (only round-off
separates the two sides); Monte Carlo claims are seeded and bounded by a few standard errors,
stated beside each.
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
        energy.out.weight.zero_()
        energy.out.bias.fill_(b)
    return energy, b + math.log(2 * math.pi * tau**2)


def gaussian_proposal(M, seed, s=6.0):
    """q = N(0, s^2 I), heavier-tailed than exp(E) with tau = 3, so the weights are bounded."""
    x = torch.tensor(np.random.default_rng(seed).normal(size=(M, 2)) * s)
    return ebm.Sample(x, -math.log(2 * math.pi * s * s) - (x * x).sum(1) / (2 * s * s))


def flat(grads):
    return torch.cat([g.reshape(-1) for g in grads])


# ---- closed-form gradients -------------------------------------------------------------------

def test_energy_initialisation_is_a_function_of_the_generator():
    a, b = (ebm.Energy(8, 1.0, torch.Generator().manual_seed(3)) for _ in range(2))
    c = ebm.Energy(8, 1.0, torch.Generator().manual_seed(4))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.hidden.weight, c.hidden.weight)


def test_param_grad_is_the_weighted_sum_of_autograd_gradients():
    energy = random_energy(1, hidden=5, scale=2.0)
    x = torch.tensor(np.random.default_rng(1).normal(size=(40, 2)) * 5)
    c = torch.tensor(np.random.default_rng(2).normal(size=40))
    ours = flat(ebm.param_grad(energy, x, c))
    reference = flat(torch.autograd.grad((c * energy(x)).sum(), list(energy.parameters())))
    assert torch.allclose(ours, reference, rtol=1e-12, atol=1e-12)


def test_is_gradient_equals_a_naive_ratio_of_sums():
    # F_hat = N_hat / D_hat with N_hat, D_hat the plain averages of problem 1.6, one
    # per-sample autograd gradient at a time (no softmax, no closed form): an independent route.
    energy = random_energy(2, hidden=4)
    s = proposal(60, 2)
    params = list(energy.parameters())
    num, den = [torch.zeros_like(p) for p in params], 0.0
    for m in range(60):
        e = energy(s.x[m:m + 1])[0]
        ratio = torch.exp(e - s.log_q[m]).item()
        for acc, g in zip(num, torch.autograd.grad(e, params)):
            acc += g * ratio / 60
        den += ratio / 60
    assert torch.allclose(flat(ebm.grad_log_partition_is(energy, s)), flat(num) / den, rtol=1e-9, atol=1e-12)


def test_is_gradient_is_the_gradient_of_the_log_partition_estimate():
    energy = random_energy(3)
    s = proposal(500, 3)
    autograd = torch.autograd.grad(ebm.log_partition_is(energy, s), list(energy.parameters()))
    assert torch.allclose(flat(ebm.grad_log_partition_is(energy, s)), flat(autograd), rtol=1e-10, atol=1e-12)


def test_training_objective_and_its_gradient():
    # value: mean E(train) - A_hat; gradient: autograd of that same expression
    energy = random_energy(4)
    s = proposal(400, 4)
    data = torch.tensor(gmm_em.sample(100, MEANS, WEIGHTS, np.random.default_rng(40))[0])
    value, grads = ebm.is_objective(data, s)(energy)
    reference = energy(data).mean() - ebm.log_partition_is(energy, s)
    assert math.isclose(value, float(reference.detach()), rel_tol=0, abs_tol=1e-10)
    autograd = torch.autograd.grad(reference, list(energy.parameters()))
    assert torch.allclose(flat(grads), flat(autograd), rtol=1e-10, atol=1e-12)


def test_quadrature_gradient_matches_central_differences_of_quadrature_A():
    # float64 throughout; the grid is coarse (the identity holds for any fixed grid)
    energy = random_energy(5, hidden=3, tau=2.0, scale=1.5)
    h, step = 14.0, 0.2
    _, grads = ebm.grad_log_partition_grid(energy, h, step)
    params, eps = list(energy.parameters()), 1e-6
    for p, g in zip(params, grads):
        for i in range(p.numel()):
            with torch.no_grad():
                p.view(-1)[i] += eps
                up = ebm.log_partition_grid(energy, h, step)
                p.view(-1)[i] -= 2 * eps
                down = ebm.log_partition_grid(energy, h, step)
                p.view(-1)[i] += eps
            assert abs(g.reshape(-1)[i] - (up - down) / (2 * eps)) < 1e-7


def test_exact_gradient_objective_is_autograd_of_the_quadrature_likelihood():
    energy = random_energy(6, hidden=4, tau=2.0)
    data = torch.tensor(np.random.default_rng(6).normal(size=(30, 2)) * 3)
    value, grads = ebm.grid_objective(data, 12.0, 0.25)(energy)
    g = ebm.grid_points(12.0, 0.25)
    reference = energy(data).mean() - (torch.logsumexp(energy(g), 0) + 2 * math.log(0.25))
    assert math.isclose(value, float(reference.detach()), abs_tol=1e-10)
    assert torch.allclose(flat(grads), flat(torch.autograd.grad(reference, list(energy.parameters()))),
                          rtol=1e-10, atol=1e-12)


def test_input_gradient_of_the_energy_matches_autograd():
    energy = random_energy(7, hidden=6, tau=1.5, scale=2.0)
    x = torch.tensor(np.random.default_rng(7).normal(size=(25, 2)) * 4, requires_grad=True)
    e, g = ebm.energy_and_grad(energy, x)
    (reference,) = torch.autograd.grad(energy(x).sum(), x)
    assert torch.allclose(e, energy(x).detach(), atol=1e-12) and torch.allclose(g, reference, atol=1e-12)


# ---- the partition function and its estimates ----------------------------------------------------

def test_grid_and_is_recover_a_closed_form_partition_function():
    energy, exact = gaussian_energy(b=0.7)
    assert math.isclose(ebm.log_partition_grid(energy, 20.0, 0.05), exact, abs_tol=1e-10)
    s = gaussian_proposal(20_000, 8)
    a_hat, se, _ = ebm.log_mean_exp_se(ebm.log_weights(energy, s))
    assert abs(a_hat - exact) < 4 * se  # 4 s.e.


def test_closed_form_gradient_of_a_gaussian_energy():
    # dA/d(out.bias) = E_p[1] = 1 exactly, by every estimator
    energy, _ = gaussian_energy(b=-2.0)
    grads = dict(zip([n for n, _ in energy.named_parameters()], ebm.grad_log_partition_is(energy, proposal(1000, 9))))
    assert math.isclose(float(grads["out.bias"]), 1.0, abs_tol=1e-12)
    _, exact = ebm.grad_log_partition_grid(energy, 20.0, 0.1)
    assert math.isclose(float(exact[3]), 1.0, abs_tol=1e-12)


def test_is_estimates_converge_to_quadrature_as_M_grows():
    energy = random_energy(10, tau=3.0)
    a_ref, g_ref = ebm.grad_log_partition_grid(energy, 20.0, 0.05)
    g_ref = flat(g_ref)
    errors = []
    for M in (300, 3_000, 300_000):
        a_err, g_err = [], []
        for seed in range(4):  # average over draws: a single draw can be lucky
            s = gaussian_proposal(M, 100 + seed)
            a_err.append(abs(float(ebm.log_partition_is(energy, s).detach()) - a_ref))
            g_err.append(float((flat(ebm.grad_log_partition_is(energy, s)) - g_ref).norm()))
        errors.append((np.mean(a_err), np.mean(g_err)))
    (a0, g0), (a1, g1), (a2, g2) = errors
    assert a2 < a1 < a0 and g2 < g1 < g0
    assert a2 < 0.01 and g2 < 0.05 * float(g_ref.norm())


def test_standard_errors_match_the_spread_of_independent_estimates():
    # 400 independent samples of M = 2000: the sd of A_hat (and of the Jensen estimate) over
    # them against the delta-method formula, averaged. The sd of 400 draws is itself known to
    # ~3.5%, and the delta method is first order, so agreement within 15% is the claim.
    energy, _ = gaussian_energy(b=0.0)
    a_hats, a_ses, j_hats, j_ses = [], [], [], []
    for seed in range(400):
        lw = ebm.log_weights(energy, gaussian_proposal(2000, 1000 + seed))
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
    a20 = ebm.log_partition_grid(energy, 20.0 * scale, 0.05 * scale)
    a40 = ebm.log_partition_grid(energy, 40.0 * scale, 0.05 * scale)
    assert math.isfinite(a20) and math.isclose(a20, a40, abs_tol=1e-8)


def test_effective_sample_size_limits():
    assert math.isclose(ebm.effective_sample_size(torch.zeros(50, dtype=torch.float64)), 50.0)
    one_hot = torch.tensor([0.0] + [-1e4] * 49, dtype=torch.float64)
    assert math.isclose(ebm.effective_sample_size(one_hot), 1.0)
    a, se, ess = ebm.log_mean_exp_se(torch.zeros(50, dtype=torch.float64))
    assert abs(a) < 1e-14 and se < 1e-6 and math.isclose(ess, 50.0)  # equal weights: no Monte Carlo error


# ---- L-BFGS and training ---------------------------------------------------------------------------

def test_lbfgs_maximises_a_concave_quadratic_and_the_negative_rosenbrock():
    rng = np.random.default_rng(12)
    B = rng.normal(size=(6, 6))
    Q, a = B @ B.T + np.eye(6), rng.normal(size=6)
    opt = ebm.LBFGS(np.zeros(6), lambda x: (-0.5 * (x - a) @ Q @ (x - a), -Q @ (x - a)))
    for _ in range(40):
        opt.step()
    assert np.allclose(opt.x, a, atol=1e-8)

    def rosenbrock(v):
        x, y = v
        return -((1 - x) ** 2 + 100 * (y - x * x) ** 2), -np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])

    opt = ebm.LBFGS(np.array([-1.2, 1.0]), rosenbrock)
    for _ in range(200):
        if not opt.step():
            break
    assert np.allclose(opt.x, [1.0, 1.0], atol=1e-6)


def small_problem(seed=13, n=300):
    rng = np.random.default_rng(seed)
    draw = lambda m: torch.tensor(gmm_em.sample(m, MEANS, WEIGHTS, rng)[0], dtype=torch.float32)
    sample = lambda x: ebm.Sample(x, torch.tensor(gmm_em.log_prob(x.double().numpy(), MEANS, WEIGHTS),
                                                  dtype=torch.float32))
    train, val, prop, vprop = draw(n), draw(n), sample(draw(1000)), sample(draw(2000))
    return ebm.is_objective(train, prop), ebm.is_score(val, vprop)


def test_training_raises_the_validation_likelihood_and_keeps_the_best_iterate():
    objective, score = small_problem()
    run = ebm.train(ebm.Run(ebm.Energy(16, 1.0, torch.Generator().manual_seed(13))), objective, score, 80,
                    eval_every=5)
    assert run.val_ll[-1] > run.val_ll[0] + 5.0 and run.best_val == max(run.val_ll)
    assert math.isclose(score(ebm.restore_best(run)), run.best_val, abs_tol=1e-6)  # the kept weights


def test_training_resumes_exactly_where_it_stopped():
    objective, score = small_problem()
    make = lambda: ebm.Run(ebm.Energy(8, 1.0, torch.Generator().manual_seed(14)))
    straight = ebm.train(make(), objective, score, 40)
    paused = ebm.train(ebm.train(make(), objective, score, 20), objective, score, 40)
    assert paused.iterations == straight.iterations == 40
    assert all(torch.equal(p, q) for p, q in zip(paused.energy.parameters(), straight.energy.parameters()))


def test_patience_ends_a_run_whose_score_has_stopped_improving():
    objective, _ = small_problem()
    calls = iter(range(10**6))
    falling = lambda energy: -float(next(calls))  # every new score is worse than the first
    run = ebm.train(ebm.Run(ebm.Energy(4, 1.0, torch.Generator().manual_seed(15))), objective, falling, 500,
                    eval_every=10, patience=30)
    assert run.stopped and run.iterations == 30 and run.best_iteration == 0


# ---- sampling from the model -------------------------------------------------------------------------

def test_mala_samples_a_gaussian_energy_with_the_target_acceptance():
    energy, _ = gaussian_energy(b=0.0, tau=3.0)  # p = N(0, 9 I)
    x0 = torch.zeros(4000, 2, dtype=torch.float64)
    x, rate, _ = ebm.mala(energy, x0, 150, torch.Generator().manual_seed(16), adapt=100)
    # 4000 independent chains: the mean has s.e. 3 / sqrt(4000) = 0.047 per coordinate and the
    # variance s.e. 9 sqrt(2 / 4000) = 0.20; 4 s.e. each
    assert np.abs(x.mean(0).numpy()).max() < 4 * 0.047
    assert np.abs(x.var(0).numpy() - 9.0).max() < 4 * 0.20
    assert abs(rate - 0.574) < 0.05


def test_mala_leaves_the_learned_model_where_it_is(quick):
    # started from exact draws of the learned energy, the chains must still be exact draws
    energy = ebm.load_energy(quick / "ebm_energy.pt")
    g = torch.Generator().manual_seed(17)
    start = ebm.sample_grid(energy, 20.0, 0.1, 3000, g).float()
    x, _, _ = ebm.mala(energy, start, 100, g, adapt=50)
    fresh = ebm.sample_grid(energy, 20.0, 0.1, 3000, g).numpy()
    x = x.double().numpy()
    for f in (lambda a: np.linalg.norm(a, axis=1), lambda a: np.arctan2(a[:, 1], a[:, 0])):
        assert ebm.ks_two_sample(f(x), f(fresh))[1] > 1e-3  # a wrong sampler gives p ~ 0


def test_grid_draws_have_the_gaussian_moments():
    energy, _ = gaussian_energy(b=1.0, tau=3.0)
    x = ebm.sample_grid(energy, 20.0, 0.1, 20_000, torch.Generator().manual_seed(18)).numpy()
    # s.e. of the variance 9 sqrt(2 / 20000) = 0.09 (plus step^2 / 12 = 0.0008 from the cells)
    assert np.abs(x.var(0) - 9.0).max() < 0.4 and np.abs(x.mean(0)).max() < 0.1


def test_ks_two_sample_matches_scipy():
    rng = np.random.default_rng(19)
    a, b = rng.normal(size=700), rng.normal(size=900) + 0.1
    d, p = ebm.ks_two_sample(a, b)
    assert math.isclose(d, stats.ks_2samp(a, b).statistic, abs_tol=1e-12)
    # the p-value is Kolmogorov's limiting law at the effective size m n / (m + n)
    assert math.isclose(p, stats.kstwobign.sf(math.sqrt(700 * 900 / 1600) * d), rel_tol=1e-9)


def test_save_and_load_round_trip(tmp_path):
    energy = random_energy(20).float()
    ebm.save_energy(energy, tmp_path / "e.pt")
    loaded = ebm.load_energy(tmp_path / "e.pt")
    x = torch.randn(20, 2)
    with torch.no_grad():
        assert torch.equal(energy(x), loaded(x)) and loaded.tau == energy.tau
