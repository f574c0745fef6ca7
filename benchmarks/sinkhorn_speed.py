"""Batched Sinkhorn layer against POT's ot.sinkhorn looped over the same problems.

    .venv/bin/python benchmarks/sinkhorn_speed.py [--pairs 64 --frames 50 --repeats 5 --threads 1]

All solve the same 64 entropic OT problems (cosine costs between random 32-d frame
embeddings, uniform marginals, eps 0.1). robalign runs its log-domain iterations on the
whole batch at once (float32, as rewards train, and float64); POT loops `ot.sinkhorn` over
the pairs, once with its default solver to its default tolerance and once with its
log-domain solver for the same number of iterations as ours (equal work). "to POT's
tolerance" stops ours as POT's default stops (marginal error <= 1e-9, float64; 1e-6 in
float32, whose rounding is about that), so both do the iterations the problems need. The largest
plan difference to POT's default solution is printed beside each, also for fewer of our
iterations (the tests require agreement to 1e-5). Timings are the median
of `--repeats` runs, measured side by side in one process.
"""

import argparse
import warnings
import statistics
import time

import numpy as np
import ot
import torch

from robalign.rewards.sinkhorn import cosine_cost, sinkhorn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's); 1 avoids thread contention on a shared machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Sinkhorn did not converge")  # fixed iterations on purpose

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.pairs, args.frames, args.dim, generator=gen, dtype=torch.float64)
    y = torch.randn(args.pairs, args.frames, args.dim, generator=gen, dtype=torch.float64)
    cost = cosine_cost(x, y)
    costs = [c.numpy() for c in cost]
    a = b = np.full(args.frames, 1 / args.frames)

    variants = {
        **{f"robalign f32 {n:3d} it": (lambda n=n: sinkhorn(cost.float(), args.eps, n)) for n in (20, 30, 50)},
        "robalign float32": lambda: sinkhorn(cost.float(), args.eps, args.iters),
        "robalign float64": lambda: sinkhorn(cost, args.eps, args.iters),
        "robalign f64 to POT's tol": lambda: sinkhorn(cost, args.eps, 1000, tol=1e-9),
        "robalign f32 to 1e-6": lambda: sinkhorn(cost.float(), args.eps, 1000, tol=1e-6),
        "POT loop, default": lambda: [ot.sinkhorn(a, b, c, args.eps) for c in costs],
        "POT loop, log": lambda: [ot.sinkhorn(a, b, c, args.eps, method="sinkhorn_log", numItermax=args.iters,
                                              stopThr=0.0) for c in costs],
    }
    times, plans = {}, {}
    for name, fn in variants.items():
        plans[name] = fn()  # also warms up
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - start)
        times[name] = statistics.median(runs)
    reference = plans["POT loop, default"]
    log = ot.sinkhorn(a, b, costs[0], args.eps, log=True)[1]
    print(f"POT's default solver stops after {log['niter']} iterations on the first pair")
    print(f"{args.pairs} pairs of {args.frames} frames, eps {args.eps}, {args.iters} iterations, "
          f"{torch.get_num_threads()} torch threads")
    for name, t in times.items():
        diff = max(float(np.abs(np.asarray(p, dtype=np.float64) - q).max()) for p, q in zip(plans[name], reference))
        print(f"  {name:26s} {t * 1e3:8.1f} ms   plan difference {diff:.1e}")
    for ours in [n for n in times if n.startswith("robalign")]:
        print(f"  {ours:26s}: {times['POT loop, default'] / times[ours]:.1f}x POT default, "
              f"{times['POT loop, log'] / times[ours]:.1f}x POT log")

if __name__ == "__main__":
    main()
