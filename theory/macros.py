"""The numbers theory.pdf quotes, as LaTeX macros.

NUMBERS below lists them as data: macro name, path into results.json, format. statements()
adds the facts of a run that the text states in words; appendix_macros() the tables of
python VI.py --appendix. macro_file() is the one writer of macro files (plots/results.tex,
plots/appendix.tex). The hand-in's VI.py carries this module, so it writes them too.
"""
import numpy as np

NUMBERS = """\
# The numbers theory.pdf quotes: one LaTeX macro each, read from plots/results.json by VI.py
# (a path that results.json lacks is an error). Formats: a Python format spec, or list, count,
# normal ((mean, sd) as N(mean, sd^2)), grid ((lo, hi, step)), mixture (the p of problem 2.2).
# macro                   path into results.json                    format
seedValue                 config.seed                               d
nPoints                   config.n                                  d
Kcomp                     config.K                                  d
Rbig                      config.R                                  .0f
Rsmall                    config.R_small                            .0f
Mprop                     config.M                                  d
emRestarts                config.em_restarts                        d
emRandomStarts            config.em_random_starts                   d
emStarts                  gmm.small.n_starts                        d
emMergeTol                gmm.small.merge_tol                       .0e
emBigLocations            gmm.big.n_locations                       d
emSmallLocations          gmm.small.n_locations                     d
emSmallCounts             gmm.small.locations.counts                list
emSmallWithin             gmm.small.within_location                 .0e
emSmallBetween            gmm.small.between_locations               .2f
emSmallWithinMaximum      gmm.small.within_maximum                  .0e
emSmallSpread             gmm.small.ll_spread                       .0e
emBigNearest              gmm.big.nearest_mean_dist                 .2f
emBigNearestMax           gmm.big.nearest_max_dist                  .2f
emSmallNearest            gmm.small.nearest_mean_dist               .2f
emSmallNearestMax         gmm.small.nearest_max_dist                .2f
emBigLocWeightErr         gmm.big.location_weight_err               .3f
emSmallLocWeightErr       gmm.small.location_weight_err             .3f
emBigMaxima               gmm.big.n_maxima                          d
emSmallMaxima             gmm.small.n_maxima                        d
emBigTestGap              gmm.big.test_gap                          .3f
emBigTestGapSE            gmm.big.test_gap_se                       .3f
emSmallTestGap            gmm.small.test_gap                        .3f
emSmallTestGapSE          gmm.small.test_gap_se                     .3f
emTol                     config.em_tol                             .0e
emLabelledError           gmm.big.labelled_error                    .3f
emThreshold               gmm.big.recover_threshold                 .2f
emSmallMeansLeft          gmm.small.means_left                      .0e
emSmallEarlyMeans         gmm.small.early_means_left                .2f
kdeSigma                  kde.sigma                                 .3f
kdeBandwidth              kde.bandwidth                             .3f
kdeValLL                  kde.val_ll                                .3f
kdeTestLL                 compare.test_ll.kde.mean                  .3f
kdeTestLLSE               compare.test_ll.kde.se_points             .3f
kdeScottSigma             kde.scott_sigma                           .2f
kdeScottTestLL            kde.scott_test_ll                         .3f
kdeGridMin                config.sigma_min                          .2f
kdeGridMax                config.sigma_max                          .0f
kdeGridNum                config.sigma_num                          d
oracleTestLL              compare.test_ll.truth.mean                .3f
oracleTestLLSE            compare.test_ll.truth.se_points           .3f
ebmTaus                   config.ebm_taus                           list
ebmWidths                 config.ebm_widths                         list
ebmRungs                  config.ebm_rungs                          list
ebmCandidates             ebm.truth.candidates                      count
ebmRestarts               config.ebm_restarts                       d
ebmEvalEvery              config.eval_every                         d
ebmMval                   config.M_val                              d
ebmPatience               config.ebm_patience                       d
ebmMaxIter                config.ebm_max_iter                       d
ebmMemory                 config.ebm_memory                         d
ebmHidden                 ebm.truth.hidden                          d
ebmFreshM                 config.M_fresh                            d
ebmGridStep               config.grid_step                          g
ebmATrainSE               ebm.truth.by_is.train.A_se.mean           .3f
ebmAFreshSE               ebm.truth.by_is.fresh.A_se.mean           .1e
ebmAGapTrain              ebm.truth.by_is.train.A_grid_minus.mean   .3f
ebmAGapTrainSD            ebm.truth.by_is.train.A_grid_minus.sd     .3f
ebmAGapFresh              ebm.truth.by_is.fresh.A_grid_minus.mean   .1e
ebmAGapFreshSD            ebm.truth.by_is.fresh.A_grid_minus.sd     .1e
ebmAGapTrainMinSE         ebm.truth.by_is.train.min_gap_in_se       .1f
ebmGridDelta              ebm.model.grid_delta                      .1e
ebmGapAtKept              ebm.model.overfit.gap                     .3f
ebmTruthGap               ebm.model.overfit.truth_gap               .3f
ebmOverfit                ebm.model.overfit.overfit                 .3f
ebmESS                    ebm.truth.by_is.train.ess.mean            .0f
ebmESSFresh               ebm.truth.by_is.fresh.ess.mean            .0f
ebmFittedESS              ebm.fitted.by_is.train.ess.mean           .0f
klFromJensen              ebm.truth.by_is.fresh.kl_jensen.mean      .4f
klFromJensenSD            ebm.truth.by_is.fresh.kl_jensen.sd        .4f
klFromJensenSE            ebm.truth.by_is.fresh.kl_jensen_se.mean   .4f
ebmTestLLIS               compare.test_ll.ebm_is.mean               .3f
ebmTestLLISSD             compare.test_ll.ebm_is.sd                 .3f
ebmTestLLISTrain          compare.test_ll.ebm_is_train.mean         .3f
ebmTestLLISTrainSD        compare.test_ll.ebm_is_train.sd           .3f
ebmISMinusKde             compare.ebm_is_minus_kde.mean             .3f
ebmISMinusKdeSE           compare.ebm_is_minus_kde.se               .3f
ebmISMinusKdeSD           compare.ebm_is_minus_kde.sd               .3f
ebmISMinusKdeMin          compare.ebm_is_minus_kde.minimum          .3f
ebmISMinusKdeMax          compare.ebm_is_minus_kde.maximum          .3f
truthMinusEbmIS           compare.truth_minus_ebm_is.mean           .3f
truthMinusEbmISSE         compare.truth_minus_ebm_is.se             .3f
ebmTestLLMean             compare.test_ll.ebm.mean                  .3f
ebmTestLLSD               compare.test_ll.ebm.sd                    .3f
fittedTestLLMean          compare.test_ll.ebm_fitted.mean           .3f
fittedTestLLSD            compare.test_ll.ebm_fitted.sd             .3f
ebmMinusKde               compare.ebm_minus_kde.mean                .3f
ebmMinusKdeSE             compare.ebm_minus_kde.se                  .3f
fittedMinusKde            compare.fitted_minus_kde.mean             .3f
fittedMinusKdeSE          compare.fitted_minus_kde.se               .3f
truthMinusEbm             compare.truth_minus_ebm.mean              .3f
truthMinusEbmSE           compare.truth_minus_ebm.se                .3f
gradSamples               config.grad_samples                       d
gradCheckpoints           config.ebm_checkpoints                    list
gradRelTrainStart         ebm.model.gradient.0.rel_err_train        .2f
gradRelFreshStart         ebm.model.gradient.0.rel_err_fresh        .2f
gradRelTrainTen           ebm.model.gradient.1.rel_err_train        .2f
gradRelTrainEnd           ebm.model.gradient.-1.rel_err_train       .3f
gradRelFreshEnd           ebm.model.gradient.-1.rel_err_fresh       .3f
gradRelFreshEndSD         ebm.model.gradient.-1.rel_err_fresh_sd    .3f
malaChains                ebm.model.samples.chains                  d
malaSteps                 config.mala_steps                         d
malaAdapt                 config.mala_adapt                         d
malaTarget                config.mala_target                        .3f
malaJump                  config.mala_jump                          g
malaAcceptance            ebm.model.samples.acceptance              .2f
malaJumpAcceptance        ebm.model.samples.jump_acceptance         .2f
malaChi                   ebm.model.samples.chi2_modes              .1f
malaChiStart              ebm.model.samples.chi2_start              .0f
malaPModes                ebm.model.samples.p_modes                 .2f
malaKSRadius              ebm.model.samples.ks_radius               .3f
malaPRadius               ebm.model.samples.p_radius                .2f
malaKSAngle               ebm.model.samples.ks_angle                .3f
malaPAngle                ebm.model.samples.p_angle                 .2f
klPTeX                    config                                    mixture
klQTeX                    config.kl_q                               normal
klGridTeX                 config.kl_grid                            grid
klStartsCount             config.kl_starts                          count
klPQ                      vi.kl.kl_pq                               .2f
klQP                      vi.kl.kl_qp                               .2f
klGridDelta               vi.kl.grid_delta                          .0e
fwdMu                     vi.kl.forward.mu                          .2f
fwdSd                     vi.kl.forward.sd                          .2f
revMu                     vi.kl.reverse_best.mu                     .2f
revSd                     vi.kl.reverse_best.sd                     .2f
revKL                     vi.kl.reverse_best.kl                     .2f
viRingLogp                vi.limit.ring_log_p                       .3f
viUnifLimit               vi.limit.unif_limit                       .3f
viGapLimit                vi.limit.gap_limit                        .3f
viLimitPoints             vi.limit.points                           d
iwaeKmax                  config.iwae_k_max                         d
iwaePoints                vi.iwae.big.points                        d
iwaeReps                  config.iwae_reps                          d
emBigMeanDist             gmm.big.mean_dist                         .2f
emBigMaxDist              gmm.big.max_dist                          .2f
emBigMaxPiErr             gmm.big.max_pi_err                        .3f
emBigIters                gmm.big.iterations                        d
emBigTrainLL              gmm.big.train_ll                          .3f
emBigTrainLLTrue          gmm.big.train_ll_true                     .3f
emBigTestLL               gmm.big.test_ll                           .3f
emBigTestLLTrue           gmm.big.test_ll_true                      .3f
emBigSpacing              gmm.big.neighbour_spacing                 .2f
emSmallIters              gmm.small.iterations                      d
emSmallTrainLL            gmm.small.train_ll                        .3f
emSmallTrainLLTrue        gmm.small.train_ll_true                   .3f
emSmallTestLL             gmm.small.test_ll                         .3f
emSmallTestLLTrue         gmm.small.test_ll_true                    .3f
emSmallSpacing            gmm.small.neighbour_spacing               .2f
viUnifBig                 vi.elbo.big.unif                          .3f
viPostBig                 vi.elbo.big.post                          .3f
viLogpBig                 vi.elbo.big.log_p                         .3f
viGapBig                  vi.elbo.big.gap                           .3f
viExpGapBig               vi.elbo.big.expected_gap                  .3f
viExpUnifBig              vi.elbo.big.expected_unif                 .3f
viGapMinBig               vi.elbo.big.gap_min                       .3f
viGapSEBig                vi.elbo.big.gap_se                        .3f
viGapMaxBig               vi.elbo.big.gap_max                       .3f
viUnifSmall               vi.elbo.small.unif                        .3f
viPostSmall               vi.elbo.small.post                        .3f
viLogpSmall               vi.elbo.small.log_p                       .3f
viGapSmall                vi.elbo.small.gap                         .3f
viExpGapSmall             vi.elbo.small.expected_gap                .3f
viExpUnifSmall            vi.elbo.small.expected_unif               .3f
viGapMinSmall             vi.elbo.small.gap_min                     .3f
viGapSESmall              vi.elbo.small.gap_se                      .3f
viGapMaxSmall             vi.elbo.small.gap_max                     .3f
"""


def lookup(results, path):
    """results["a"]["b"][0]... for the path "a.b.0" (negative indices count from the end)."""
    for key in path.split("."):
        results = results[int(key)] if isinstance(results, list) else results[key]
    return results


def format_macro(value, spec):
    """A value as LaTeX prints it: a format spec, or 'list' (comma-separated), 'count', 'normal'
    ((mean, sd) as N(mean, sd^2)), 'grid' ((lo, hi, step)) or 'mixture' (the p of 2.2)."""
    if spec == "list":
        return ", ".join(f"{v:g}" for v in value)
    if spec == "count":
        return str(len(value))
    if spec == "normal":
        return f"$\\N({value[0]:g},{value[1]:g}^2)$"
    if spec == "grid":
        return f"$[{value[0]:g},{value[1]:g}]$ with step ${value[2]:g}$"
    if spec == "mixture":
        terms = zip(value["kl_p_weights"], value["kl_p_means"], value["kl_p_sds"], strict=True)
        return "$" + "+".join(f"{w:g}\\,\\N({m:g},{s:g}^2)" for w, m, s in terms) + "$"
    return format(int(value) if spec == "d" else value, spec)


# ---- the claims of the text -----------------------------------------------------------------
# Every run-dependent claim of the write-up, as a test of one run's results: python VI.py
# records whether each holds (results.json), the text states it in words (statements below),
# and the appendix's seed sweep counts the seeds where it holds.

def _model(r, key):
    return r["ebm"]["model"][key]


CLAIMS = {  # name: (the claim as the seed sweep's table prints it (LaTeX), test)
    "emRecovers": ("EM recovers the means at the large radius (error $<2\\times$ a labelled fit's)",
                   lambda r: r["gmm"]["big"]["mean_dist"] < r["gmm"]["big"]["recover_threshold"]),
    "emMisses": ("\\quad and misses them at the small radius (nearest location)",
                 lambda r: r["gmm"]["small"]["nearest_mean_dist"]
                 >= r["gmm"]["small"]["recover_threshold"]),
    "kdeBeatsScott": ("the tuned KDE beats Scott's rule",
                      lambda r: r["compare"]["test_ll"]["kde"]["mean"] > r["kde"]["scott_test_ll"]),
    "ebmBeatsKde": ("the EBM ($A$ by IS) beats the KDE (every restart, or beyond 2 s.e.)",
                    lambda r: r["compare"]["ebm_is_minus_kde"]["holds"] == 1),
    "quadratureAgrees": ("\\quad so does the EBM with $A$ by quadrature",
                         lambda r: r["compare"]["ebm_minus_kde"]["holds"] == 1),
    "fittedBeatsKde": ("\\quad so does the EBM of the oracle-free proposal",
                       lambda r: r["compare"]["fitted_minus_kde"]["holds"] == 1),
    "selectionByQuadrature": ("validation with $A$ by quadrature picks the same $(\\tau,H)$",
                              lambda r: same_choice_by_quadrature(r["ebm"]["truth"])),
    "restartsConverged": ("every restart stops by the convergence rule",
                          lambda r: all(x["converged"] for k in ("truth", "fitted")
                                        for x in r["ebm"][k]["restarts"])),
    "boxMeasured": ("every quadrature box holds all but $10^{-6}$ of its model's mass (measured)",
                     lambda r: max_mass_outside(r) <= 1e-6),
    "freshAgrees": ("fresh-sample IS $A$ within 3 s.e.\\ of quadrature on every restart",
                    lambda r: r["ebm"]["truth"]["by_is"]["fresh"]["max_gap_in_se"] < 3),
    "trainOptimistic": ("training-sample IS overstates the test LL on every restart",
                        lambda r: r["ebm"]["truth"]["by_is"]["train"]["A_grid_minus"]["minimum"]
                        > 0),
    "gradAccurate": ("IS gradient within 5\\% of quadrature at the kept iterate",
                     lambda r: _model(r, "gradient")[-1]["rel_err_train"] < 0.05),
    "malaAgrees": ("MALA passes the mode-mass and KS tests ($p>0.01$)",
                   lambda r: min(_model(r, "samples")[f"p_{k}"]
                                 for k in ("modes", "radius", "angle")) > 0.01),
    "boundsOrdered": ("$\\mathcal L_{\\mathrm{unif}}<\\mathcal L_{\\mathrm{post}}$ at both radii",
                      lambda r: all(r["vi"]["elbo"][k]["unif"] < r["vi"]["elbo"][k]["post"]
                                    for k in ("big", "small"))),
}


def same_choice_by_quadrature(route):
    return max(route["candidates"], key=lambda c: c["val_ll_grid"])["rank"] == 0


def max_mass_outside(r):
    """The largest mass outside its quadrature box of any model whose A is reported."""
    e = r["ebm"]
    rows = [x for k in ("truth", "fitted") for x in e[k]["restarts"] + e[k]["candidates"]]
    return max([x["mass_outside"] for x in rows] + [e["model"]["mass_outside"]])


def claims_of(results):
    """{claim: whether it holds} for one run's results."""
    return {name: bool(test(results)) for name, (_, test) in CLAIMS.items()}


def candidate(tau, hidden):
    """The one LaTeX name of an EBM's (tau, H)."""
    return f"$\\tau={tau:g}$, $H={hidden}$"


def verdict(comparison, wins, loses, ties):
    """One of three phrases, by the sign of a paired comparison's `holds` (ebm.paired)."""
    return {1: wins, -1: loses, 0: ties}[comparison["holds"]]


def maxima_text(r):
    """The maxima EM's starts reached at one radius (em_experiment's r), in words: the best's
    training LL and which starts reached it, then the others' LLs."""
    kinds = list(dict.fromkeys(s["kind"] for s in r["starts"]))
    best, rest = r["maxima"][0], [m["train_ll"] for m in r["maxima"][1:]]
    of = lambda k: (sum(kind == k for kind, _ in best["starts"]),
                    sum(s["kind"] == k for s in r["starts"]))
    by = ", ".join("{} of {} {}".format(*of(k), k) for k in kinds)
    text = f"\\num{{{best['train_ll']:.5f}}} (from {by} starts)"
    if len(rest) == 1:
        text += f"; one other, \\num{{{rest[0]:.5f}}}"
    elif rest:
        text += f"; {len(rest)} others, \\num{{{max(rest):.5f}}} to \\num{{{min(rest):.5f}}}"
    return text


def point(p, digits):
    """(x, y) to `digits` decimals, a coordinate that rounds to zero printed without a sign."""
    u, v = (round(c, digits) + 0.0 for c in p)
    return f"$({u:.{digits}f},{v:.{digits}f})$"


def estimate_rows(big, small):
    """The table of estimates, a row per component k: at the large radius the true mean, EM's
    mean and weight matched to it; at the small radius the true mean, then EM's components by
    location (merge_components; not matched to k, since only a location's summed weight is
    identified): location, mean, weight, and the location's summed weight on its first row."""
    loc = small["locations"]
    order = [(i, g) for g, members in enumerate(loc["members"]) for i in members]
    rows = []
    for k, (j, (i, g)) in enumerate(zip(big["matched"], order, strict=True)):
        total = f"{loc['weights'][g]:.3f}" if i == loc["members"][g][0] else ""
        rows.append(f"{k + 1} & {point(big['true_means'][k], 2)} & {point(big['means'][j], 2)} & "
                    f"{big['weights'][j]:.3f} & {point(small['true_means'][k], 2)} & {g + 1} & "
                    f"{point(small['means'][i], 3)} & {small['weights'][i]:.3f} & {total}\\\\")
    return " ".join(rows)


def statements(r):
    """Facts of a run that the write-up states in words: {macro: text}."""
    c, last = r["compare"], r["ebm"]["model"]["gradient"][-1]
    fresh = r["ebm"]["truth"]["by_is"]["fresh"]["max_gap_in_se"]
    same = abs(last["rel_err_train"] - last["rel_err_fresh"]) < 2 * last["rel_err_fresh_sd"]
    return {
        "ebmChosenTeX": candidate(r["ebm"]["truth"]["tau"], r["ebm"]["truth"]["hidden"]),
        "ebmFittedChosenTeX": candidate(r["ebm"]["fitted"]["tau"], r["ebm"]["fitted"]["hidden"]),
        "ebmVersusKde": verdict(c["ebm_is_minus_kde"], "beats", "loses to",
                                "cannot be told apart from"),
        "ebmGridVersusKde": verdict(c["ebm_minus_kde"], "beats", "loses to",
                                    "cannot be told apart from"),
        "fittedVersusKde": verdict(c["fitted_minus_kde"], "beats", "loses to",
                                   "cannot be told apart from"),
        "ebmAFreshVerdict": "inside its standard error on every restart" if fresh < 1 else
        "within two standard errors on every restart" if fresh < 2 else
        "more than two standard errors away on some restart",
        "gradFixedVersusFresh": "within two standard deviations of" if same else
        "outside two standard deviations of",
        "malaVerdict": "no difference from the model is detectable" if r["claims"]["malaAgrees"]
        else "the chains still differ detectably from the model",
        "claimSelectionByQuadrature": "it does" if r["claims"]["selectionByQuadrature"] else
        "it does not",
        "emBigMaximaText": maxima_text(r["gmm"]["big"]),
        "emSmallMaximaText": maxima_text(r["gmm"]["small"]),
        "emEstimateRows": estimate_rows(r["gmm"]["big"], r["gmm"]["small"])}


def macros_of(results, table=NUMBERS, missing=None):
    """{macro: text} for every number of the table and every statement. A path the results do
    not hold is an error, so a renamed key cannot silently drop a number from the PDF; unless
    a list `missing` is given (settings that leave a number undefined): then its macro reads
    n/a and its name is appended there, for the run to report."""
    out = {}
    for line in table.splitlines():
        if line.strip() and not line.startswith("#"):
            name, path, spec = line.split()
            try:
                out[name] = format_macro(lookup(results, path), spec)
            except (KeyError, IndexError, TypeError) as e:
                if missing is None:
                    raise KeyError(f"NUMBERS: {name} reads {path}, missing from the results "
                                   f"({e!r})") from None
                out[name] = "n/a"
                missing.append(name)
    return {**out, **statements(results)}


def macro_file(macros, source):
    """The text of a LaTeX file of \\newcommand lines, one per macro."""
    lines = [f"\\newcommand{{\\{k}}}{{{v}}}" for k, v in macros.items()]
    return "\n".join([f"% Generated by {source}; do not edit.", *lines]) + "\n"


# ---- python VI.py --appendix: the seed sweep, the training routes, the tau sweep ---------------

def pm(mean, spread, digits=3):
    return f"\\pmse{{{mean:.{digits}f}}}{{{spread:.{digits}f}}}"


def with_sd(mean, sd, digits=3):
    """A mean over restarts with their sd, written (sd s) so that +- always means an s.e."""
    return f"\\withsd{{{mean:.{digits}f}}}{{{sd:.{digits}f}}}"


def by_count(picks):
    """(pick, count) from the most frequent down, ties in the order the seeds first made them: a
    set's order would follow Python's per-process string hashing, and the PDF's text with it."""
    return sorted(((p, picks.count(p)) for p in dict.fromkeys(picks)), key=lambda pc: -pc[1])


def seed_row(r):
    """What the seed sweep keeps of one seed's results."""
    c = r["compare"]
    return dict(seed=r["config"]["seed"], claims=r["claims"],
                pick=[r["ebm"]["truth"]["tau"], r["ebm"]["truth"]["hidden"]],
                ebm_is_minus_kde=c["ebm_is_minus_kde"]["mean"],
                truth_minus_ebm_is=c["truth_minus_ebm_is"]["mean"],
                em_big=r["gmm"]["big"]["mean_dist"],
                em_small=r["gmm"]["small"]["nearest_mean_dist"])


def seed_macros(seeds, claims):
    """The seed sweep (seed_row per seed): claims held per seed, spreads, the picks."""
    col = lambda key: np.array([s[key] for s in seeds])
    passes = {key: [s["claims"][key] for s in seeds] for key in claims}
    lead = col("ebm_is_minus_kde")
    out = {"seedsN": str(len(seeds)), "seedsClaims": str(len(passes)),
           "seedsClaimsHeld": str(sum(all(h) for h in passes.values())),
           "seedsEbmOverKdeMin": f"{lead.min():.3f}", "seedsEbmOverKdeMax": f"{lead.max():.3f}",
           "seedsEbmGapMean": f"{col('truth_minus_ebm_is').mean():.3f}",
           "seedsEmBigMeanDistMax": f"{col('em_big').max():.2f}",
           "seedsEmSmallNearestMin": f"{col('em_small').min():.2f}",
           "seedsPicks": "; ".join(f"{p} on {n}" for p, n in
                                   by_count([candidate(*s["pick"]) for s in seeds])),
           "seedsClaimRows": " ".join(f"{claims[key][0]} & {sum(hits)}\\\\"
                                      for key, hits in passes.items())}
    out.update({f"seedsHeld{key[0].upper()}{key[1:]}": str(sum(hits))
                for key, hits in passes.items()})
    return out


def spread(rows):
    ll = np.array([r["test_ll"] for r in rows])
    return ll.mean(), ll.std(ddof=1), ll.min(), ll.max()


ROUTE_LABELS = {"exact": "exact gradient (quadrature)", "truth": "IS, $q$ the true mixture",
                "fitted": "IS, $q$ fitted to the data", "pcd": "persistent contrastive divergence"}


def route_rows(routes):
    rows = []
    for route, r in routes.items():
        mean, sd, _, _ = spread(r["restarts"])
        evaluations = np.median([x["evaluations"] for x in r["restarts"]]) / 1e6
        rows.append(f"{ROUTE_LABELS[route]} & {'yes' if r['needs_truth'] else 'no'} & "
                    f"{candidate(r['tau'], r['hidden'])} & {with_sd(mean, sd)} & "
                    f"{pm(r['minus_kde']['mean'], r['minus_kde']['se'])} & {evaluations:.1f}\\\\")
    return " ".join(rows)


def tau_rows(sweep):
    rows = []
    for t in sweep:
        mean, sd, low, high = spread(t["restarts"])
        iterations = int(np.median([x["iterations"] for x in t["restarts"]]))
        rows.append(f"{t['tau']:g} & {iterations} & "
                    f"{sum(x['converged'] for x in t['restarts'])} of {len(t['restarts'])} & "
                    f"{with_sd(mean, sd)} & \\num{{{low:.3f}}} to \\num{{{high:.3f}}}\\\\")
    return " ".join(rows)


def route_macros(appendix, exact_step, pcd):
    """The routes table, the tau table and the sentences about them."""
    routes, u = appendix["routes"], appendix["uninformed"]
    mean, sd, _, _ = spread(routes["exact"]["restarts"])
    tex = dict(routeTrainStep=f"{exact_step:g}", pcdChains=str(pcd["chains"]),
               pcdSteps=str(pcd["mala_steps"]), pcdUpdates=str(pcd["updates"]),
               routeRows=route_rows(routes), tauRows=tau_rows(appendix["tau_sweep"]),
               routeExactTestLL=f"{mean:.3f}", routeExactTestLLSD=f"{sd:.3f}",
               tauMax=f"{u['tau']:g}")
    for name, c, words in (("TruthMinusExact", routes["truth"]["minus_exact"],
                            ("the importance-sampled gradient fits better",
                             "the exact gradient fits better", "no difference is detectable")),
                           ("PcdMinusFitted", routes["pcd"]["minus_fitted"],
                            ("contrastive divergence fits better",
                             "importance sampling fits better", "no difference is detectable"))):
        tex[f"route{name}"], tex[f"route{name}SE"] = f"{c['mean']:.3f}", f"{c['se']:.3f}"
        tex[f"route{name.replace('Minus', 'Versus')}"] = verdict(c, *words)
    tex.update(chosenMinusUninformed=f"{u['chosen_minus']['mean']:.3f}",
               chosenMinusUninformedSE=f"{u['chosen_minus']['se']:.3f}",
               uninformedVersusChosen=verdict(u["chosen_minus"], "trails", "beats",
                                              "cannot be told apart from"),
               uninformedMinusKde=f"{u['minus_kde']['mean']:.3f}",
               uninformedMinusKdeSE=f"{u['minus_kde']['se']:.3f}",
               uninformedVersusKde=verdict(u["minus_kde"], "beats", "loses to",
                                           "cannot be told apart from"))
    return tex


def appendix_macros(appendix, exact_step, pcd):
    """Every macro of python VI.py --appendix (plots/appendix.tex)."""
    return {**seed_macros(appendix["seeds"], CLAIMS), **route_macros(appendix, exact_step, pcd)}
