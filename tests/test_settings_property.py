"""Every setting a user can type gives a result or a one-line refusal (hypothesis draws them).

Each example changes one or two options of a tiny configuration (so that a run takes a few
hundredths of a second) to a value any of the option's parser accepts: small and huge numbers,
zero, negative ones, nan and inf, empty and long lists. The run, in this process, must end in
one of three ways: a finite results.json (strict JSON: no NaN) with every file the run promises;
a one-line refusal (exit 2) with nothing written; or, when every EBM candidate or restart
diverged, one line that says so (exit 1), with nothing written. The limits on memory and work
are those of a tiny run, so that whatever cannot be small is refused before any work, as a run
beyond the real limits is. 200 examples, the same on every run (derandomized); fewer with
HYPOTHESIS_PROFILE=dev.
"""

import io
import json
import os
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import fields

import pytest

pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import VI
from tools import cli, limits

settings.register_profile("ci", max_examples=200, derandomize=True, database=None,
                          deadline=None)
settings.register_profile("dev", max_examples=25, derandomize=True, database=None,
                          deadline=None)

TINY = dict(n=6, K=2, R=2.0, R_small=1.0, em_restarts=1, em_tol=1.0, em_max_maps=3, sigma_num=2,
            M=4, M_val=4, M_fresh=4, ebm_taus=(1.0,), ebm_widths=(1,), ebm_rungs=(1,),
            ebm_restarts=2, ebm_max_iter=2, eval_every=1, ebm_patience=2, ebm_checkpoints=(0,),
            grad_samples=2, grid_half_width=4.0, grid_step=1.0, mala_chains=2, mala_adapt=1,
            mala_steps=1, kl_p_weights=(1.0,), kl_p_means=(0.0,), kl_p_sds=(1.0,), kl_q=(0.0, 1.0),
            kl_grid=(-10.0, 10.0, 0.1), kl_starts=(0.0,), K_max=2, limit_num_K=1, limit_points=2,
            iwae_k_max=2, iwae_points=2, iwae_reps=2)
TINY_LIMITS = dict(LIMIT=2**24, WORK=1e5)  # bytes of the largest array, evaluations of work
NOT_TRIED = {"appendix_seeds"}  # read only by --appendix, which this test does not run
FIELDS = {f.name: f for f in fields(VI.Config) if f.name not in NOT_TRIED}

ints = st.one_of(st.integers(-3, 40), st.sampled_from([10**k for k in (3, 6, 9, 12, 15)]))
floats = st.one_of(st.floats(-5, 50), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, 1e-3, 0.5, 1.0, 1e6, 1e300]))


def value_of(name):
    default = FIELDS[name].default
    kind = type(default[0]) if isinstance(default, tuple) else type(default)
    one = ints if kind is int else floats
    return st.lists(one, max_size=4).map(tuple) if isinstance(default, tuple) else one


settings_drawn = st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=2,
                          unique=True).flatmap(
    lambda names: st.fixed_dictionaries({n: value_of(n) for n in names}))


def command_line(changes):
    args = []
    for name, value in {**TINY, **changes}.items():
        text = ",".join(map(repr, value)) if isinstance(value, tuple) else repr(value)
        args.append(f"{cli.option(name)}={text}")
    return args


def strict_json(text):
    def refuse(constant):
        raise ValueError(f"results.json holds {constant}")
    return json.loads(text, parse_constant=refuse)


def tiny_run(changes, out):
    """VI.main on TINY with changes, under TINY_LIMITS: (exit status, stderr, stdout)."""
    args = ["--quick", "--no-figures", "--workers", "1", *command_line(changes), "--out", out]
    err, said = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, redirect_stderr(err), redirect_stdout(said):
        for name, value in TINY_LIMITS.items():
            patch.setattr(limits, name, value)
        try:
            status = VI.main(list(map(str, args)))
        except SystemExit as e:  # argparse's refusals
            status = e.code
    return status, err.getvalue(), said.getvalue()


def test_tiny_runs_within_the_tiny_limits_on_one_thread(tmp_path):
    """The unchanged TINY runs through (else every example would be a refusal), on one thread
    as python VI.py does (conftest pins it): a pool of threads made each run ten times slower."""
    import torch
    assert torch.get_num_threads() == 1
    status, err, _ = tiny_run({}, tmp_path)
    assert status == 0, err


@pytest.mark.filterwarnings("ignore:EM used max_maps")  # a drawn --em-tol or --em-max-maps
@settings(settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci")),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(changes=settings_drawn)
def test_every_setting_gives_a_finite_result_or_a_one_line_refusal(tmp_path_factory, changes):
    out = tmp_path_factory.mktemp("run")
    status, err, said = tiny_run(changes, out)
    written = sorted(p.name for p in out.iterdir())
    if status == 0:
        promised = VI.promised(VI.parse_args(["--no-figures"])[1])
        assert set(promised) <= set(written), (changes, set(promised) - set(written))
        strict_json((out / "results.json").read_text(encoding="utf-8"))
        assert not [n for n in written if n.startswith(".")], written  # no lock, no staging
    else:
        assert err.count("\n") == 1 and err.startswith("VI.py: error:"), (changes, err)
        assert status == 2 or (status == 1 and "diverged" in err), (changes, status, err)
        assert written == [], (changes, written)
        if status == 2:  # refused before any work: not even the configuration was printed
            assert said == "", (changes, said)
