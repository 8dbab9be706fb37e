"""The gradient reference of issue 29: L-BFGS-B with Devito's adjoint-state gradient on the devito adapter's
parameterisation. Benchmarks only, never a strategy: nondiff is about software whose gradient you do not have.

The objective is the least-squares misfit of the gained, downsampled gathers that the adapter's data are,
``J(x) = ½ Σ_shots ‖g·(R d(x) − d_obs)‖² / ‖g·d_obs‖²`` (``R``: keep every ``receiver_stride``-th receiver,
resample; ``g``: the time gain). Its gradient: the residual, mapped back through ``gᵀ`` and ``Rᵀ``, is
injected at the receivers into the adjoint wave equation run backwards in time; ``∂J/∂m = −Σ_t u·v_tt`` (the
saved forward wavefield ``u``, the adjoint ``v``), then chained through ``m = 1/v²``, the absorbing layer's
edge padding and the velocity grid's parameterisation (its Jacobian by central differences in NumPy, no
simulation). One evaluation of ``J`` and its gradient counts as 2 simulator calls (forward + adjoint), the
issue's convention; the curve is the model error of the best-misfit point after each evaluation.

    python benchmarks/experiments/devito_gradient.py [--set preset=small] [--instances 20] [--evals 25] \\
        [--json docs/devito_gradient.json]
    python benchmarks/experiments/devito_gradient.py --set preset=small --check   # gradient vs finite diff.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
SEED0 = 50_000
"""The held-out instances of benchmarks/experiments/strategies.py: the env's instances of seeds 50000…"""


class AdjointGradient:
    """Misfit and gradient of a :class:`~envs.adapters.devito.DevitoProblem` instance, on its grid."""

    def __init__(self, problem: Any) -> None:
        from envs.adapters.devito_physics import load_devito

        dv = load_devito()
        self.pb, s = problem, problem.solver
        self.s = s
        grid, so, m, damp = s.grid, s.space_order, s.m, s.damp
        self.u = dv.TimeFunction(name="us", grid=grid, time_order=2, space_order=so, save=s.nt)
        self.v = dv.TimeFunction(name="va", grid=grid, time_order=2, space_order=so)
        self.grad = dv.Function(name="grad", grid=grid)
        self.res = dv.SparseTimeFunction(name="res", grid=grid, npoint=s.rec.npoint, nt=s.nt)
        self.res.coordinates.data[:] = s.receivers
        dt = grid.stepping_dim.spacing
        u, v = self.u, self.v
        fwd = m * u.dt2 - u.laplace + damp * u.dt
        self.op_fwd = dv.Operator([dv.Eq(u.forward, dv.solve(fwd, u.forward))]
                                  + s.src.inject(field=u.forward, expr=s.src * dt**2 / m)
                                  + s.rec.interpolate(expr=u), subs=grid.spacing_map, name="ref_forward")
        adj = m * v.dt2 - v.laplace + damp * v.dt.T
        self.op_adj = dv.Operator([dv.Eq(v.backward, dv.solve(adj, v.backward))]
                                  + self.res.inject(field=v.backward, expr=self.res * dt**2 / m)
                                  + [dv.Inc(self.grad, -u * v.dt2)], subs=grid.spacing_map,
                                  name="ref_adjoint")
        n, c = problem.n, s.cells
        self.pad_index = np.pad(np.arange(n * n).reshape(n, n), c, mode="edge").ravel()
        pos = np.clip(problem.times / s.dt, 0.0, s.nt - 1.0)
        self.i = np.minimum(pos.astype(int), s.nt - 2)
        self.w = pos - self.i
        self.kept = np.arange(0, s.rec.npoint, problem.stride)

    def _process(self, rec: np.ndarray) -> np.ndarray:
        """``g·R``: a full record ``[nt, receivers]`` as the gained data ``[receivers', samples]``."""
        r = np.asarray(rec, dtype=np.float64)[:, self.kept]
        return (self.pb.gain[0] * ((1 - self.w)[:, None] * r[self.i] + self.w[:, None] * r[self.i + 1]).T)

    def _adjoint_source(self, resid: np.ndarray) -> np.ndarray:
        """``Rᵀ gᵀ``: a residual ``[receivers', samples]`` as a record ``[nt, receivers]``."""
        r = (self.pb.gain[0] * resid).T
        out = np.zeros((self.s.nt, self.s.rec.npoint))
        np.add.at(out, (self.i[:, None], self.kept[None, :]), (1 - self.w)[:, None] * r)
        np.add.at(out, (self.i[:, None] + 1, self.kept[None, :]), self.w[:, None] * r)
        return out

    def value_and_grid_gradient(self, v_grid: np.ndarray, instance: Any) -> tuple[float, np.ndarray]:
        """``J`` and ``∂J/∂v`` on the physical grid (km/s) for an instance's observed data."""
        s, pb = self.s, self.pb
        s.set_model(v_grid)
        g_obs = pb.gain * instance.data
        norm = float(np.sum(g_obs**2))
        value, grad_m = 0.0, np.zeros(s.grid.shape)
        for k, position in enumerate(s.sources):
            self.u.data[:] = 0.0
            s.src.coordinates.data[0] = position
            self.op_fwd.apply(time_M=s.nt - 2, dt=s.dt)
            resid = self._process(s.rec.data) - g_obs[k]
            value += 0.5 * float(np.sum(resid**2)) / norm
            self.res.data[:] = self._adjoint_source(resid) / norm
            self.v.data[:] = 0.0
            self.grad.data[:] = 0.0
            self.op_adj.apply(dt=s.dt)
            grad_m += np.asarray(self.grad.data, dtype=np.float64)
        # m = 1/v² on the padded grid; the padding copies edge values, so its adjoint sums them back
        grad_pad = grad_m * (-2.0 / np.pad(v_grid, s.cells, mode="edge") ** 3)
        n = pb.n
        return value, np.bincount(self.pad_index, weights=grad_pad.ravel(), minlength=n * n).reshape(n, n)

    def value_and_gradient(self, x: np.ndarray, instance: Any, eps: float = 1e-4) -> tuple[float, np.ndarray]:
        """``J(x)`` and ``∂J/∂x``: the grid gradient chained through the parameterisation (central differences
        of the NumPy velocity model, no simulation)."""
        value, g_v = self.value_and_grid_gradient(self.pb.model(x), instance)
        grad = np.empty(len(x))
        for j in range(len(x)):
            step = np.zeros(len(x))
            step[j] = eps
            hi, lo = np.clip(x + step, 0, 1), np.clip(x - step, 0, 1)
            grad[j] = float(np.sum(g_v * (self.pb.model(hi) - self.pb.model(lo)))) / (hi[j] - lo[j])
        return value, grad


def invert(ref: AdjointGradient, instance: Any, evals: int) -> dict[str, Any]:
    """L-BFGS-B from the prior mean; the model error of the best point after each evaluation (2 calls)."""
    from scipy.optimize import minimize

    pb, log = ref.pb, list[tuple[float, np.ndarray]]()

    class Spent(Exception):
        """The evaluation budget is used up (L-BFGS-B's own maxfun may overrun it inside a line search)."""

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        if len(log) >= evals:
            raise Spent
        value, grad = ref.value_and_gradient(np.asarray(x, dtype=np.float64), instance)
        log.append((value, np.array(x, dtype=np.float64)))
        return value, grad

    t0 = time.perf_counter()
    try:
        minimize(fun, pb.start(), jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * pb.param_dim,
                 options={"maxfun": evals, "maxiter": evals})
    except Spent:
        pass
    wall = time.perf_counter() - t0
    best, curve = np.inf, [pb.model_error(pb.model(pb.start()), instance)]
    x_best = pb.start()
    for value, x in log:
        if value < best:
            best, x_best = value, x
        curve.append(pb.model_error(pb.model(x_best), instance))
    return {"evals": len(log), "calls": 2 * len(log), "wall_s": wall, "curve_by_eval": curve,
            "rel_model_error": curve[-1], "prior_mean_error": curve[0]}


def check(ref: AdjointGradient, instance: Any) -> dict[str, Any]:
    """The adjoint gradient's directional derivative against central finite differences of ``J``."""
    rng = np.random.default_rng(1)
    x = np.clip(ref.pb.start() + 0.1 * rng.standard_normal(ref.pb.param_dim), 0.05, 0.95)
    value, grad = ref.value_and_gradient(x, instance)
    out: dict[str, Any] = {"J": value, "rows": []}
    for h in (1e-2, 3e-3):
        d = rng.standard_normal(len(x))
        d /= np.linalg.norm(d)
        fd = (ref.value_and_gradient(x + h * d, instance)[0] - ref.value_and_gradient(x - h * d, instance)[0])
        out["rows"].append({"h": h, "adjoint": float(grad @ d), "finite_difference": fd / (2 * h)})
    return out


def plot(suite: Path, gradients: list[Path], png: Path) -> dict[str, Any]:
    """The mean model-error curves of a strategies.py --suite JSON (devito) and of the gradient reference
    (one or more JSONs of this script) against calls per instance, in one figure; the calls the gradient needs
    to reach each row's final error are returned."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = json.loads(suite.read_text())
    fig, ax = plt.subplots(figsize=(8, 5))
    colours = [plt.get_cmap("tab20")(i) for i in range(20)]
    for i, (name, row) in enumerate(res["rows"].items()):
        ax.plot(np.arange(len(row["curve"])), row["curve"], lw=1.4, color=colours[i % 20], label=name)
    reach: dict[str, Any] = {}
    for path in gradients:
        ref = json.loads(path.read_text())
        calls = np.array([int(k) for k in ref["mean_curve_by_calls"]])
        curve = np.array(list(ref["mean_curve_by_calls"].values()))
        label = f"adjoint gradient, L-BFGS-B ({path.stem})"
        ax.plot(calls, curve, "k-", lw=2.4, label=label)
        reach[label] = {name: (int(calls[np.argmax(curve <= row["score"])]) if np.any(curve <= row["score"])
                               else None) for name, row in res["rows"].items()}
    if "sbi NPE" in res:
        ax.plot([0], [res["sbi NPE"]["score"]], "rs", ms=8, label="sbi NPE posterior mean")
    ax.set_xscale("symlog", linthresh=20)
    ax.set_xlabel("simulator calls per instance (gradient: forward + adjoint = 2)")
    ax.set_ylabel(f"mean relative model error over {res['instances']} held-out instances")
    ax.set_title(f"devito: black-box strategies ({res['train_calls_all']:,} training calls) and the gradient")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return reach


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    import gymnasium as gym
    import yaml

    import envs  # noqa: F401

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an env: setting")
    p.add_argument("--instances", type=int, default=20)
    p.add_argument("--evals", type=int, default=25, help="L-BFGS-B evaluations per instance (2 calls each)")
    p.add_argument("--check", action="store_true", help="only compare the gradient with finite differences")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--plot", nargs="+", metavar="JSON", help="a strategies.py --suite JSON of devito, then "
                   "this script's JSONs: the curves side by side in --png (no simulation)")
    p.add_argument("--png", default=str(ROOT / "docs" / "devito_vs_gradient.png"))
    args = p.parse_args(argv)
    if args.plot:
        print(json.dumps(plot(Path(args.plot[0]), [Path(g) for g in args.plot[1:]], Path(args.png))))
        return 0
    kwargs = yaml.safe_load((ROOT / "configs" / "devito.yaml").read_text())["env"]
    kwargs.pop("id")
    kwargs.update({k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)})
    env: Any = gym.make("nondiff/Devito-v0", **kwargs)
    ref = AdjointGradient(env.unwrapped.problem)
    if args.check:
        env.reset(seed=SEED0)
        print(json.dumps(check(ref, env.unwrapped.instance)))
        return 0
    rows = []
    for i in range(args.instances):
        env.reset(seed=SEED0 + i)
        rows.append(invert(ref, env.unwrapped.instance, args.evals))
        print(json.dumps({"instance": i, **{k: v for k, v in rows[-1].items() if k != "curve_by_eval"},
                          "loadavg": os.getloadavg()}), flush=True)
    width = max(len(r["curve_by_eval"]) for r in rows)
    curves = [r["curve_by_eval"] + [r["curve_by_eval"][-1]] * (width - len(r["curve_by_eval"])) for r in rows]
    mean = np.mean(curves, axis=0)
    out = {"settings": kwargs, "instances": args.instances, "evals": args.evals,
           "mean_rel_model_error": float(mean[-1]), "mean_curve_by_calls": {2 * k: float(v) for k, v in
                                                                          enumerate(mean)},
           "mean_wall_s": float(np.mean([r["wall_s"] for r in rows])), "loadavg_end": os.getloadavg(),
           "rows": rows}
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
