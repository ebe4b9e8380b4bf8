"""Section 2 (the variational bounds in VI.py) against independent references.

Tolerances: 1e-10 and tighter compare two exact computations of the same quantity, so only
round-off separates them (the terms are at most a few hundred nats, float64 round-off on them is
~1e-13). Quadrature references get 1e-8 (scipy.integrate.quad's own accuracy). Seeded Monte
Carlo checks use a few standard errors, stated beside each.
"""

import json

import numpy as np
import pytest
from scipy import integrate
from scipy.stats import entropy, norm

import gmm_em
import VI

SECTION2_FIGURES = ("kl", "elbo_points", "elbo_K", "iwae")
SECTION2_MACROS = (
    "klPQ",
    "klQP",
    "fwdMu",
    "fwdSd",
    "revMu",
    "revSd",
    "viUnifBig",
    "viPostBig",
    "viLogpBig",
    "viGapBig",
    "viUnifSmall",
    "viPostSmall",
    "viLogpSmall",
    "viGapSmall",
    "viRingLogp",
    "viUnifLimit",
    "iwaeKmax",
)
CFG = VI.Config()
P = dict(weights=CFG.kl_p_weights, means=CFG.kl_p_means, sds=CFG.kl_p_sds)  # the p of problem 2.2
ring = gmm_em.ring
log_evidence = lambda lj: gmm_em.posterior(lj)[0]


@pytest.fixture(scope="module")
def KL():
    """Problem 2.2 at the default settings, computed once for the tests that read it."""
    return VI.kl_experiment(P, CFG.kl_q, CFG.kl_grid, CFG.kl_starts)


def points(rng, n, R):
    """Mixture draws plus a few off-ring points (the centre, far outside): both regimes."""
    x = gmm_em.sample(n, *ring(7, R), rng)[0]
    return np.vstack([x, [[0.0, 0.0], [0.3, -0.2], [2 * R + 3, 1.0], [-R / 2, R / 3]]])


# ---- problem 2.1: log p = L(q) + KL(q || posterior) ----------------------------------------------


@pytest.mark.parametrize("K, R", [(1, 3.0), (3, 1.0), (10, 1.0), (10, 10.0), (50, 4.0)])
def test_log_p_is_elbo_plus_kl_for_random_q(K, R):
    rng = np.random.default_rng(K)
    x = points(rng, 40, R)
    lj = gmm_em.log_joint(x, *ring(K, R))
    q = rng.dirichlet(np.full(K, 0.5), size=len(x))  # alpha < 1: some tiny q_k, far from uniform
    log_q = np.log(q)
    log_p = gmm_em.log_prob(x, *ring(K, R))
    kl = VI.kl_categorical(log_q, gmm_em.log_responsibilities(x, *ring(K, R)))
    L = VI.elbo(lj, log_q)
    assert np.abs(log_p - (L + kl)).max() < 1e-10
    assert np.all(L <= log_p + 1e-12) and np.all(kl >= -1e-12)  # the bound, and Gibbs' inequality


def test_elbo_matches_a_naive_loop_and_is_tight_at_the_posterior():
    rng = np.random.default_rng(0)
    K, R = 6, 2.0
    x = points(rng, 5, R)
    lj = gmm_em.log_joint(x, *ring(K, R))
    q = rng.dirichlet(np.ones(K), size=len(x))
    naive = [sum(q[i, k] * (lj[i, k] - np.log(q[i, k])) for k in range(K)) for i in range(len(x))]
    assert np.abs(VI.elbo(lj, np.log(q)) - naive).max() < 1e-12
    post = gmm_em.log_responsibilities(x, *ring(K, R))
    assert np.abs(VI.elbo(lj, post) - gmm_em.log_prob(x, *ring(K, R))).max() < 1e-10


def test_zero_weights_contribute_nothing():
    # one-hot q: L = log p(x, k); a component with pi_k = 0 (log p(x, k) = -inf) under q_k = 0
    x = np.array([[1.0, 2.0], [-3.0, 0.5]])
    means, w = ring(4, 2.0)
    w = np.array([0.5, 0.5, 0.0, 0.0])
    lj = gmm_em.log_joint(x, means, w)
    with np.errstate(divide="ignore"):
        log_q = np.log(np.array([0.0, 1.0, 0.0, 0.0]))
    L = VI.elbo(lj, np.broadcast_to(log_q, lj.shape))
    assert np.all(np.isfinite(L)) and np.allclose(L, lj[:, 1], atol=1e-14, rtol=0)


# ---- problem 2.3: the two choices of q -----------------------------------------------------------


@pytest.mark.parametrize("R", [1.0, 10.0])
def test_uniform_closed_form_is_the_generic_elbo_and_independent_of_K(R):
    rng = np.random.default_rng(2)
    x = points(rng, 50, R)
    for K in (2, 3, 5, 10, 37, 200):
        means, w = ring(K, R)
        generic = VI.elbo(gmm_em.log_joint(x, means, w), np.full(K, -np.log(K)))
        assert np.abs(VI.elbo_uniform_closed(x, means) - generic).max() < 1e-10
        assert np.abs(VI.elbo_uniform_ring(x, R) - generic).max() < 1e-10
    # K = 1 is the exception: one centre does not sum to zero, so x . mu_1 survives
    one = VI.elbo_uniform_closed(x, gmm_em.ring_means(1, R))
    assert np.abs(one - VI.elbo_uniform_ring(x, R)).max() > 1.0


@pytest.mark.parametrize("R", [1.0, 3.0])
def test_gap_of_the_uniform_bound_is_kl_from_uniform_to_the_posterior(R):
    # scipy.stats.entropy(pk, qk) = KL(pk || qk) is the independent reference; at moderate R the
    # posterior does not underflow, so probabilities are safe to hand to it
    rng = np.random.default_rng(3)
    K = 10
    x = points(rng, 30, R)
    b = VI.bounds(x, gmm_em.ring_means(K, R))
    post = np.exp(gmm_em.log_responsibilities(x, *ring(K, R)))
    reference = np.array([entropy(np.full(K, 1 / K), p) for p in post])
    assert np.abs(b["gap"] - reference).max() < 1e-10
    assert np.abs(b["gap"] - b["kl_unif_post"]).max() < 1e-10


def test_bounds_at_R10_gap_equals_kl_even_where_the_posterior_underflows():
    rng = np.random.default_rng(4)
    x = points(rng, 100, 10.0)  # 100 mixture draws, then x = 0 and three more off-ring points
    b = VI.bounds(x, gmm_em.ring_means(10, 10.0))
    assert np.all(np.isfinite(b["gap"])) and b["gap"][:100].min() > 10  # far centres cost ~R^2
    assert abs(b["gap"][100]) < 1e-12  # at the ring's centre the posterior is uniform: no gap
    assert np.abs(b["gap"] - b["kl_unif_post"]).max() < 1e-10
    assert np.abs(b["post"] - b["log_p"]).max() < 1e-10


# ---- problem 2.4: K -> infinity ------------------------------------------------------------------


def ring_log_density_by_quadrature(x, R):
    """log (1/2 pi) int_0^2pi N(x; R e(theta), I) dtheta, no Bessel function involved; the
    integrand is divided by its peak (theta = angle of x) so nothing overflows."""
    r, phi = np.hypot(*x), np.arctan2(x[1], x[0])
    excess = lambda t: (r * r + R * R - 2 * R * r * np.cos(t - phi)) - (r - R) ** 2  # >= 0
    val, _ = integrate.quad(
        lambda t: np.exp(-0.5 * excess(t)),
        phi - np.pi,
        phi + np.pi,
        points=[phi],
        epsabs=0,
        epsrel=1e-13,
        limit=200,
    )
    return -gmm_em.LOG_2PI - 0.5 * (r - R) ** 2 + np.log(val / (2 * np.pi))


@pytest.mark.parametrize(
    "x, R",
    [
        ([0.0, 0.0], 3.0),
        ([0.4, -0.1], 1.0),
        ([2.0, 1.0], 3.0),
        ([9.0, -4.0], 10.0),
        ([-30.0, 20.0], 30.0),
    ],
)
def test_ring_density_matches_quadrature(x, R):
    # the last case has R ||x|| ~ 1082: I_0 itself overflows there, i0e does not
    x = np.array(x)
    assert abs(VI.ring_log_density(x[None], R)[0] - ring_log_density_by_quadrature(x, R)) < 1e-8


def test_naive_bessel_overflows_where_the_scaled_one_does_not():
    z = np.array([1e3])
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.log(np.i0(z)))[0]
    assert (
        np.isfinite(VI.log_i0(z)[0])
        and abs(VI.log_i0(z)[0] - (z[0] - 0.5 * np.log(2 * np.pi * z[0]))) < 1e-3
    )


def test_mixture_log_density_converges_to_the_ring_limit():
    rng = np.random.default_rng(5)
    R = 3.0
    x = rng.uniform(-3.5, 3.5, size=(200, 2))  # R ||x|| <= 15: the Riemann sum over angles
    limit = VI.ring_log_density(x, R)  # converges like (R||x||/2)^K / K!
    err = lambda K: np.abs(gmm_em.log_prob(x, *ring(K, R)) - limit).max()
    assert err(200) < 1e-8
    assert err(10) > 1e-6  # not yet: the test can tell converged from unconverged


def test_limit_experiment_uniform_bound_is_flat_and_posterior_is_exact():
    cfg = VI.Config(n=300, K_max=300)
    data = VI.make_data(cfg)
    Ks = VI.limit_K_values(cfg.K_max, cfg.limit_num_K)
    res = VI.limit_experiment(
        data["test"], data["test_small"], cfg.R, cfg.R_small, Ks, cfg.limit_points
    )
    assert res["K"][0] == 2 and res["K"][-1] == 300 and len(set(res["K"])) == len(res["K"])
    assert res["unif_err_max"] < 1e-10 and res["post_err_max"] < 1e-10
    assert np.ptp(res["unif"]) < 1e-10
    assert abs(res["log_p"][-1] - res["sweep_ring_log_p"]) < 1e-10  # K = 300 is at the limit
    # the gap tends to the mean of log I_0(R ||x||)
    x = data["test"]
    assert abs(res["gap_limit"] - VI.log_i0(cfg.R * np.linalg.norm(x, axis=1)).mean()) < 1e-10


# ---- problem 2.2: the two KL divergences by quadrature -------------------------------------------


def test_grid_kl_matches_the_gaussian_closed_form():
    t = VI.kl_axis(-30, 30, 0.01)
    m1, s1, m2, s2 = 0.3, 0.7, -1.2, 2.1
    exact = np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
    got = VI.kl_grid(norm.logpdf(t, m1, s1), norm.logpdf(t, m2, s2), 0.01)
    assert abs(got - exact) < 1e-10


def test_kl_pair_is_converged_and_strongly_asymmetric(KL):
    res = KL
    assert res["grid_delta"] < 1e-6  # halving the step does not move either KL
    lo, hi, step = CFG.kl_grid
    p, q = P, CFG.kl_q
    t = VI.kl_axis(1.5 * lo, 1.5 * hi, step)  # nor does a wider box
    log_p, log_q = VI.mixture_1d_log_pdf(t, **p), norm.logpdf(t, *q)
    assert abs(VI.kl_grid(log_p, log_q, step) - res["kl_pq"]) < 1e-6
    assert abs(VI.kl_grid(log_q, log_p, step) - res["kl_qp"]) < 1e-6
    assert res["kl_pq"] > 20 * res["kl_qp"] and res["kl_pq"] > 10


def test_forward_kl_fit_is_moment_matching(KL):
    f = KL["forward"]
    # independent reference: p's mean and sd by quadrature on the grid
    lo, hi, step = CFG.kl_grid
    t = VI.kl_axis(lo, hi, step)
    p = np.exp(VI.mixture_1d_log_pdf(t, **P)) * step
    mean = (t * p).sum()
    assert abs(f["mu"] - mean) < 1e-9 and abs(f["sd"] - np.sqrt(((t - mean) ** 2 * p).sum())) < 1e-9
    # and the numerical minimiser of the quadrature KL(p || q) lands there (BFGS tolerance)
    assert abs(f["numeric_mu"] - f["mu"]) < 1e-5 and abs(f["numeric_sd"] - f["sd"]) < 1e-5


@pytest.mark.parametrize("reverse", [True, False])
@pytest.mark.parametrize("theta", [(1.3, np.log(2.1)), (-6.2, np.log(0.5)), (20.0, np.log(4.0))])
def test_the_kl_fits_gradient_is_the_central_difference_of_its_kl(reverse, theta):
    t, step = VI.kl_axis(-30.0, 30.0, 0.01), 0.01
    log_p = VI.mixture_1d_log_pdf(t, **P)
    _, grad = VI.gaussian_kl(np.array(theta), log_p, t, step, reverse)
    h = 1e-6
    kl = lambda th: VI.gaussian_kl(th, log_p, t, step, reverse)[0]
    numeric = [(kl(theta + h * e) - kl(theta - h * e)) / (2 * h) for e in np.eye(2)]
    # central differences in float64: error about h^2 KL''' + 1e-16 KL / h, below 1e-8 here
    assert np.allclose(grad, numeric, rtol=1e-6, atol=1e-8), (grad, numeric)


def test_reverse_kl_has_one_optimum_per_mode_costing_minus_log_weight(KL):
    res = KL
    optima = res["reverse_optima"]
    assert len(optima) == len(P["means"])
    for o, m, s, w in zip(optima, P["means"], P["sds"], P["weights"], strict=True):
        # q on one well separated mode: KL(q || p) = -log w_k + the overlap with the other
        # modes, which is below 1e-2 nats for modes 6 apart with sds <= 1
        assert (
            abs(o["mu"] - m) < 0.05 and abs(o["sd"] - s) < 0.05 and abs(o["kl"] + np.log(w)) < 1e-2
        )
    assert res["reverse_best"]["mu"] == optima[int(np.argmax(P["weights"]))]["mu"]


# ---- beyond: the importance-weighted bound -------------------------------------------------------


def iwae_setup(R, n=60, K=10, seed=6):
    x = gmm_em.sample(n, *ring(K, R), np.random.default_rng(seed))[0]
    return gmm_em.log_joint(x, *ring(K, R)), np.full(K, -np.log(K))


def mean_and_se(s):
    """Mean over points and replicates; its Monte Carlo s.e. (points fixed, per-point variances
    add)."""
    return s.mean(), np.sqrt(s.var(1, ddof=1).sum() / s.shape[1]) / s.shape[0]


@pytest.mark.parametrize("R", [1.0, 10.0])
def test_iwae_with_one_sample_estimates_the_elbo(R):
    lj, log_q = iwae_setup(R)
    m, se = mean_and_se(VI.iwae_samples(lj, log_q, 1, 2000, np.random.default_rng(7)))
    assert abs(m - VI.elbo(lj, log_q).mean()) < 4 * se  # 4 s.e.: fails by chance ~6e-5 of seeds


@pytest.mark.parametrize("k", [2, 5])
def test_count_sampler_matches_naive_iid_draws(k):
    # reference: draw the k indices themselves and average the weights
    lj, log_q = iwae_setup(3.0)
    n, K = lj.shape
    reps = 3000
    rng = np.random.default_rng(8)
    z = rng.integers(K, size=(n, reps, k))
    log_w = (
        np.take_along_axis(lj[:, None, :], z.reshape(n, -1)[:, None, :], 2).reshape(n, reps, k)
        - log_q[0]
    )
    from scipy.special import logsumexp

    naive = logsumexp(log_w, axis=-1) - np.log(k)
    m1, se1 = mean_and_se(naive)
    m2, se2 = mean_and_se(VI.iwae_samples(lj, log_q, k, reps, rng))
    assert abs(m1 - m2) < 4 * np.hypot(se1, se2)  # two independent estimates of the same mean


@pytest.mark.parametrize("R", [1.0, 10.0])
def test_iwae_increases_with_k_and_stays_below_log_p(R):
    lj, log_q = iwae_setup(R, n=100)
    log_p = log_evidence(lj).mean()
    rng = np.random.default_rng(9)
    est = {k: mean_and_se(VI.iwae_samples(lj, log_q, k, 1000, rng)) for k in (1, 8, 64, 512)}
    ks = sorted(est)
    for a, b in zip(ks, ks[1:]):
        # k eight-fold apart: the expected rise is at least ~8x its s.e. here (at R = 1 from
        # 64 to 512 about 0.0045 nats against s.e. 0.0005), so 3 s.e. is a reliable threshold
        # that a non-increasing L_k (e.g. a mean of log weights) would fail
        assert est[b][0] - est[a][0] > 3 * np.hypot(est[a][1], est[b][1])
    for m, se in est.values():
        assert m < log_p + 4 * se


def test_iwae_gap_follows_the_delta_method_for_large_k():
    lj, log_q = iwae_setup(10.0, n=100)
    log_p = log_evidence(lj)
    c = VI.iwae_gap_coefficient(lj - log_p[:, None], log_q).mean()
    assert abs(c - 4.5) < 0.05  # R = 10: posterior ~ one-hot, Var(w) = K - 1 = 9
    k = 1024
    m, se = mean_and_se(VI.iwae_samples(lj, log_q, k, 2000, np.random.default_rng(10)))
    gap = log_p.mean() - m
    # s.e. is ~2% of the gap; the next term of the expansion is O(1/k^2), about 10% here
    assert abs(gap * k / c - 1) < 0.25 and se < 0.05 * gap


def test_iwae_experiment_is_deterministic_for_a_seed():
    x = gmm_em.sample(50, *ring(10, 10.0), np.random.default_rng(0))[0]
    a = VI.iwae_experiment(x, 10.0, 10, 64, 50, np.random.default_rng(11))
    b = VI.iwae_experiment(x, 10.0, 10, 64, 50, np.random.default_rng(11))
    assert a == b


# ---- the driver ----------------------------------------------------------------------------------


def test_quick_run_has_every_section2_figure_and_macro(quick):
    for name in SECTION2_FIGURES:
        for ext in ("pdf", "png"):
            assert (quick / f"{name}.{ext}").stat().st_size > 1000, name
    results = json.loads((quick / "results.json").read_text(encoding="utf-8"))
    from theory import macros as write_up

    macros = write_up.macros_of(results)
    assert set(SECTION2_MACROS) <= set(macros)
    tex = (quick / "results.tex").read_text(encoding="utf-8")
    assert all(f"\\newcommand{{\\{name}}}" in tex for name in SECTION2_MACROS)
    num = lambda name: float(macros[name])
    # the same quantity reached two ways: rounding (3 decimals) is the only difference
    assert abs(num("viUnifBig") - num("viUnifLimit")) < 1.1e-3
    assert num("viPostBig") == num("viLogpBig") and num("viPostSmall") == num("viLogpSmall")
    vi = results["vi"]
    assert {"kl", "elbo", "limit", "iwae"} <= vi.keys()
    assert (
        max(
            vi["elbo"][r][key]
            for r in ("big", "small")
            for key in ("gap_kl_err", "closed_err", "post_err")
        )
        < 1e-10
    )


@pytest.mark.parametrize("R", [1.0, 10.0])
def test_population_gap_by_quadrature_matches_a_large_sample(R):
    # the midpoint rule against a Monte Carlo mean of 200 000 draws (4 s.e.)
    rng = np.random.default_rng(12)
    x = gmm_em.sample(200_000, *ring(10, R), rng)[0]
    gap = VI.bounds(x, gmm_em.ring_means(10, R))["gap"]
    assert abs(VI.expected_gap_quadrature(R, 10) - gap.mean()) < 4 * gap.std() / np.sqrt(len(gap))
    # and the bound R^2 - log K <= E[gap] <= R^2 of the text
    assert R**2 - np.log(10) <= VI.expected_gap_quadrature(R, 10) <= R**2


def test_the_bessel_ratio_bound_of_the_ring_expansion():
    # theory.pdf (A.1): 0 <= I_nu(rho) / I_0(rho) <= (rho/2)^nu / nu!, which 1.2 quotes at K = 10,
    # rho = 4; against scipy's Bessel functions in float64, and tight as rho -> 0 (its leading term)
    import math

    from scipy.special import ive

    for nu in range(1, 31):
        bound = lambda rho, nu=nu: (rho / 2) ** nu / math.factorial(nu)
        for rho in np.linspace(0.01, 12.0, 60):
            ratio = ive(nu, rho) / ive(0, rho)  # the scaling e^-rho cancels
            assert 0 <= ratio <= bound(rho) * (1 + 1e-12), (nu, rho)
        assert ive(nu, 1e-3) / ive(0, 1e-3) / bound(1e-3) > 0.999
