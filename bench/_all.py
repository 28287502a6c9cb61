"""./run bench all: every benchmark in bench/ (each NAME.py not starting with "_"), one after another,
then bench/results/summary.json and summary.png charting every headline figure against its goal.

Options pass through to each script (--smoke, --results DIR). A script that fails is reported and the
others still run; the exit status is 1 if any failed. A script names its headline figures with
_stack.headline(...) in write_results(..., headlines=[...]); one that names none is listed without a bar.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _stack import bench_args

BENCH = Path(__file__).resolve().parent


def scripts() -> list[str]:
    return sorted(p.stem for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def share_of_goal(h: dict[str, Any]) -> float:
    """1.0 = exactly the goal; above 1 = better than the goal, whichever way `better` points."""
    value, goal = float(h["value"]), float(h["goal"])
    if h.get("better", "higher") == "higher":
        return value / goal if goal else 0.0
    if value <= 0:  # nothing of what should be low (0 oversold): the goal exactly, or far better than it
        return 1.0 if goal <= 0 else 20.0
    return goal / value if goal > 0 else 0.0


def summarize(results: Path, runs: dict[str, dict[str, Any]]) -> tuple[Path, Path]:
    """summary.json (every headline, every run's status) and summary.png (the chart)."""
    headlines: list[dict[str, Any]] = []
    machine: dict[str, Any] = {}
    for name in sorted(runs):
        path = results / f"{name}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        machine = machine or data.get("machine", {})
        runs[name]["measured_at"] = data.get("measured_at")
        runs[name]["headlines"] = len(data.get("headlines", []))
        for h in data.get("headlines", []):
            headlines.append({"benchmark": name, **h, "share_of_goal": round(share_of_goal(h), 3)})
    summary = results / "summary.json"
    summary.write_text(
        json.dumps(
            {
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": machine,
                "runs": runs,
                "headlines": headlines,
            },
            indent=2,
        )
        + "\n"
    )
    return summary, chart(results / "summary.png", headlines, machine)


def chart(path: Path, headlines: list[dict[str, Any]], machine: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display: a file
    import matplotlib.pyplot as plt

    rows = list(reversed(headlines)) or [
        {"benchmark": "-", "name": "no headline figures", "share_of_goal": 0.0, "met": False}
    ]
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.55 * len(rows)))
    shares = [min(float(r["share_of_goal"]), 20.0) for r in rows]  # a bar past 20x the goal is drawn at 20x
    colours = ["#2e7d32" if r.get("met") else "#c62828" for r in rows]
    ax.barh(range(len(rows)), shares, color=colours)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlim(min([0.05, *[s * 0.8 for s in shares if s > 0]]), max(25.0, *shares))
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{r['benchmark']}: {r['name']}" for r in rows], fontsize=8)
    for i, r in enumerate(rows):
        if "value" not in r:
            continue
        sign = ">=" if r.get("better", "higher") == "higher" else "<="
        label = f"{r['value']}{r.get('unit', '')} (goal {sign} {r['goal']}{r.get('unit', '')})"
        ax.text(max(shares[i], 0.05) * 1.05, i, label, va="center", fontsize=8)
    ax.set_xlabel("share of goal (log scale; 1 = the goal, dashed; green = met)")
    ax.set_title(
        f"Rappit benchmarks: {machine.get('cpus', '?')} CPUs ({machine.get('cpu_model', '?')}), "
        f"PostgreSQL {str(machine.get('postgres', '?')).split(' on ')[0].removeprefix('PostgreSQL ')}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> int:
    args = bench_args(__doc__)
    passthrough = (["--smoke"] if args.smoke else []) + ["--results", str(args.results)]
    runs: dict[str, dict[str, Any]] = {}
    for name in scripts():
        print(f"\n=== bench {name} ===", flush=True)
        started = time.perf_counter()
        rc = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), *passthrough], check=False).returncode
        runs[name] = {"exit_code": rc, "seconds": round(time.perf_counter() - started, 1)}
        if rc:
            print(f"=== bench {name} FAILED (exit {rc}) ===", file=sys.stderr, flush=True)
    summary, png = summarize(args.results, runs)
    print("\n=== summary ===")
    for h in json.loads(summary.read_text())["headlines"]:
        mark = "met" if h["met"] else "NOT met"
        sign = ">=" if h["better"] == "higher" else "<="
        print(
            f"  {h['benchmark']:<12}{h['name']:<48}{h['value']:>10}{h['unit']}"
            f"  goal {sign} {h['goal']}  {mark}"
        )
    for name, run in runs.items():
        if run["exit_code"]:
            print(f"  {name}: FAILED (exit {run['exit_code']})")
        elif not run.get("headlines"):
            print(f"  {name}: no headline figures (see {name}.json)")
    print(f"\nwritten: {summary}, {png}")
    return 1 if any(r["exit_code"] for r in runs.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
