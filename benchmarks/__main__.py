"""Run the benchmarks and print Markdown tables (and write JSON).

    python -m benchmarks            # full run (a few minutes)
    python -m benchmarks --quick    # under a minute: fewer optimizers, trees and rounds
    python -m benchmarks --optimizers radam,signum --trees resnet50 --no-e2e   # a subset

Never fails on timing: the numbers are reported, not asserted. Candidates of one group
(one optimizer on one tree) run interleaved, one step each per round, and ratios are
taken within a round, so that the noise of a shared machine hits all of them alike.
"""

from __future__ import annotations

import os

# torch's OpenMP workers busy-wait after each parallel region and would steal both cores
# from the JAX step timed next in the same interleaved round (measured here: a JAX triad
# right after a torch step moved 23 GB/s instead of 32). Sleep instead of spinning.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import gradtx

# XLA:CPU's sibling multi-output fusion, which gradtx.update_and_apply needs to run a step
# as one loop per leaf; it must be on before JAX starts. "optax" is compiled without it.
gradtx.enable_cpu_multi_output_fusion()

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402

from benchmarks import e2e, state_size, steps  # noqa: E402
from benchmarks.timing import Candidate, interleave, ratios  # noqa: E402
from benchmarks.trees import n_floats  # noqa: E402

# The classic seven on every tree; the catalogue on ResNet-50 shapes only.
CLASSIC = tuple(name for name in steps.OPTIMIZERS if name not in steps.CATALOGUE)
FULL = {
    "trees": ("one16M", "resnet50", "many2000"),
    "optimizers": tuple(steps.OPTIMIZERS),
    "rounds": 10,
    "torch": ("for-loop", "foreach", "fused"),
    # Compiling the 2,000-leaf tree takes optax and plain gradtx 5-20 s per optimizer:
    # three optimizers there keep the full run near ten minutes.
    "only": {"one16M": CLASSIC, "many2000": ("momentum", "adagrad", "adam")},
}
QUICK = {
    "trees": ("one16M", "many500"),
    "optimizers": ("momentum", "adam"),
    "rounds": 5,
    "torch": ("fused",),
}
N_LEAVES = {"one16M": 1, "resnet50": 161, "many2000": 2000, "many500": 500}


def jax_impls(tree: str) -> tuple[str, ...]:
    if tree.startswith("many"):
        return ("optax", "optax (MOF)", "gradtx", "gradtx packed", "gradtx packed+fused")
    return ("optax", "optax (MOF)", "gradtx", "gradtx fused")


def md_table(header: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def run_group(opt: str, tree: str, cfg: dict) -> dict:
    compile_log: dict = {}
    cands: list[Candidate] = [steps.triad(n_floats(tree))]
    cands += steps.jax_candidates(opt, tree, jax_impls(tree), compile_log)
    cands += steps.torch_candidates(opt, tree, cfg["torch"])
    dropped = interleave(cands, cfg["rounds"])
    by = {c.name: c for c in cands}
    tri = by["triad"]
    result = {"triad_GBps": tri.bytes_per_step / tri.median / 1e9, "impls": {}, "ratios": {}, "compile": compile_log,
              "dropped_too_slow_s": dropped}
    for c in cands[1:]:
        # % of bandwidth round by round: this step's GB/s over the triad's in the same round.
        pct = [100 * (c.bytes_per_step / t) / (tri.bytes_per_step / tt) for t, tt in zip(c.times, tri.times)]
        result["impls"][c.name] = {"ms": 1e3 * c.median, "GBps": c.bytes_per_step / c.median / 1e9,
                                   "pct_bw": statistics.median(pct), "faults_per_step": c.faults_per_step}
    gradtx_names = [n for n in by if n.startswith("gradtx")]
    best = min(gradtx_names, key=lambda n: by[n].median)  # noqa: F821 - `del by` below runs after min
    result["best_gradtx"] = best
    for ref in ("optax", "optax (MOF)", "torch fused", "torch foreach"):
        if ref in by:
            for name in [n for n in by if n.startswith("gradtx")]:
                result["ratios"][f"{name} / {ref}"] = ratios(by[name], by[ref])
    del cands, by
    gc.collect()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under a minute, for checking")
    parser.add_argument("--json", default=os.path.join("results", "bench.json"), help="where to write JSON")
    parser.add_argument("--no-e2e", action="store_true", help="skip the MNIST MLP end-to-end run")
    parser.add_argument("--optimizers", help="comma-separated subset, on every tree of the run")
    parser.add_argument("--trees", help=f"comma-separated subset of {', '.join(N_LEAVES)}")
    parser.add_argument("--no-extra", action="store_true",
                        help=f"skip the separate benchmarks ({', '.join(EXTRA)}), each its own process")
    args = parser.parse_args()
    cfg = dict(QUICK if args.quick else FULL)
    if args.optimizers:
        cfg["optimizers"], cfg["only"] = tuple(args.optimizers.split(",")), {}
    if args.trees:
        cfg["trees"] = tuple(args.trees.split(","))
    t_start = time.perf_counter()
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    report: dict = {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items() if k != "only"},
                    "quick": args.quick, "sibling_fusion": gradtx.fuses_sibling_outputs(),
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "jax": jax.__version__, "torch": torch.__version__},
                    "groups": {}}
    for tree in cfg["trees"]:
        for opt in cfg.get("only", {}).get(tree, cfg["optimizers"]):
            print(f"... {opt} on {tree}", flush=True)
            report["groups"][f"{opt}/{tree}"] = run_group(opt, tree, cfg)
    if not args.no_e2e:
        print("... MNIST MLP end to end", flush=True)
        report["e2e"] = e2e.run(args.quick)
    report["state_size"] = state_size.table((4096, 4096))
    if not args.no_extra:
        report["extra"] = {name: run_extra(name, args.quick) for name in EXTRA}
    report["wall_s"] = time.perf_counter() - t_start
    print()
    print(render(report))
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    print(f"\nJSON: {args.json}  ({report['wall_s']:.0f} s)")


# Benchmarks with their own process and tables: Muon against optax.contrib.muon (4096 x 4096
# and ResNet-50 shapes), SOAP and Shampoo against Adam (step, refresh and state bytes), the
# fused step inside an unmodified Flax NNX train step, and a sweep of N = 1 to 128 settings
# of the MNIST MLP in one program against the same settings one after another.
EXTRA = ("muon", "preconditioned", "flax_step", "sweeps", "diagnostics")


def run_extra(name: str, quick: bool) -> str:
    """``python -m benchmarks.<name> [--quick]``'s printed tables (its errors, if it failed)."""
    print(f"... benchmarks.{name}", flush=True)
    cmd = [sys.executable, "-m", f"benchmarks.{name}", *(["--quick"] if quick else [])]
    run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return run.stdout if run.returncode == 0 else f"failed ({run.returncode}):\n{run.stderr[-2000:]}"


def render(report: dict) -> str:
    groups = report["groups"]
    out = [(f"Machine: {report['machine']['cpus']} CPUs, jax {report['machine']['jax']}, torch "
           f"{report['machine']['torch']}; {'quick' if report['quick'] else 'full'} run, "
           f"{report['config']['rounds']} interleaved rounds, medians. XLA:CPU sibling multi-output fusion: "
           f"{'on' if report.get('sibling_fusion') else 'off'} (\"optax\" compiled without it).")]
    out.append("\n### Bandwidth (donated jitted triad `a = a + b + 2c`, float32)\n")
    out.append(md_table(["tree", "floats", "GB/s (median over groups)"],
                        [[t, n_floats(t), statistics.median(g["triad_GBps"] for k, g in groups.items()
                                                            if k.endswith("/" + t))]
                         for t in report["config"]["trees"]]))
    out.append("\n### Step time per optimizer and tree\n")
    out.append("GB/s counts an ideal step (read params, grads and state once, write params and "
               "state once); % of bandwidth is against the triad of the same round. Faults: "
               "minor page faults per step (fresh, undonated temporaries).\n")
    rows = []
    for key, g in groups.items():
        opt, tree = key.split("/")
        for name, r in g["impls"].items():
            rows.append([opt, tree, name, r["ms"], r["GBps"], f"{r['pct_bw']:.0f}%", r["faults_per_step"]])
        for name, dt in g.get("dropped_too_slow_s", {}).items():
            rows.append([opt, tree, name, 1e3 * dt, "-", "(dropped: one warm-up step)", "-"])
    out.append(md_table(["optimizer", "tree", "implementation", "ms/step", "GB/s", "% of bandwidth", "faults/step"],
                        rows))
    out.append("\n### Interleaved ratios of step time (< 1: gradtx faster)\n")
    rows = []
    for key, g in groups.items():
        for name, r in g["ratios"].items():
            rows.append([key, name, r["min"], r["median"], r["max"]])
    out.append(md_table(["optimizer/tree", "ratio", "min", "median", "max"], rows))
    out.append("\n### Compile time and fusions (`jit(...).lower(...).compile()`)\n")
    rows = []
    for key, g in groups.items():
        tree = key.split("/")[1]
        n_leaves = N_LEAVES[tree]
        for name, c in g["compile"].items():
            packed = "packed" in name
            rows.append([key, name, c["compile_s"], c["fusions"],
                         f"{c['fusions'] / (1 if packed else n_leaves):.2f}" + (" (per buffer)" if packed else "")])
    out.append(md_table(["optimizer/tree", "implementation", "compile s", "array fusions", "per leaf"], rows))
    if "e2e" in report:
        e = report["e2e"]
        out.append(f"\n### End to end: {e['model']}\n")
        torch_sps = e["torch eager (torch.optim.Adam)"]["steps_per_s"]
        rows = [[k, v["steps_per_s"], f"{v['steps_per_s'] / torch_sps:.2f}x", v["first_epoch_s"], v["final_loss"]]
                for k, v in e.items() if isinstance(v, dict) and "steps_per_s" in v]
        out.append(md_table(["implementation", "steady steps/s", "vs torch eager",
                             f"first epoch s ({e['epoch_examples']} examples, incl. compile)", "last loss"], rows))
        r = e["speedup (torch time / gradtx time, per round)"]
        out.append(f"\nInterleaved speedup over torch eager, per epoch round: min {r['min']:.2f}x, "
                   f"median {r['median']:.2f}x, max {r['max']:.2f}x\n")
    if "state_size" in report:
        out.append("\n### Optimizer state size (jax.eval_shape of init)\n")
        out.append(report["state_size"])
    for name, text in report.get("extra", {}).items():
        out.append(f"\n### `python -m benchmarks.{name}`\n")
        out.append(text.strip())
    return "\n".join(out)


if __name__ == "__main__":
    main()
