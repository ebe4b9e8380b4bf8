"""The mixture's density, sampling and EM against independent references.

Tolerances: 1e-10 and tighter compare two exact computations of the same quantity (only
round-off separates them); seeded statistical checks use bounds of several standard errors,
stated beside each.
"""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

import gmm_em


def test_ring_means_are_on_the_circle_at_the_stated_angles():
    means, weights = gmm_em.ring(10, 10.0)
    assert np.array_equal(means, gmm_em.ring_means(10, 10.0)) and np.allclose(weights, 0.1)
    mu = gmm_em.ring_means(10, 10.0)
    assert np.allclose(np.linalg.norm(mu, axis=1), 10.0)
    assert np.allclose(mu[-1], [10.0, 0.0])  # k = K is the angle 2 pi
    assert np.allclose(mu[0], 10.0 * np.array([np.cos(2 * np.pi / 10), np.sin(2 * np.pi / 10)]))


def test_sampling_statistics():
    rng = np.random.default_rng(1)
    K, n = 5, 200_000
    mu, w = gmm_em.ring_means(K, 4.0), np.array([0.1, 0.2, 0.3, 0.15, 0.25])
    x, z = gmm_em.sample(n, mu, w, rng)
    freq = np.bincount(z, minlength=K) / n
    assert np.all(np.abs(freq - w) < 5 * np.sqrt(w * (1 - w) / n))  # 5 binomial s.e.
    for k in range(K):
        xk = x[z == k]
        assert np.all(np.abs(xk.mean(0) - mu[k]) < 5 / np.sqrt(len(xk)))  # 5 s.e. of a mean
        assert np.allclose(np.cov(xk.T), np.eye(2), atol=6 * np.sqrt(2 / len(xk)))


def test_log_prob_matches_scipy():
    rng = np.random.default_rng(2)
    mu, w = rng.normal(size=(4, 2)) * 3, rng.dirichlet(np.ones(4))
    x = rng.normal(size=(50, 2)) * 4
    ref = np.log(sum(w[k] * multivariate_normal(mu[k], np.eye(2)).pdf(x) for k in range(4)))
    assert np.allclose(gmm_em.log_prob(x, mu, w), ref, rtol=0, atol=1e-12)


def test_log_prob_is_finite_far_from_every_centre():
    # exp(-||x - mu||^2 / 2) underflows to 0 at distance 40; the log-space sum must not.
    mu, w = gmm_em.ring_means(10, 10.0), gmm_em.uniform_weights(10)
    lp = gmm_em.log_prob(np.array([[60.0, 0.0]]), mu, w)
    assert np.isfinite(lp).all()
    assert np.isclose(
        lp[0], np.log(0.1) - np.log(2 * np.pi) - 0.5 * 50.0**2, atol=1e-9
    )  # nearest centre


def test_responsibilities_sum_to_one_and_match_bayes_rule():
    rng = np.random.default_rng(3)
    mu, w = gmm_em.ring_means(6, 2.0), rng.dirichlet(np.ones(6))
    x = rng.normal(size=(30, 2)) * 3
    r = np.exp(gmm_em.log_responsibilities(x, mu, w))
    assert np.allclose(r.sum(1), 1.0, atol=1e-12)
    joint = np.stack([w[k] * multivariate_normal(mu[k], np.eye(2)).pdf(x) for k in range(6)], 1)
    assert np.allclose(r, joint / joint.sum(1, keepdims=True), atol=1e-12)


def test_m_step_is_the_weighted_average_of_a_naive_loop():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 2))
    log_resp = gmm_em.log_responsibilities(x, rng.normal(size=(3, 2)), np.full(3, 1 / 3))
    means, weights = gmm_em.m_step(x, log_resp)
    r = np.exp(log_resp)
    for k in range(3):
        num = sum(r[i, k] * x[i] for i in range(40))
        assert np.allclose(means[k], num / sum(r[i, k] for i in range(40)), atol=1e-12)
        assert np.isclose(weights[k], sum(r[i, k] for i in range(40)) / 40, atol=1e-12)


def test_m_step_maximises_the_expected_complete_log_likelihood():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 2)) * 2
    log_resp = gmm_em.log_responsibilities(x, rng.normal(size=(3, 2)), np.full(3, 1 / 3))
    q = lambda m, w: (np.exp(log_resp) * gmm_em.log_joint(x, m, w)).sum()
    means, weights = gmm_em.m_step(x, log_resp)
    best = q(means, weights)
    for _ in range(200):  # random feasible perturbations never do better
        m = means + 0.05 * rng.normal(size=means.shape)
        w = rng.dirichlet(200 * weights)
        assert q(m, w) <= best + 1e-12


def test_a_component_with_no_data_keeps_finite_parameters():
    x = np.array([[0.0, 0.0], [0.1, 0.0]])
    log_resp = np.array([[0.0, -np.inf], [0.0, -np.inf]])  # all mass on component 0
    means, weights = gmm_em.m_step(x, log_resp)
    assert np.isfinite(means).all() and weights[1] == 0.0


@pytest.mark.parametrize("R", [1.0, 10.0])
@pytest.mark.parametrize("accelerate", [False, True])
def test_em_never_decreases_the_log_likelihood(R, accelerate):
    rng = np.random.default_rng(6)
    mu, w = gmm_em.ring_means(10, R), gmm_em.uniform_weights(10)
    x, _ = gmm_em.sample(500, mu, w, rng)
    fit = gmm_em.em(
        x, x[rng.choice(500, 10, replace=False)], tol=1e-10, max_maps=300, accelerate=accelerate
    )
    assert np.all(np.diff(fit.history) >= -1e-12)  # round-off only
    assert np.isclose(fit.weights.sum(), 1.0) and np.all(fit.weights >= 0)


def test_accelerated_em_reaches_plain_ems_fixed_point_in_far_fewer_iterations():
    # overlapping components (R = 1, n = 300): plain EM's rate is close to one
    rng = np.random.default_rng(14)
    x, _ = gmm_em.sample(300, *gmm_em.ring(5, 1.0), rng)
    start = x[rng.choice(300, 5, replace=False)]
    plain = gmm_em.em(x, start, tol=1e-10, max_maps=100_000, accelerate=False)
    fast = gmm_em.em(x, start, tol=1e-10, max_maps=100_000)
    assert plain.converged and fast.converged and fast.n_iter < plain.n_iter / 5
    assert (
        np.abs(fast.means - plain.means).max() < 1e-5
        and abs(fast.history[-1] - plain.history[-1]) < 1e-10
    )


def test_em_recovers_the_separated_ring():
    # n = 1000, 100 points per component: each mean has s.e. 0.1 per coordinate, so the
    # matched distance averages ~0.125 and rarely exceeds 0.4; pi_k has s.e. 0.0095.
    rng = np.random.default_rng(7)
    mu, w = gmm_em.ring_means(10, 10.0), gmm_em.uniform_weights(10)
    x, _ = gmm_em.sample(1000, mu, w, rng)
    fit = gmm_em.fit_em(x, 10, [np.random.default_rng(70 + r) for r in range(5)])
    err = gmm_em.parameter_errors(fit, mu, w)
    assert fit.converged
    assert err["mean_dist"] < 0.2 and err["max_dist"] < 0.45 and err["max_pi_err"] < 0.04


def test_fit_em_keeps_the_most_likely_restart_and_warns_at_the_cap():
    rng = np.random.default_rng(8)
    x, _ = gmm_em.sample(300, gmm_em.ring_means(10, 1.0), gmm_em.uniform_weights(10), rng)
    fits = [
        gmm_em.em(x, gmm_em.kmeans_pp_init(x, 10, np.random.default_rng(80 + r)), 1e-14, 30)
        for r in range(3)
    ]
    with pytest.warns(RuntimeWarning, match="max_maps"):
        fit = gmm_em.fit_em(
            x, 10, [np.random.default_rng(80 + r) for r in range(3)], tol=1e-14, max_maps=30
        )
    assert not fit.converged and fit.history[-1] == max(f.history[-1] for f in fits)


def test_hungarian_matching_undoes_a_permutation():
    mu = gmm_em.ring_means(7, 5.0)
    perm = np.random.default_rng(9).permutation(7)
    est = mu[perm]
    assert np.allclose(est[gmm_em.match_components(est, mu)], mu)


def test_greedy_seeding_finds_every_separated_cluster_across_datasets():
    # A spare centre cannot cross the empty gap between clusters (Sigma is fixed at I), so
    # EM at R = 10 is only as good as its seeding; plain k-means++ (trials=1) with 5 restarts
    # fails on 2 of these 20 datasets, greedy seeding on none.
    mu, w = gmm_em.ring_means(10, 10.0), gmm_em.uniform_weights(10)
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        x, _ = gmm_em.sample(1000, mu, w, rng)
        fit = gmm_em.fit_em(x, 10, [np.random.default_rng([seed, r]) for r in range(5)])
        assert gmm_em.parameter_errors(fit, mu, w)["mean_dist"] < 0.3, seed


def test_logsumexp_matches_scipy_including_infinite_entries():
    from scipy.special import logsumexp as reference

    rng = np.random.default_rng(10)
    a = rng.normal(size=(30, 7)) * 300  # spreads that overflow a naive exp
    a[3, :] = -np.inf  # a row that is all zero weight
    a[4, 2] = -np.inf
    for axis in (0, 1):
        with np.errstate(divide="ignore"):
            ours, ref = gmm_em.logsumexp(a, axis=axis), reference(a, axis=axis)
        assert np.array_equal(np.isneginf(ours), np.isneginf(ref))
        fin = np.isfinite(ref)
        assert np.allclose(ours[fin], ref[fin], rtol=1e-14, atol=1e-12)


def test_log_joint_matches_the_unexpanded_distance():
    # the expanded ||x||^2 - 2 x.mu + ||mu||^2 against the plain difference, points far out
    rng = np.random.default_rng(11)
    mu, w = gmm_em.ring_means(10, 30.0), rng.dirichlet(np.ones(10))
    x = rng.normal(size=(200, 2)) * 40
    plain = np.log(w)[None] - np.log(2 * np.pi) - 0.5 * ((x[:, None] - mu[None]) ** 2).sum(-1)
    assert np.abs(gmm_em.log_joint(x, mu, w) - plain).max() < 1e-10


def test_em_stops_at_the_maximum_where_the_likelihood_is_flat():
    # R = 1 as in problem 1.2: a rule on the log-likelihood alone stops with the means far from
    # the maximum. The reported iterate must be the maximum that L-BFGS (another algorithm)
    # reaches from it: its parameter errors equal to 1e-4, the error EM's tolerance 1e-8 leaves
    # at a rate of about 0.999 (1e-8 / (1 - 0.999) = 1e-5, with room)
    rng = np.random.default_rng(12)
    mu, w = gmm_em.ring(10, 1.0)
    x, _ = gmm_em.sample(1000, mu, w, rng)
    fit = gmm_em.fit_em(x, 10, [np.random.default_rng(120 + r) for r in range(2)], tol=1e-8)
    means, weights, ll = gmm_em.maximise_likelihood(x, fit.means, fit.weights)
    assert (
        fit.converged
        and abs(ll - fit.history[-1]) < 1e-10
        and np.abs(means - fit.means).max() < 1e-4
    )
    at_max = gmm_em.parameter_errors(gmm_em.EMFit(means, weights), mu, w)
    for key, value in gmm_em.parameter_errors(fit, mu, w).items():
        assert abs(value - at_max[key]) < 1e-4, key
    # the old rule, a log-likelihood change below 1e-6, would have reported means far from there
    start = gmm_em.kmeans_pp_init(x, 10, np.random.default_rng(120 + fit.restart))
    plain = gmm_em.em(x, start, 0.0, 3000, accelerate=False).history
    stop = next(t for t in range(1, len(plain)) if plain[t] - plain[t - 1] < 1e-6)
    early = gmm_em.em(x, start, 0.0, stop, accelerate=False)
    assert (
        np.linalg.norm(early.means - fit.means, axis=1).max() > 0.1
        and fit.history[-1] - plain[stop] < 1e-3
    )


def test_likelihood_gradient_matches_central_differences():
    rng = np.random.default_rng(13)
    x = rng.normal(size=(50, 2)) * 2
    means, logits = rng.normal(size=(4, 2)), rng.normal(size=4)
    _, d_means, d_logits = gmm_em.mean_log_likelihood_and_grad(x, means, logits)
    f = lambda m, logits: gmm_em.mean_log_likelihood_and_grad(x, m, logits)[0]
    eps = 1e-6
    for k in range(4):
        e = np.zeros(4)
        e[k] = eps
        assert np.isclose(
            d_logits[k], (f(means, logits + e) - f(means, logits - e)) / (2 * eps), atol=1e-8
        )
        for j in range(2):
            m = np.zeros((4, 2))
            m[k, j] = eps
            assert np.isclose(
                d_means[k, j], (f(means + m, logits) - f(means - m, logits)) / (2 * eps), atol=1e-8
            )


# ---- the search over starts, merged components, distinct maxima ------------------------------


def naive_groups(means, tol):
    """Single-linkage groups by a plain loop: relabel until no pair closer than tol differs."""
    label = list(range(len(means)))
    changed = True
    while changed:
        changed = False
        for i in range(len(means)):
            for j in range(len(means)):
                close = np.sqrt(((means[i] - means[j]) ** 2).sum()) < tol
                if close and label[j] != label[i]:
                    label[i] = label[j] = min(label[i], label[j])
                    changed = True
    return {frozenset(k for k in range(len(means)) if label[k] == g) for g in set(label)}


def test_merge_components_matches_a_naive_loop():
    rng = np.random.default_rng(20)
    for trial in range(20):
        sites = rng.normal(size=(4, 2)) * 3  # well apart (checked below), then 10 copies near them
        which = rng.integers(4, size=10)
        means = sites[which] + rng.normal(size=(10, 2)) * 1e-6
        if trial % 2:  # a chain: a-b and b-c within tol, a-c not: single linkage joins all three
            means[:3] = sites[0] + np.array([[0, 0], [0.7e-3, 0], [1.4e-3, 0]])
            which[:3] = 0
        weights = rng.dirichlet(np.ones(10))
        merged = gmm_em.merge_components(means, weights, tol=1e-3)
        groups = naive_groups(means, 1e-3)
        assert {frozenset(m) for m in merged["members"]} == groups
        for members, w, count in zip(merged["members"], merged["weights"], merged["counts"]):
            total = 0.0
            for k in members:  # the summed weight, by a loop
                total += weights[k]
            assert abs(w - total) < 1e-15 and count == len(members)
        assert np.isclose(merged["weights"].sum(), 1.0)
        assert list(merged["counts"]) == sorted(merged["counts"], reverse=True)


def fit_at(means, weights, ll, kind="box", restart=0):
    return gmm_em.EMFit(np.array(means, float), np.array(weights, float), history=[ll], kind=kind,
                        restart=restart)


def test_distinct_maxima_counts_a_constructed_case():
    # A and B are one maximum: B permutes A's components and splits its merged pair's weight
    # 0.3 differently (the density is the same); C moves one point by 0.1; D splits the pair
    a = fit_at([[0, 0], [0, 0], [3, 0], [0, 3]], [0.1, 0.2, 0.3, 0.4], -1.0, "k-means++", 0)
    b = fit_at([[0, 3], [3, 0], [0, 1e-7], [0, 0]], [0.4, 0.3, 0.25, 0.05], -1.0 - 1e-12, "box", 1)
    c = fit_at([[0, 0], [0, 0], [3.1, 0], [0, 3]], [0.1, 0.2, 0.3, 0.4], -1.1, "data point", 0)
    d = fit_at([[0, 0], [0, 0.5], [3, 0], [0, 3]], [0.1, 0.2, 0.3, 0.4], -1.2, "box", 0)
    maxima = gmm_em.distinct_maxima([d, c, b, a])
    assert [m["starts"] for m in maxima] == [
        [["k-means++", 0], ["box", 1]], [["data point", 0]], [["box", 0]]
    ]
    assert [m["locations"] for m in maxima] == [3, 3, 4]
    assert maxima[0]["train_ll"] == -1.0 and abs(maxima[0]["spread"] - 1e-12) < 1e-15
    # the summed weights agree (0.3); B's merged point is its weighted mean, 1e-7 * 0.25 / 0.3 up
    assert np.isclose(maxima[0]["apart"], 1e-7 * 0.25 / 0.3, rtol=1e-6, atol=0)
    # a tolerance above C's shift joins C to A
    assert len(gmm_em.distinct_maxima([a, b, c, d], tol=0.2)) == 2


def test_nearest_location_errors_match_a_naive_loop():
    rng = np.random.default_rng(21)
    true_means, true_weights = gmm_em.ring_means(10, 2.0), rng.dirichlet(np.ones(10))
    locations = dict(means=rng.normal(size=(6, 2)) * 2, weights=rng.dirichlet(np.ones(6)))
    got = gmm_em.nearest_location_errors(locations, true_means, true_weights)
    dists, covered = [], [0.0] * 6
    for k in range(10):
        d = [np.hypot(*(true_means[k] - m)) for m in locations["means"]]
        dists.append(min(d))
        covered[d.index(min(d))] += true_weights[k]
    assert np.isclose(got["nearest_mean_dist"], np.mean(dists), rtol=0, atol=1e-14)
    assert np.isclose(got["nearest_max_dist"], max(dists), rtol=0, atol=1e-14)
    err = max(abs(w - c) for w, c in zip(locations["weights"], covered))
    assert np.isclose(got["location_weight_err"], err, rtol=0, atol=1e-14)


@pytest.mark.parametrize("kind", sorted(gmm_em.INITS))
def test_em_from_every_kind_of_start_never_lowers_the_likelihood(kind):
    rng = np.random.default_rng(22)
    for R in (1.0, 10.0):
        x, _ = gmm_em.sample(400, *gmm_em.ring(10, R), rng)
        start = gmm_em.INITS[kind](x, 10, np.random.default_rng(23))
        for accelerate in (False, True):
            fit = gmm_em.em(x, start, 0.0, 300, accelerate=accelerate)
            lls = np.array(fit.history)
            # an identity (Proposition A.2) up to round-off in the sums of 400 log-densities
            assert np.diff(lls).min() > -1e-12, (kind, R, accelerate)
            # each recorded value is the log-likelihood at an iterate: the last, at the end
            assert np.isfinite(lls).all() and lls[-1] <= gmm_em.log_prob(
                x, fit.means, fit.weights
            ).mean() + 1e-12


def test_random_starts_are_where_they_say():
    rng = np.random.default_rng(24)
    x = rng.normal(size=(50, 2)) * [1.0, 5.0]
    points = gmm_em.random_points_init(x, 10, np.random.default_rng(1))
    rows = {tuple(p) for p in x}
    assert len({tuple(p) for p in points}) == 10 and all(tuple(p) in rows for p in points)
    box = gmm_em.random_box_init(x, 1000, np.random.default_rng(2))
    assert (box >= x.min(0)).all() and (box <= x.max(0)).all()
    # 1000 uniform draws come within 0.2 of each side of the box (it is 5 and 25 wide)
    assert np.allclose(box.min(0), x.min(0), atol=0.2)
    assert np.allclose(box.max(0), x.max(0), atol=0.2)
    same = gmm_em.random_box_init(x, 1000, np.random.default_rng(2))
    assert np.array_equal(box, same)


def test_em_starts_draws_each_start_from_its_own_generator_and_keeps_the_best():
    rng = np.random.default_rng(25)
    x, _ = gmm_em.sample(300, *gmm_em.ring(4, 1.0), rng)
    asked = []

    def rng_of(kind, r):
        asked.append((kind, r))
        return np.random.default_rng([len(kind), r])

    counts = gmm_em.start_counts(2, 3)
    fits = gmm_em.em_starts(x, 4, rng_of, counts, 1e-6, 5000)
    assert asked == [("k-means++", 0), ("k-means++", 1)] + [
        (kind, r) for kind in ("data point", "box") for r in range(3)
    ]
    assert [(f.kind, f.restart) for f in fits] == asked
    for f, (kind, r) in zip(fits, asked):  # each fit starts where its own generator says
        again = gmm_em.INITS[kind](x, 4, np.random.default_rng([len(kind), r]))
        assert np.array_equal(f.init, again)
    best = gmm_em.most_likely(fits, 1e-6, 5000)
    assert best.history[-1] == max(f.history[-1] for f in fits)


def test_separated_components_give_the_same_errors_matched_or_by_point():
    # at R = 10 every EM mean sits near one true mean: nearest point = matched component
    rng = np.random.default_rng(26)
    mu, w = gmm_em.ring(10, 10.0)
    x, _ = gmm_em.sample(1000, mu, w, rng)
    fit = gmm_em.fit_em(x, 10, [np.random.default_rng(260 + r) for r in range(3)])
    got = gmm_em.identified(fit, mu, w)
    assert got["n_locations"] == 10 and got["within_location"] == 0.0
    assert np.isclose(got["nearest_mean_dist"], got["mean_dist"], rtol=0, atol=1e-12)
    assert np.isclose(got["location_weight_err"], got["max_pi_err"], rtol=0, atol=1e-12)
    assert got["between_locations"] > 5.0  # the ring's spacing, 6.18, less the errors
