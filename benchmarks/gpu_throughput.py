"""ONE run on the GPU comparing cnndsl's compiled models with torchvision's (issue 6).

Measures, side by side and in the same process:
  - PyTorch: cnndsl's module vs torchvision's for resnet18, resnet50 and vgg16, eager fp32,
    eager bf16 channels-last and torch.compile bf16 channels-last, at batch 256 (128 for
    vgg16) and batch 1; ResNet-50 at batch 1 with a CUDA graph;
  - onnxruntime CUDA (I/O binding, prefer_nhwc): cnndsl's ONNX vs torch.onnx.export of the
    torchvision model, fp32 and fp16;
  - memory: cnndsl's predicted peak vs torch.cuda.max_memory_allocated for vgg16 and
    resnet50, inference and one SGD-momentum training step (the second: the steady state), batch 1 and 32.
Writes benchmarks/results/gpu_throughput.{json,md} (and .png when matplotlib is there).

    PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu_throughput.py --out $OUT
    python benchmarks/gpu_throughput.py --device cpu --quick      # a smoke test without a GPU
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import platform
import statistics
import sys
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cnndsl  # noqa: E402
from cnndsl.backends import ort_run  # noqa: E402
from cnndsl.backends.bench import capture_cuda_graph, time_once  # noqa: E402
from cnndsl.backends.torch_module import load_by_order  # noqa: E402
from cnndsl.passes.memory import estimate  # noqa: E402

MODELS = {"resnet18": 256, "resnet50": 256, "vgg16": 128}
CONFIGS = {  # name: (dtype, channels_last, compile)
    "eager fp32": (torch.float32, False, False),
    "eager bf16 channels-last": (torch.bfloat16, True, False),
    "torch.compile bf16 channels-last": (torch.bfloat16, True, True),
}


def timed(fn, x, device, warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        fn(x)
    return [time_once(fn, x, device) for _ in range(iters)]


def pair(name: str, device, quick: bool):
    """(cnndsl module, torchvision module) holding the same weights."""
    net = cnndsl.load(ROOT / "architectures" / f"{name}.arch")
    ours = net.to_torch(seed=0).eval()
    theirs = getattr(torchvision.models, name)(weights=None).eval()
    load_by_order(ours, theirs.state_dict())
    return net, ours.to(device), theirs.to(device)


def torch_rows(args, device) -> list[dict]:
    rows = []
    for name, big in MODELS.items():
        net, ours, theirs = pair(name, device, args.quick)
        for batch in ((2, 1) if args.quick else (big, 1)):
            for config, (dtype, cl, comp) in CONFIGS.items():
                if args.quick and comp:
                    continue
                fmt = torch.channels_last if cl else torch.contiguous_format
                x = torch.randn(batch, 3, 224, 224, device=device).to(dtype=dtype).contiguous(memory_format=fmt)
                row = {"model": name, "batch": batch, "config": config}
                for who, m in (("cnndsl", ours), ("torchvision", theirs)):
                    m = m.to(dtype=dtype, memory_format=fmt)
                    fn = torch.compile(m) if comp else m
                    with torch.inference_mode():
                        t = timed(fn, x, device, args.warmup, args.iters)
                    row[who] = batch * 1e3 / statistics.median(t)
                    row[f"{who}_ms"] = statistics.median(t)
                row["ratio"] = row["cnndsl"] / row["torchvision"]
                rows.append(row)
                print(json.dumps(row), flush=True)
        ours.float(), theirs.float()
    return rows


def cuda_graph_row(args, device) -> dict | None:
    if device.type != "cuda":
        return None
    net, ours, _ = pair("resnet50", device, args.quick)
    ours = ours.to(dtype=torch.bfloat16, memory_format=torch.channels_last)
    x = torch.randn(1, 3, 224, 224, device=device, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        t = timed(capture_cuda_graph(ours, x), x, device, args.warmup, args.iters)
    row = {"model": "resnet50", "batch": 1, "config": "CUDA graph bf16 channels-last", "cnndsl_ms": statistics.median(t)}
    print(json.dumps(row), flush=True)
    return row


def ort_time(model_bytes: bytes, batch: int, half: bool, device, args) -> float:
    """Median ms a batch, inputs and outputs bound to device memory (I/O binding)."""
    sess = ort_run.session(model_bytes, "cuda" if device.type == "cuda" else "cpu")
    dtype = torch.float16 if half else torch.float32
    x = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype)
    out_shape = (batch, 1000)
    y = torch.empty(out_shape, device=device, dtype=dtype)
    binding = sess.io_binding()
    np_type = {torch.float16: __import__("numpy").float16, torch.float32: __import__("numpy").float32}[dtype]
    kind = "cuda" if device.type == "cuda" else "cpu"
    binding.bind_input(sess.get_inputs()[0].name, kind, 0, np_type, tuple(x.shape), x.data_ptr())
    binding.bind_output(sess.get_outputs()[0].name, kind, 0, np_type, out_shape, y.data_ptr())
    t = timed(lambda _: sess.run_with_iobinding(binding), x, device, args.warmup, args.iters)
    return statistics.median(t)


def exported(name: str, half: bool) -> bytes:
    model = torch.nn.Sequential(getattr(torchvision.models, name)(weights=None), torch.nn.Softmax(dim=1)).eval()
    if half:
        model = model.half()
    x = torch.zeros(1, 3, 224, 224, dtype=torch.float16 if half else torch.float32)
    buf = io.BytesIO()
    dev = "cuda" if half and torch.cuda.is_available() else "cpu"  # fp16 conv needs CUDA to trace
    torch.onnx.export(model.to(dev), (x.to(dev),), buf, dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return buf.getvalue()


def ort_rows(args, device) -> list[dict]:
    from cnndsl.backends.onnx_emit import to_bytes
    rows = []
    for name, big in MODELS.items():
        net = cnndsl.load(ROOT / "architectures" / f"{name}.arch")
        for half in (False, True):
            if half and device.type != "cuda":
                continue
            ours = to_bytes(net, seed=0, fp16=half, fold_bn=True)
            theirs = exported(name, half)
            for batch in ((2,) if args.quick else (big, 1)):
                row = {"model": name, "batch": batch, "config": f"onnxruntime {'fp16' if half else 'fp32'}"}
                row["cnndsl_ms"] = ort_time(ours, batch, half, device, args)
                row["torch_export_ms"] = ort_time(theirs, batch, half, device, args)
                row["ratio"] = row["torch_export_ms"] / row["cnndsl_ms"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def memory_rows(args, device) -> list[dict]:
    if device.type != "cuda":
        return []
    rows = []
    for name in ("vgg16", "resnet50"):
        net = cnndsl.load(ROOT / "architectures" / f"{name}.arch")
        r = net.report
        for batch in (1, 32):
            for training in (False, True):
                torch.cuda.empty_cache()
                model = net.to_torch(seed=0).to(device)
                x = torch.randn(batch, 3, 224, 224, device=device)
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                if training:  # the steady state, as predicted: the second step, its optimizer state made by the first
                    model.train()
                    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
                    y = torch.randint(0, 1000, (batch,), device=device)
                    for first in (True, False):
                        torch.nn.functional.nll_loss(torch.log(model(x) + 1e-9), y).backward()
                        opt.step()
                        opt.zero_grad(set_to_none=True)
                        if first:
                            torch.cuda.synchronize()
                            torch.cuda.reset_peak_memory_stats()
                else:
                    model.eval()
                    with torch.no_grad():
                        model(x)
                torch.cuda.synchronize()
                measured = torch.cuda.max_memory_allocated()
                pred = estimate(r.graph, r.shapes, r.counts, batch=batch, training=training).peak
                pred += x.numel() * 4  # the input, allocated before the measurement too
                row = {"model": name, "batch": batch, "phase": "training step" if training else "inference",
                       "predicted_MB": pred / 1e6, "measured_MB": measured / 1e6, "error": pred / measured - 1}
                rows.append(row)
                print(json.dumps(row), flush=True)
                del model, x
    return rows


def markdown(meta: dict, torch_rows_, graph_row, ort_rows_, mem_rows) -> str:
    out = ["# GPU throughput: cnndsl vs torchvision\n", f"- date: {meta['date']}", f"- device: {meta['device']}",
           f"- command: `{meta['command']}`", f"- versions: {meta['versions']}\n",
           "| model | batch | config | cnndsl img/s | torchvision img/s | ratio |", "|---|---:|---|---:|---:|---:|"]
    out += [f"| {r['model']} | {r['batch']} | {r['config']} | {r['cnndsl']:,.0f} | {r['torchvision']:,.0f} | "
            f"{r['ratio']:.2f}x |" for r in torch_rows_]
    if graph_row:
        out += ["", f"ResNet-50, batch 1, CUDA graph: {graph_row['cnndsl_ms']:.3f} ms a batch"]
    out += ["", "| model | batch | onnxruntime | cnndsl ms | torch.onnx.export ms | ratio |", "|---|---:|---|---:|---:|---:|"]
    out += [f"| {r['model']} | {r['batch']} | {r['config']} | {r['cnndsl_ms']:.3f} | {r['torch_export_ms']:.3f} | "
            f"{r['ratio']:.2f}x |" for r in ort_rows_]
    out += ["", "| model | batch | phase | predicted MB | measured MB | error |", "|---|---:|---|---:|---:|---:|"]
    out += [f"| {r['model']} | {r['batch']} | {r['phase']} | {r['predicted_MB']:.1f} | {r['measured_MB']:.1f} | "
            f"{100 * r['error']:+.1f}% |" for r in mem_rows]
    return "\n".join(out) + "\n"


def chart(rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = [f"{r['model']} b{r['batch']}\n{r['config']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 0.9), 5))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["cnndsl"] for r in rows], 0.4, label="cnndsl")
    ax.bar([x + 0.2 for x in xs], [r["torchvision"] for r in rows], 0.4, label="torchvision")
    ax.set_xticks(list(xs), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("images/s")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--quick", action="store_true", help="tiny batches, few iterations (a smoke test)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for the results")
    args = p.parse_args()
    if args.quick:
        args.warmup, args.iters = 1, 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu --quick for a smoke test", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
            "command": " ".join(["python", *sys.argv]),
            "versions": f"torch {torch.__version__}, torchvision {torchvision.__version__}"}
    rows = torch_rows(args, device)
    graph = cuda_graph_row(args, device)
    ort = ort_rows(args, device)
    mem = memory_rows(args, device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "gpu_throughput" if device.type == "cuda" and not args.quick else "gpu_throughput_smoke"
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "torch": rows, "cuda_graph": graph,
                                                  "onnxruntime": ort, "memory": mem}, indent=1))
    (out / f"{stem}.md").write_text(markdown(meta, rows, graph, ort, mem))
    chart(rows, out / f"{stem}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
