"""The importance-sampled log-partition and its gradient, against autograd, a naive loop,
grid quadrature and a closed form. Exact identities are checked in float64 at 1e-10;
Monte Carlo claims are seeded and bounded by a few standard errors."""
import math

import numpy as np
import pytest
import torch

import ebm
import gmm_em

MEANS, WEIGHTS = gmm_em.ring_means(10, 10.0), gmm_em.uniform_weights(10)


def proposal(M, seed):
    x, _ = gmm_em.sample(M, MEANS, WEIGHTS, np.random.default_rng(seed))
    return torch.tensor(x), torch.tensor(gmm_em.log_prob(x, MEANS, WEIGHTS))


def random_energy(seed, hidden=16, tau=1.0, scale=1.0):
    torch.manual_seed(seed)
    energy = ebm.Energy(hidden, tau).double()
    with torch.no_grad():
        for p in energy.parameters():
            p.mul_(scale)
    return energy


def gaussian_energy(b):
    """net = b (output weights zero): E = b - ||x||^2 / (2 tau^2), A = b + log(2 pi tau^2)."""
    energy = random_energy(0, tau=3.0)
    with torch.no_grad():
        energy.out.weight.zero_()
        energy.out.bias.fill_(b)
    return energy, b + math.log(2 * math.pi * 9.0)


def test_is_gradient_equals_autograd_of_log_partition_estimate():
    energy = random_energy(1)
    x, log_q = proposal(500, 1)
    explicit = ebm.grad_log_partition_is(energy, x, log_q)
    autograd = torch.autograd.grad(ebm.log_partition_is(energy, x, log_q), list(energy.parameters()))
    for a, b in zip(explicit, autograd):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_is_gradient_equals_a_naive_ratio_of_sums():
    # F_hat = N_hat / D_hat with N_hat, D_hat the plain averages of the assignment, one
    # per-sample gradient at a time (no softmax, no detaching): an independent route.
    energy = random_energy(2, hidden=4)
    x, log_q = proposal(60, 2)
    params = list(energy.parameters())
    num = [torch.zeros_like(p) for p in params]
    den = 0.0
    for m in range(60):
        e = energy(x[m:m + 1])[0]
        ratio = torch.exp(e - log_q[m]).item()
        for acc, g in zip(num, torch.autograd.grad(e, params)):
            acc += g * ratio / 60
        den += ratio / 60
    for a, b in zip(ebm.grad_log_partition_is(energy, x, log_q), num):
        assert torch.allclose(a, b / den, rtol=1e-9, atol=1e-12)


def test_surrogate_loss_gradient_is_minus_the_objective_gradient():
    energy = random_energy(3)
    x, log_q = proposal(400, 3)
    data = torch.tensor(gmm_em.sample(100, MEANS, WEIGHTS, np.random.default_rng(30))[0])
    params = list(energy.parameters())
    g_sur = torch.autograd.grad(ebm.surrogate_loss(energy, data, x, log_q), params)
    objective = energy(data).mean() - ebm.log_partition_is(energy, x, log_q)
    for a, b in zip(g_sur, torch.autograd.grad(objective, params)):
        assert torch.allclose(a, -b, rtol=1e-10, atol=1e-12)


def test_grid_and_is_recover_a_closed_form_partition_function():
    energy, exact = gaussian_energy(b=0.7)
    assert math.isclose(ebm.log_partition_grid(energy, 20.0, 0.05), exact, abs_tol=1e-10)
    # q (the ring) and p (N(0, 9 I)) overlap well enough that 2e5 draws give a ~1e-2 error.
    x, log_q = proposal(200_000, 4)
    a_hat = float(ebm.log_partition_is(energy, x, log_q).detach())
    lw = ebm.log_weights(energy, x, log_q).detach()
    se = math.sqrt(1.0 / ebm.effective_sample_size(lw))  # delta method: Var log Z_hat <= 1/ESS
    assert abs(a_hat - exact) < 4 * se


def test_closed_form_gradient_of_a_gaussian_energy():
    # dA/d(out.bias) = E_p[1] = 1 exactly, by every estimator
    energy, _ = gaussian_energy(b=-2.0)
    x, log_q = proposal(1000, 5)
    grads = dict(zip([n for n, _ in energy.named_parameters()], ebm.grad_log_partition_is(energy, x, log_q)))
    assert math.isclose(float(grads["out.bias"]), 1.0, abs_tol=1e-12)


def grid_reference(energy, half_width=20.0, step=0.05):
    """A and grad A = E_p grad E by quadrature (midpoint rule, float64)."""
    n = int(2 * half_width / step)
    axis = -half_width + step * (torch.arange(n, dtype=torch.float64) + 0.5)
    g = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    e = energy(g)
    A = torch.logsumexp(e, 0) + 2 * math.log(step)
    return float(A.detach()), torch.autograd.grad(A, list(energy.parameters()))


def gaussian_proposal(M, seed, s=6.0):
    """q = N(0, s^2 I), heavier-tailed than exp(E) with tau = 3, so the weights are bounded."""
    x = torch.tensor(np.random.default_rng(seed).normal(size=(M, 2)) * s)
    return x, -math.log(2 * math.pi * s * s) - (x * x).sum(1) / (2 * s * s)


def test_is_estimates_converge_to_quadrature_as_M_grows():
    energy = random_energy(6, tau=3.0)
    A_ref, g_ref = grid_reference(energy)
    assert math.isclose(ebm.log_partition_grid(energy, 20.0, 0.05), A_ref, abs_tol=1e-9)
    errors = []
    for M in (300, 3_000, 300_000):
        a_err, g_err = [], []
        for seed in range(4):  # average over draws: a single draw can be lucky
            x, log_q = gaussian_proposal(M, 100 + seed)
            a_err.append(abs(float(ebm.log_partition_is(energy, x, log_q).detach()) - A_ref))
            g = ebm.grad_log_partition_is(energy, x, log_q)
            g_err.append(math.sqrt(sum(float(((a - b) ** 2).sum()) for a, b in zip(g, g_ref))))
        errors.append((np.mean(a_err), np.mean(g_err)))
    (a0, g0), (a1, g1), (a2, g2) = errors
    assert a2 < a1 < a0 and g2 < g1 < g0
    assert a2 < 0.01 and g2 < 0.05 * math.sqrt(sum(float((g ** 2).sum()) for g in g_ref))


@pytest.mark.parametrize("scale", [1.0, 5.0])
def test_every_energy_is_normalisable(scale):
    # Large weights give a net that grows fast along some ray; the quadratic term still wins,
    # so A is finite and stops moving once the box holds the mass.
    energy = random_energy(7, scale=scale)
    a20 = ebm.log_partition_grid(energy, 20.0 * scale, 0.05 * scale)
    a40 = ebm.log_partition_grid(energy, 40.0 * scale, 0.05 * scale)
    assert math.isfinite(a20) and math.isclose(a20, a40, abs_tol=1e-8)


def test_streamed_fresh_is_matches_one_batch():
    energy = random_energy(8)
    x, log_q = proposal(10_000, 8)
    chunks = iter(zip(x.split(1024), log_q.split(1024)))
    a, ess, jensen = ebm.log_partition_is_stream(energy, lambda m: next(chunks), 10_000, chunk=1024)
    lw = ebm.log_weights(energy, x, log_q).detach()
    assert math.isclose(a, float(ebm.log_partition_is(energy, x, log_q).detach()), abs_tol=1e-10)
    assert math.isclose(ess, ebm.effective_sample_size(lw), rel_tol=1e-9)
    assert math.isclose(jensen, float(lw.mean()), abs_tol=1e-10) and jensen <= a


def test_effective_sample_size_limits():
    assert math.isclose(ebm.effective_sample_size(torch.zeros(50, dtype=torch.float64)), 50.0)
    one_hot = torch.tensor([0.0] + [-1e4] * 49, dtype=torch.float64)
    assert math.isclose(ebm.effective_sample_size(one_hot), 1.0)


def test_training_raises_the_validation_likelihood_and_keeps_the_best_step():
    rng = np.random.default_rng(9)
    draw = lambda n: torch.tensor(gmm_em.sample(n, MEANS, WEIGHTS, rng)[0], dtype=torch.float32)
    lq = lambda x: torch.tensor(gmm_em.log_prob(x.double().numpy(), MEANS, WEIGHTS), dtype=torch.float32)
    train, val, prop, vprop = draw(300), draw(300), draw(1000), draw(2000)
    torch.manual_seed(9)
    energy = ebm.Energy(16, 1.0)
    hist = ebm.train(energy, train, prop, lq(prop), val, vprop, lq(vprop), steps=300, lr=2e-2,
                     eval_every=25, log=None)
    assert hist.val_ll[-1] > hist.val_ll[0] + 5.0
    best = hist.val_ll[hist.steps.index(hist.best_step)]
    assert best == max(hist.val_ll)
    with torch.no_grad():  # the restored weights are the best step's
        restored = float(energy(val).mean() - ebm.log_partition_is(energy, vprop, lq(vprop)))
    assert math.isclose(restored, best, abs_tol=1e-5)


def test_save_and_load_round_trip(tmp_path):
    energy = random_energy(10).float()
    ebm.save_energy(energy, tmp_path / "e.pt")
    loaded = ebm.load_energy(tmp_path / "e.pt")
    x = torch.randn(20, 2)
    with torch.no_grad():
        assert torch.equal(energy(x), loaded(x))


def test_cosine_adam_matches_torch_optim_step_for_step():
    torch.manual_seed(11)
    x = torch.randn(64, 2, dtype=torch.float64)
    ours, ref = random_energy(11), random_energy(11)
    opt = ebm.CosineAdam(ours.parameters(), lr=0.05, steps=40)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=40)
    for _ in range(40):
        for model, o in ((ours, opt), (ref, ref_opt)):
            o.zero_grad()
            (model(x) ** 2).mean().backward()
            o.step()
        sched.step()
    for a, b in zip(ours.parameters(), ref.parameters()):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
