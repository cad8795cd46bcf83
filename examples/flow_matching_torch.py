"""Train a small flow-matching network with PyTorch, then sample it with fastsde.

    python examples/flow_matching_torch.py [--iters 2000] [--paths 1000000] [--steps 20]

PyTorch is optional: without it the script says so and exits. Steps:

1. Target: 8 Gaussians (std 0.3) on a circle of radius 4 (``fs.GaussianMixturePath.ring``).
2. Conditional flow matching on the linear path x_t = t x_1 + (1 - t) x_0, x_0 ~ N(0, I):
   minimise E |u_theta(x_t, t) - (x_1 - x_0)|^2 over an MLP [x, t] -> u (3-64-64-2, SiLU).
   The minimiser is the marginal field u_t, which this target has in closed form, so the
   script also reports the field error E_t E_{x ~ p_t} |u_theta - u_t|^2 directly.
3. Export the weights to ``flow_matching_ring.npz`` (W0, b0, ..., activation), load them as
   ``fs.MLPField``, check its forward pass against torch's, and sample ``--paths``
   particles with Heun in fastsde's kernel, next to the exact field's flow at the same
   steps.
4. Metrics against exact samples: sliced W1 (with the exact-vs-exact level), component
   occupation chi-square, per-component mean errors.
"""

import argparse
import sys
import time

import numpy as np

import fastsde as fs
from fastsde import metrics


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--paths", type=int, default=1_000_000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default="flow_matching_ring.npz")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed: this example needs it for training "
              "(pip install torch). Nothing was run.")
        return 0

    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    ring = fs.GaussianMixturePath.ring(8, radius=4.0, std=0.3)
    net = torch.nn.Sequential(
        torch.nn.Linear(3, args.hidden), torch.nn.SiLU(),
        torch.nn.Linear(args.hidden, args.hidden), torch.nn.SiLU(),
        torch.nn.Linear(args.hidden, 2))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.iters)
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    for it in range(args.iters):
        x1 = torch.as_tensor(ring.sample(args.batch, 1.0, seed=rng), dtype=torch.float32)
        x0 = torch.randn_like(x1)
        t = torch.rand(args.batch, 1)
        xt = t * x1 + (1 - t) * x0
        loss = ((net(torch.cat([xt, t], dim=1)) - (x1 - x0)) ** 2).sum(dim=1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (it + 1) % max(1, args.iters // 5) == 0:
            print(f"iter {it + 1:>6}  flow-matching loss {loss.item():.4f}")
    print(f"trained in {time.perf_counter() - start:.1f} s")

    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    arrays = {}
    for i, lin in enumerate(linears):
        arrays[f"W{i}"] = lin.weight.detach().double().numpy()
        arrays[f"b{i}"] = lin.bias.detach().double().numpy()
    np.savez(args.out, activation=np.array("silu"), **arrays)
    field = fs.MLPField.from_npz(args.out)
    print(f"exported {field!r} ({field.params.size} weights) to {args.out}")

    # The kernel's network is the exported one: compare with torch on a batch.
    probe = ring.sample(1000, 0.5, seed=1)
    tp = np.full((1000, 1), 0.5)
    with torch.no_grad():
        ref = net(torch.as_tensor(np.hstack([probe, tp]), dtype=torch.float32)).double().numpy()
    print(f"max |MLPField - torch| on 1000 points: {np.abs(field(probe, 0.5) - ref).max():.2e} "
          f"(torch runs in float32)")

    # Field error against the exact marginal field (possible only with an exact target).
    errs = []
    for t in np.linspace(0.05, 0.95, 10):
        x = ring.sample(20_000, float(t), seed=2)
        errs.append(np.mean(np.sum((field(x, t) - ring.velocity(x, float(t))) ** 2, axis=1)))
    print(f"field error E_t E_(x~p_t) |u_theta - u_t|^2 = {np.mean(errs):.4f} (t on 10 points "
          f"in [0.05, 0.95]; for scale E|u_t|^2 at t = 0.5 is "
          f"{np.mean(np.sum(ring.velocity(ring.sample(20_000, 0.5, seed=3), 0.5) ** 2, 1)):.2f})")

    n = args.paths
    exact = ring.sample(n, 1.0, seed=4)
    sw = metrics.SlicedW1(exact, n_projections=32, seed=0)
    print(f"\n{n:,} particles, Heun with {args.steps} steps, float32; sliced W1 of two exact "
          f"sample sets of this size: about {sw.floor(n):.4f}")
    print(f"{'vector field':<16} {'sliced W1':>10} {'occ. chi2 p':>12} {'max|z| occ':>10} "
          f"{'max|mean err|':>13} {'path-steps/s':>13} {'wall s':>7}")
    for label, model in (("MLP (learned)", field.ode()), ("exact u_t", ring.flow())):
        res = fs.simulate(model, fs.Normal(0.0, 1.0), (0.0, 1.0), args.steps, n,
                          method="heun", device="cpu", seed=5, dtype="float32")
        x = res.x.astype(np.float64)
        x = x[np.all(np.isfinite(x), axis=1)]
        occ = metrics.occupation_test(x, ring)
        err = metrics.component_errors(x, ring)
        print(f"{label:<16} {sw(x):>10.4f} {occ.p_value:>12.3g} {np.abs(occ.z).max():>10.2f} "
              f"{err.max_mean_error:>13.4f} {res.path_steps_per_s:>13.3e} {res.elapsed_s:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
