"""What a run may ask for: an estimate, before any work, of the largest array and of the
evaluations each group of options asks for, so that a setting too big for a laptop is refused in
one line (naming the options) instead of running for days or running out of memory."""

GiB, LIMIT, WORK = 2**30, 4 * 2**30, 1e11  # the largest array a run may make; the most work


def demands(c):
    """(option, bytes of its largest array, float64 with copies, evaluations): what to refuse."""
    side = 2 * 1.5 * max(c.grid_half_width, c.R + 10) / c.grid_step  # the grown quadrature box
    gap_side = 2 * (max(c.R, c.R_small) + 12) / 0.1  # expected_gap_quadrature's grid
    H, K, n, cand = max(c.ebm_widths), c.K, c.n, len(c.ebm_taus) * len(c.ebm_widths)
    steps = lambda until: -(-until // c.eval_every) * c.eval_every  # whole L-BFGS steps
    return [
        ("the box (--grid-half-width or --R over --grid-step)", side * side * H * 24, 0),
        ("--M (times --grad-samples)", c.M * c.grad_samples * H * 24, 0),
        ("--M-fresh", min(c.M_fresh, 2**16) * H * 24 + c.M_fresh * 24, 0),
        ("--M-val", c.M_val * H * 24, 0),
        ("--n, --K, --em-max-maps, --em-restarts, --em-random-starts", n * max(n, K) * 24,  # EM,
         (c.em_max_maps * n * K + (c.em_restarts + 2 * c.em_random_starts) * K**3)  # each end
         * (c.em_restarts + 2 * c.em_random_starts + 1)),  # matched to every maximum before it
        ("--mala-chains (times --mala-steps + --mala-adapt)", c.mala_chains * H * 24,
         c.mala_chains * (c.mala_steps + c.mala_adapt)),
        ("--K-max (with --limit-points)", c.K_max * c.limit_points * 24,
         c.K_max * c.limit_points * c.limit_num_K),
        ("--iwae-reps (with --iwae-points, --iwae-k-max)", c.iwae_points * c.iwae_reps * K * 24,
         c.iwae_k_max * c.iwae_reps),
        ("--ebm-max-iter, --eval-every, --ebm-restarts (with --M, --n, the box)", 0,
         H * ((c.M + n + 1000) * (c.ebm_restarts * steps(c.ebm_max_iter)  # + fixed cost of a step
                                   + cand * steps(max(c.ebm_rungs)))
              + (c.ebm_restarts + cand) * side * side)),  # training, then each one's quadrature
        ("--kl-grid", (c.kl_grid[1] - c.kl_grid[0]) / c.kl_grid[2] * 24, 0),
        ("--sigma-num (with --n)", 0, c.sigma_num * n * n),
        ("--R or --R-small (with --K)", gap_side * gap_side * K * 24, 0)]


def check(c, default):
    """Raise ValueError, naming the options, if c asks for an array over LIMIT bytes or for more
    than WORK evaluations; the message quotes the estimate for the default run `default`."""
    for name, size, work in demands(c):
        if size > LIMIT:
            raise ValueError(f"{name} asks for an array of about {size / GiB:.3g} GiB; the limit "
                             f"is {LIMIT / GiB:g} GiB: make these smaller")
        if work > WORK:
            usual = max(w for *_, w in demands(default))
            raise ValueError(f"{name} asks for about {work:.2g} evaluations, over the limit of "
                             f"{WORK:.0e} (the default run: {usual:.0e}): make these smaller")
