"""Print the figures behind the statistical checks of tests/test_montecarlo.py.

Runs the test module's own checks (same seeds, sizes and tolerances) and prints each
estimate, its standard error and its distance from the exact answer, for the right models
and for the deliberately wrong ones:

    python tools/montecarlo_checks.py
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import test_montecarlo as T  # noqa: E402

ex = [T.box(20_000, n, T.EXIT_T1, 0.5, keep_x=False) for n in (300, 1200, 4800)]
for r in ex:
    e = r.estimate("hit_time")
    print(f"exit time h={T.EXIT_T1 / r.n_steps:.3g}: {e.value:.5f} se {e.se:.5f} "
          f"bias {e.value - 0.25:+.5f}")
x = T.extrapolated(ex[1].estimate("hit_time"), ex[2].estimate("hit_time"))
print(f"extrapolated {x.value:.5f} se {x.se:.5f} ({(x.value-0.25)/x.se:+.2f} SE)")
wr = [T.box(20_000, n, T.EXIT_T1, 0.5, sigma=1.15, keep_x=False) for n in (1200, 4800)]
print("wrong sigma:", T.exit_time_check(*wr, 0.25)[1])
pr = [T.box(40_000, n, 1.0, 0.0, lo=-1e300, hi=1.0, save_at=4) for n in (256, 1024)]
for ok, msg in T.reflection_checks(pr, 1.0):
    print(ok, msg)
plain, anti = [T.linear(2**17, 256, T.gbm_params(T.MU, T.VOL), antithetic=a) for a in (False, True)]
print("call plain", plain.estimate("call"), "anti", anti.estimate("call"), "exact",
      T.CALL_EXACT, "SE ratio", anti.estimate("call").se / plain.estimate("call").se)
res, v = T.ou_stationary(T.THETA)
print(T.stationary_histogram_check(res, v)[1])
wrong, _ = T.ou_stationary(1.3 * T.THETA, n_paths=50_000)
print("wrong theta:", T.stationary_histogram_check(wrong, v)[1])
ou = T.linear(40_000, T.STEPS, T.ou_params(T.THETA, T.SIGMA), save_at=4, stats=True)
print(T.ou_check(ou, 1.0, 4, "x")[1])
print(T.ou_check(ou, 1.0, 4, "sq")[1])
wrong_ou = T.linear(40_000, T.STEPS, T.ou_params(1.25 * T.THETA, T.SIGMA), save_at=4)
print("wrong theta:", T.ou_check(wrong_ou, 1.0, 4, "x")[1])
print("wrong theta:", T.ou_check(wrong_ou, 1.0, 4, "sq")[1])
wrong_call = T.linear(2**17, 256, T.gbm_params(T.MU, 1.15 * T.VOL), antithetic=True)
print("wrong sigma:", T.call_check(wrong_call)[1])
wrong_pr = [T.box(40_000, n, 1.0, 0.0, lo=-1e300, hi=1.2, save_at=4) for n in (256, 1024)]
for ok, msg in T.reflection_checks(wrong_pr, 1.0):
    print("wrong level:", ok, msg)
