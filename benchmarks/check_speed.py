"""How long `cnndsl check` takes, as a user sees it: whole-process wall time of
`python -m cnndsl check FILE`, median and min over repeats, for real networks, for
torchinfo on the same network in the same run, and for generated deep networks
(1k to 10k layers) to show the cost is linear in size.

    python benchmarks/check_speed.py            # writes benchmarks/results/check_speed.md
    python benchmarks/check_speed.py --quick    # fewer repeats, prints only

Targets (DESIGN.md): VGG16 under 0.3 s, ResNet-152 under 0.5 s, 10,000 layers under 2 s.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "check_speed.md"
NETWORKS = [("architectures/vgg16.arch", 0.3), ("architectures/resnet50.arch", None),
            ("architectures/resnet152.arch", 0.5)]
DEPTHS = (1_000, 2_000, 5_000, 10_000)
TORCHINFO = ("import torchinfo, torchvision\n"
             "s = torchinfo.summary(torchvision.models.vgg16(), (1, 3, 224, 224), verbose=0)\n"
             "print(s.total_params)\n")


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], repeats: int, env: dict | None = None, cwd: Path = ROOT) -> tuple[float, float, float, str]:
    """Running argv to completion `repeats` times: (median wall s, min wall s, median CPU s
    (user + sys of the child: steadier than wall time on a busy machine), last stdout line)."""
    walls, cpus, out = [], [], ""
    for _ in range(repeats):
        cpu, start = _child_cpu(), time.perf_counter()
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env)
        walls.append(time.perf_counter() - start)
        cpus.append(_child_cpu() - cpu)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
        out = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    return statistics.median(walls), min(walls), statistics.median(cpus), out


STAGES = """\
import json, sys, time
t = [time.perf_counter()]
from cnndsl.ir.build import build
from cnndsl.passes import count, infer_shapes, receptive_fields
from cnndsl.passes.report import Report, render
from cnndsl.source import Source
from cnndsl.syntax import parser
t.append(time.perf_counter())
parser._parser()                       # the LALR tables, shipped as data in cnndsl/syntax/_lalr.py
t.append(time.perf_counter())
source = Source.from_path(sys.argv[1])
module = parser.parse(source)
t.append(time.perf_counter())
graph = build(module)
t.append(time.perf_counter())
shapes = infer_shapes(graph)
report = Report(graph, shapes, count(graph, shapes), receptive_fields(graph, shapes), source.name)
t.append(time.perf_counter())
render(report)
t.append(time.perf_counter())
print(json.dumps([b - a for a, b in zip(t, t[1:])]))
"""
STAGE_NAMES = ("imports", "grammar (LALR tables, shipped)", "parse + AST", "build IR", "shapes, counts, RF", "render text")


def warm_up() -> None:
    """cnndsl as a second run finds it: its modules byte-compiled (pip compiles an installed
    package's, not an editable one's, and PYTHONDONTWRITEBYTECODE may be set)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "cnndsl"], cwd=ROOT, check=True)
    subprocess.run(check_argv("architectures/lenet5.arch"), cwd=ROOT, check=True, capture_output=True)


def stages(path: str, repeats: int) -> list[float]:
    """Median seconds of each stage of `check`, in a fresh interpreter each time."""
    runs = []
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-c", STAGES, path], cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"stage timing failed on {path}:\n{done.stderr}")
        runs.append(json.loads(done.stdout))
    return [statistics.median(col) for col in zip(*runs)]


def deep_network(layers: int) -> str:
    """`layers` layer lines, one a line: conv / batch norm / relu repeated, 32x32x16 throughout."""
    cycle = ("3x3 conv, 16", "batch norm", "relu")
    body = "\n".join(cycle[i % 3] for i in range(layers))
    return f"network Deep{layers}\ninput 32x32x16\n{body}\n"


def check_argv(path: str) -> list[str]:
    return [sys.executable, "-m", "cnndsl", "check", path]


def machine() -> list[str]:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return [f"- date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
            f"- machine: `{' '.join(platform.uname())}`",
            f"- CPU: {cpu}, {os.cpu_count()} logical cores; load average at start {load}",
            f"- Python: {platform.python_version()} ({sys.executable})",
            "- command: `python benchmarks/check_speed.py` (from the repository root)"]


def run(repeats: int) -> tuple[list[str], list[str], list[str]]:
    """Rows of the three result tables: real networks (+ torchinfo), generated depths, stages."""
    real = []
    for rel, target in NETWORKS:
        if not (ROOT / rel).is_file():
            continue
        med, low, cpu, _ = timed(check_argv(rel), repeats)
        verdict = "" if target is None else (f"< {target} s: {'yes' if med < target else 'NO'}")
        real.append(f"| `python -m cnndsl check {rel}` | {med:.3f} | {low:.3f} | {cpu:.3f} | {verdict} |")
        print(real[-1], flush=True)
    if importlib.util.find_spec("torchinfo") is not None:
        med, low, cpu, params = timed([sys.executable, "-c", TORCHINFO], max(3, repeats // 4))
        real.append(f"| torchinfo.summary(torchvision.models.vgg16(), (1,3,224,224)), whole process "
                    f"({int(params):,} params) | {med:.3f} | {low:.3f} | {cpu:.3f} | reference |")
    else:
        real.append("| torchinfo | not installed | | | |")
    print(real[-1], flush=True)

    deep = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "deep10.arch"
        base.write_text(deep_network(10))
        base_med, base_low, base_cpu, _ = timed(check_argv(str(base)), repeats)
        deep.append(f"| 10 (startup baseline) | {base_med:.3f} | {base_low:.3f} | {base_cpu:.3f} | | |")
        for n in DEPTHS:
            path = Path(tmp) / f"deep{n}.arch"
            path.write_text(deep_network(n))
            med, low, cpu, _ = timed(check_argv(str(path)), max(3, repeats // 3))
            per_k = (cpu - base_cpu) / (n - 10) * 1000
            deep.append(f"| {n:,} | {med:.3f} | {low:.3f} | {cpu:.3f} | {per_k * 1000:.0f} ms | "
                        f"{'< 2 s: ' + ('yes' if med < 2 else 'NO') if n == 10_000 else ''} |")
            print(deep[-1], flush=True)
        split = []
        for label, arch in (("VGG16", str(ROOT / "architectures" / "vgg16.arch")), ("10,000 layers", str(path))):
            split.append((label, stages(arch, max(3, repeats // 3))))
        stage_rows = [f"| {name} | " + " | ".join(f"{1000 * s[i]:.0f}" for _, s in split) + " |"
                      for i, name in enumerate(STAGE_NAMES)]
        stage_rows.insert(0, "| stage | " + " | ".join(f"{label} (ms)" for label, _ in split) + " |")
        stage_rows.insert(1, "|---|" + "---:|" * len(split))
        print("\n".join(stage_rows), flush=True)
        rep = Path(tmp) / "repeat10k.arch"
        rep.write_text("network Repeat10k\ninput 32x32x16\n[3x3 conv, 16] x 10000\n")
        med, low, cpu, _ = timed(check_argv(str(rep)), max(3, repeats // 3))
        deep.append(f"| 10,000 from one line `[3x3 conv, 16] x 10000` | {med:.3f} | {low:.3f} | {cpu:.3f} | | |")
        print(deep[-1], flush=True)
    return real, deep, stage_rows


def report(real: list[str], deep: list[str], stage_rows: list[str], repeats: int) -> str:
    return "\n".join([
        "# `cnndsl check` speed", "",
        "Whole-process wall time (interpreter start, imports, parser tables, parse, build, "
        "passes, printing), measured with `subprocess.run` and `time.perf_counter`, and the child's "
        "CPU time (user + sys, from `getrusage`), which is steadier when other work shares the machine "
        "(see the load average). "
        f"{repeats} repeats for the real networks; fewer for the long runs (see the script). "
        "cnndsl runs as from its second run on: modules byte-compiled (the parser's LALR tables ship "
        "inside the package as data, cnndsl/syntax/_lalr.py).", "",
        *machine(), "",
        "## Real networks, and torchinfo on the same network", "",
        "| command | median wall (s) | min wall (s) | median CPU (s) | target (median wall) |",
        "|---|---:|---:|---:|---|", *real, "",
        "torchinfo builds the model (random init of 138M parameters) and runs a forward pass on the CPU; "
        "`cnndsl check` runs nothing and never imports torch.", "",
        "## Generated deep networks (linear cost)", "",
        "`3x3 conv, 16` / `batch norm` / `relu` repeated, one layer a line, input 32x32x16. "
        "\"CPU per 1k layers\" = (median CPU - baseline CPU) / (layers - 10) x 1000: roughly constant "
        "when the cost is linear.", "",
        "| layers | median wall (s) | min wall (s) | median CPU (s) | CPU per 1k layers | target (median wall) |",
        "|---:|---:|---:|---:|---:|---|", *deep, "",
        "## Where the time goes", "",
        "Median time of each stage in a fresh interpreter (the same steps as `cnndsl.pipeline.compile_source`; "
        "interpreter start-up itself, about 15 ms, is not in the table).", "",
        *stage_rows, "",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="3 repeats, print only, write nothing")
    args = ap.parse_args()
    repeats = 3 if args.quick else args.repeats
    warm_up()
    real, deep, stage_rows = run(repeats)
    text = report(real, deep, stage_rows, repeats)
    if args.quick:
        print(text)
    else:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)
        print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
