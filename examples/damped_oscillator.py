"""A user-defined SDE: a damped oscillator with noise on the velocity.

    python examples/damped_oscillator.py

The stationary law of dx = v dt, dv = (-k x - c v) dt + s dW has Var[x] = s^2 / (2 c k)
and Var[v] = s^2 / (2 c); the in-kernel statistics at t = 60 are compared with them.
"""

import numpy as np

import fastsde as fs


def drift(t, x, p, out):
    out[0] = x[1]
    out[1] = -p[0] * x[0] - p[1] * x[1]


def diffusion(t, x, p, out):
    out[0] = 0.0
    out[1] = p[2]


k, c, s = 1.0, 0.5, 0.3
model = fs.SDE(drift, diffusion, dim=2, noise="additive", params=(k, c, s))
res = fs.simulate(model, [1.0, 0.0], (0.0, 60.0), 6000, 50_000, method="heun", seed=3,
                  save_at=6, stats=True)
var_x, var_v = res.var[-1]
n = res.count[-1, 0]
for name, est, exact in (("Var[x]", var_x, s**2 / (2 * c * k)), ("Var[v]", var_v, s**2 / (2 * c))):
    se = exact * np.sqrt(2 / (n - 1))
    print(f"{name}: simulated {est:.5f}, exact {exact:.5f}, z = {(est - exact) / se:+.2f}")
print(res)
