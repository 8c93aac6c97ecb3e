"""ONNX emission against torch.onnx.export, as a deployment pipeline sees it: whole-process
wall time of `python -m cnndsl compile FILE -o OUT.onnx` and of a script that builds the
torchvision model and exports it with `torch.onnx.export(..., dynamo=False, opset_version=17)`,
each from a cold start (a fresh interpreter every time), interleaved in the same run; and the
node counts of both graphs.

Two cases: random initial weights (cnndsl's numpy initialiser; torchvision's own init), and
the same trained-like weights read from a .safetensors file by both (what a deployment does).
Both sides run as installed software does after its first run: byte-compiled modules (.pyc;
the script compiles cnndsl's, since pip does not for an editable install). One more row times
cnndsl's very first run: a copy of the package without .pyc files. Import time is reported
on its own: cnndsl's ONNX path, and what it avoids (the `onnx` package's Python layer, which
imports ml_dtypes: 1.2 s for ml_dtypes 0.7 on a 2-core machine).
The torchvision model gets a trailing Softmax, because the .arch files end in `softmax`: both
graphs compute the same function, which the script checks with onnxruntime on the weights file.

    python benchmarks/onnx_emit.py              # writes benchmarks/results/onnx_emit.md
    python benchmarks/onnx_emit.py --quick      # 1 repeat, prints only
    python benchmarks/onnx_emit.py --setup "git clone ... && pip install -e .[test]"  # recorded as given

Record it on a fresh install made as the README says (a new clone, a new venv, `pip install
-e ".[test]"`), so that it measures the dependencies a new user gets.

Target (DESIGN.md): at least 10x faster than torch.onnx.export, and no more nodes.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from check_speed import machine, timed, warm_up  # benchmarks/ is the script's directory

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # cnndsl itself, when not installed
RESULTS = ROOT / "benchmarks" / "results" / "onnx_emit.md"
NETWORKS = ("resnet50", "vgg16")
TORCH_EXPORT = """\
import sys, torch, torchvision
name, out = sys.argv[1], sys.argv[2]
net = getattr(torchvision.models, name)(weights=None)
if len(sys.argv) > 3:
    from safetensors.torch import load_file
    net.load_state_dict(load_file(sys.argv[3]))
model = torch.nn.Sequential(net, torch.nn.Softmax(dim=1)).eval()
torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), out, dynamo=False, opset_version=17,
                  input_names=["input"], output_names=["output"],
                  dynamic_axes={"input": {0: "N"}, "output": {0: "N"}})
"""
STAGES = """\
import json, os, sys, time
from pathlib import Path
t = [time.perf_counter()]
from cnndsl.backends.onnx_emit import serialize
from cnndsl.files import write_atomic
from cnndsl.pipeline import load
t.append(time.perf_counter())
net = load(sys.argv[1])
t.append(time.perf_counter())
chunks = serialize(net, fold_bn=True)
t.append(time.perf_counter())
write_atomic(Path(sys.argv[2]), chunks)
t.append(time.perf_counter())
print(json.dumps([b - a for a, b in zip(t, t[1:])]), flush=True)
os._exit(0)  # as cnndsl.cli.entry ends
"""
STAGE_NAMES = ("imports (numpy, lark, onnx's protobuf messages, cnndsl)", "parse + check (LALR tables shipped as data)",
               "emission (graph; weights not drawn yet)", "weights drawn and written (streamed, threads)")


IMPORTS = (  # (what, statement): each timed alone in a fresh interpreter
    ("cnndsl's ONNX path: `from cnndsl.backends.onnx_emit import serialize`",
     "from cnndsl.backends.onnx_emit import serialize"),
    ("the whole CLI's compile path: `import cnndsl.cli, cnndsl.pipeline, cnndsl.backends.onnx_emit`",
     "import cnndsl.cli, cnndsl.pipeline, cnndsl.backends.onnx_emit"),
    ("`import onnx` (what emitting with onnx.helper costs)", "import onnx"),
    ("`import ml_dtypes` alone", "import ml_dtypes"),
)
IMPORT_PROBE = """\
import sys, time
t = time.perf_counter()
exec(sys.argv[1])
print(time.perf_counter() - t, 'ml_dtypes' in sys.modules, 'onnx' in sys.modules, flush=True)
"""


def import_costs(repeats: int) -> list[str]:
    """Table rows: median seconds of each import in a fresh interpreter, and what it loaded."""
    rows = ["| import | median (s) | min (s) | loads ml_dtypes | loads the onnx package |", "|---|---:|---:|---|---|"]
    for what, statement in IMPORTS:
        runs = []
        for _ in range(max(repeats, 5)):
            done = subprocess.run([sys.executable, "-c", IMPORT_PROBE, statement], cwd=ROOT, capture_output=True,
                                  text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
            if done.returncode != 0:
                raise SystemExit(f"{statement} failed:\n{done.stderr}")
            runs.append(done.stdout.split())
        times = [float(r[0]) for r in runs]
        rows.append(f"| {what} | {statistics.median(times):.3f} | {min(times):.3f} | {runs[-1][1]} | {runs[-1][2]} |")
        print(rows[-1], flush=True)
    return rows


def weights_files(name: str, tmp: Path) -> tuple[Path, Path]:
    """torchvision's initial weights (with non-trivial BN statistics) twice: under torchvision's
    keys for the export script, and under cnndsl's keys (same tensors, structural order)."""
    import torch
    import torchvision
    from safetensors.torch import save_file

    import cnndsl
    from cnndsl.backends.params import param_specs
    torch.manual_seed(0)
    state = getattr(torchvision.models, name)(weights=None).state_dict()
    for key, value in state.items():
        if key.endswith(("running_mean", "running_var")):
            value.copy_(torch.rand_like(value) + 0.5 if key.endswith("var") else torch.randn_like(value) * 0.1)
    net = cnndsl.load(ROOT / "architectures" / f"{name}.arch")
    ours = [spec.key for spec in param_specs(net.graph, net.shapes)]
    assert len(ours) == len(state), (len(ours), len(state))
    theirs_path, ours_path = tmp / f"{name}_torchvision.safetensors", tmp / f"{name}_cnndsl.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(theirs_path))
    save_file({k: v.contiguous() for k, v in zip(ours, state.values())}, str(ours_path))
    return theirs_path, ours_path


def graph_facts(path: Path) -> tuple[int, str, float]:
    """Node count, the op types by count, and the file size in MB."""
    import onnx
    model = onnx.load(str(path))
    kinds = collections.Counter(n.op_type for n in model.graph.node)
    return len(model.graph.node), ", ".join(f"{k} {v}" for k, v in kinds.most_common()), path.stat().st_size / 1e6


def max_difference(ours: Path, theirs: Path) -> float:
    """Largest |difference| of the two models' outputs on the same random images (onnxruntime, CPU)."""
    import onnxruntime as ort
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224), dtype=np.float32)
    outs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
            for p in (ours, theirs)]
    return float(np.max(np.abs(outs[0] - outs[1])))


def stages(name: str, tmp: Path, repeats: int) -> list[float]:
    """Median seconds of each stage of `cnndsl compile` (random weights), in a fresh interpreter each time."""
    runs = []
    for _ in range(repeats):
        argv = [sys.executable, "-c", STAGES, f"architectures/{name}.arch", str(tmp / "stages.onnx")]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise SystemExit(f"stage timing failed on {name}:\n{done.stderr}")
        runs.append(json.loads(done.stdout))
    return [statistics.median(col) for col in zip(*runs)]


def prepare(tmp: Path) -> dict[str, str]:
    """Warm cnndsl as a run leaves it (its .pyc files written), and make a pristine copy for the
    first-run row; returns that row's environment."""
    warm_up()
    pristine = tmp / "pristine"
    shutil.copytree(ROOT / "cnndsl", pristine / "cnndsl", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "grammars", pristine / "grammars", ignore=shutil.ignore_patterns("__pycache__"))
    return dict(os.environ, PYTHONPATH=str(pristine), PYTHONDONTWRITEBYTECODE="1")


FIRST_RUN = "cnndsl compile --fold-bn, first run (no .pyc)"


def measure(name: str, tmp: Path, repeats: int, first_env: dict[str, str]) -> tuple[list[str], list[str]]:
    """Table rows, and the summary lines: the target's verdict and the outputs' agreement."""
    arch = f"architectures/{name}.arch"
    theirs_w, ours_w = weights_files(name, tmp)
    o = lambda tag: str(tmp / f"{name}_{tag}.onnx")  # noqa: E731
    cases = [  # (label, argv, output, reference label for the speed-up)
        ("cnndsl compile", [sys.executable, "-m", "cnndsl", "compile", arch, "-o", o("cnndsl")], o("cnndsl"), "tv"),
        ("cnndsl compile --fold-bn", [sys.executable, "-m", "cnndsl", "compile", arch, "-o", o("fold"), "--fold-bn"],
         o("fold"), "tv"),
        (FIRST_RUN, [sys.executable, "-m", "cnndsl", "compile", str(ROOT / arch), "-o", o("first"), "--fold-bn"],
         o("first"), "tv"),
        ("torchvision + torch.onnx.export", [sys.executable, "-c", TORCH_EXPORT, name, o("tv")], o("tv"), None),
        ("cnndsl compile --fold-bn --weights W.safetensors",
         [sys.executable, "-m", "cnndsl", "compile", arch, "-o", o("cnndsl_w"), "--fold-bn", "--weights", str(ours_w)],
         o("cnndsl_w"), "tv_w"),
        ("torchvision + load W.safetensors + torch.onnx.export",
         [sys.executable, "-c", TORCH_EXPORT, name, o("tv_w"), str(theirs_w)], o("tv_w"), None),
    ]
    walls: dict[str, list[float]] = collections.defaultdict(list)
    cpus: dict[str, list[float]] = collections.defaultdict(list)
    for r in range(repeats):  # interleaved, and each repeat starts at another case: what one run leaves
        for label, argv, out, _ in cases[r % len(cases):] + cases[:r % len(cases)]:  # behind (memory) hits all alike
            Path(out).unlink(missing_ok=True)  # each run writes a new file
            if label == FIRST_RUN:
                assert not list(Path(first_env["PYTHONPATH"]).rglob("*.pyc"))
            if label == FIRST_RUN:  # run in the copy (`-m` puts the working directory first on the path)
                wall, _, cpu, _ = timed(argv, 1, first_env, cwd=Path(first_env["PYTHONPATH"]))
            else:
                wall, _, cpu, _ = timed(argv, 1)
            walls[label].append(wall)
            cpus[label].append(cpu)
    median = {label: statistics.median(w) for label, w in walls.items()}
    tags = {"tv": "torchvision + torch.onnx.export", "tv_w": "torchvision + load W.safetensors + torch.onnx.export"}
    rows, counts = [], {}
    for label, _, out, ref in cases:
        nodes, kinds, mb = graph_facts(Path(out))
        counts[label] = nodes
        speed = f"{median[tags[ref]] / median[label]:.1f}x" if ref else "1x"
        rows.append(f"| {name} | {label} | {median[label]:.2f} | {min(walls[label]):.2f} | "
                    f"{statistics.median(cpus[label]):.2f} | {speed} | {nodes} | {mb:.0f} | {kinds} |")
        print(rows[-1], flush=True)
    diff = max_difference(Path(o("cnndsl_w")), Path(o("tv_w")))
    fold, fold_w = "cnndsl compile --fold-bn", "cnndsl compile --fold-bn --weights W.safetensors"
    speeds = (median[tags["tv"]] / median[fold], median[tags["tv_w"]] / median[fold_w])
    fewer = counts[fold] <= counts[tags["tv"]] and counts[fold_w] <= counts[tags["tv_w"]]
    first = median[tags["tv"]] / median[FIRST_RUN]
    return rows, [f"- {name}: {speeds[0]:.1f}x with random weights, {speeds[1]:.1f}x with the weights file "
                  f"(--fold-bn): target 10x {'met' if min(speeds) >= 10 else 'NOT met'} (the very first run, "
                  f"before any .pyc exists: {first:.1f}x); nodes "
                  f"{counts[fold]} vs {counts[tags['tv']]} and {counts[fold_w]} vs {counts[tags['tv_w']]}: "
                  f"{'no more' if fewer else 'MORE'}; max |cnndsl - torch.onnx.export| on 2 random images, "
                  f"same weights: {diff:.2g} (outputs in [0, 1])"]


def report(lines: list[str], rows: list[str], summary: list[str], stage_rows: list[str], import_rows: list[str],
           repeats: int, setup: str) -> str:
    lines[-1] = "- command: `python benchmarks/onnx_emit.py` (from the repository root)"
    if setup:
        lines.append(f"- environment made by: `{setup}`")
    from importlib.metadata import PackageNotFoundError, version
    found = []
    for package in ("torch", "torchvision", "onnx", "onnxruntime-gpu", "onnxruntime", "ml_dtypes", "protobuf",
                    "numpy"):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            pass
    lines.append(f"- versions: {', '.join(found)}")
    return "\n".join([
        "# ONNX emission: `cnndsl compile` against `torch.onnx.export`", "",
        "Whole-process wall time of each command from a cold start (interpreter start, imports, weights, "
        "emission, writing the file), and the child's CPU time (user + sys). "
        f"Median of {repeats} runs, the cases interleaved in the same run, each round starting at the next case. "
        "Speed-up: the torch export's median wall time over this row's (against the export with the same kind "
        "of weights). Nodes: "
        "`len(model.graph.node)` of the file written.", "",
        *lines, "",
        "| network | command | median wall (s) | min wall (s) | median CPU (s) | speed-up | nodes | MB | op types |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|", *rows, "",
        "Commands, in full: `python -m cnndsl compile architectures/NET.arch -o NET.onnx [--fold-bn] "
        "[--weights NET_cnndsl.safetensors]`; the export script is `TORCH_EXPORT` in benchmarks/onnx_emit.py "
        "(torchvision model + `nn.Softmax(dim=1)`, `eval()`, `torch.onnx.export(model, (torch.zeros(1, 3, 224, "
        "224),), out, dynamo=False, opset_version=17, dynamic_axes` on the batch).", "",
        "`torch.onnx.export` in eval mode folds batch norm into the convolutions, so `--fold-bn` is the "
        "like-for-like node count; without it cnndsl keeps each BatchNormalization node (inference-exact "
        "either way). The random-weights rows differ in what they draw: cnndsl draws uniform numbers with "
        "torchvision's variances with numpy (blocks in parallel threads, streamed to the file as they are "
        "drawn), torchvision normals with torch's initialisers.", "",
        "Both sides run warm, as a second run does: all modules byte-compiled (pip compiled torch's; the "
        "script byte-compiles cnndsl's first, as its first run would). The first-run row is cnndsl without: "
        "a copy of the package with no .pyc (and PYTHONDONTWRITEBYTECODE=1, so it stays so), each time.", "",
        "## Against the target", "",
        *summary, "",
        "Both files from the weights file compute the same function (onnxruntime, CPU). The stage table below "
        "gives the floor of `cnndsl compile`: interpreter start-up and imports (next section) and the rest "
        "grows with the weights, drawn by numpy (in parallel threads) and written to the file as they are "
        "drawn (VGG16's 553 MB).", "",
        "## Import time", "",
        f"Each import alone in a fresh interpreter (median of {max(repeats, 5)}; interpreter start-up not "
        "included). cnndsl emits ONNX with onnx's protobuf messages only (cnndsl/backends/onnx_proto.py), "
        "never importing the `onnx` package's Python layer, whose onnx.helper imports ml_dtypes; "
        "tests/test_trust_backends.py fails if compiling to ONNX loads ml_dtypes, onnx.helper or the onnx "
        "package again.", "",
        *import_rows, "",
        "## Where the time of `cnndsl compile --fold-bn` goes", "",
        f"Median seconds of each stage in a fresh interpreter ({repeats} runs; interpreter start-up, about "
        "15 ms, not included), random weights.", "",
        *stage_rows, "",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="1 repeat, print only, write nothing")
    ap.add_argument("--setup", default="", help="the commands that made this environment, recorded as given")
    args = ap.parse_args()
    repeats = 1 if args.quick else args.repeats
    facts = machine()  # the date and the load at the start
    rows, summary, split = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        first_env = prepare(Path(tmp))
        import_rows = import_costs(repeats)
        for name in NETWORKS:
            table, lines = measure(name, Path(tmp), repeats, first_env)
            rows += table
            summary += lines
            split.append(stages(name, Path(tmp), repeats))
    stage_rows = ["| stage | " + " | ".join(f"{name} (s)" for name in NETWORKS) + " |",
                  "|---|" + "---:|" * len(NETWORKS)]
    stage_rows += [f"| {label} | " + " | ".join(f"{s[i]:.2f}" for s in split) + " |"
                   for i, label in enumerate(STAGE_NAMES)]
    print("\n".join(summary + stage_rows))
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(report(facts, rows, summary, stage_rows, import_rows, repeats, args.setup))
        print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
