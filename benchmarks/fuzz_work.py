"""The worker side of benchmarks/fuzz.py: run a batch of inputs, time each, classify what
went wrong."""

from __future__ import annotations

import collections
import os
import re
import resource
import signal
import time
import traceback
from pathlib import Path

import fuzz_inputs
import fuzz_nets

LARGE = 100_000      # bytes: above this an input may take 3x --slow (the 1 MB in 3 s)
MEMORY = 200 << 20   # bytes of peak RSS growth on one input that count as a finding
HEADROOM = 3 << 30   # address space a mutate worker may add before MemoryError
COMPILE_NODES = 3000  # accepted mutants up to this size also go through to_source and ONNX emission
STALL = int(os.environ.get("FUZZ_STALL_AT", "-1"))  # tests/test_fuzz.py: the worker hangs on this input


def generate(part: str, seed: int, index: int) -> tuple[str, str]:
    """(text, tags) of input `index`: pure, so the parent can save any input again."""
    return fuzz_inputs.mutant(seed, index) if part == "mutate" else fuzz_nets.network(seed, index)


def generator_id(part: str) -> str:
    """A hash of what input i of a campaign depends on: the generator's code (and for mutate the corpus)."""
    import hashlib
    module = fuzz_inputs if part == "mutate" else fuzz_nets
    digest = hashlib.sha256(Path(module.__file__).read_bytes())
    for text in fuzz_inputs.CORPUS if part == "mutate" else ():
        digest.update(text.encode("utf-8"))
    return digest.hexdigest()[:12]


def limit(text: str, slow: float) -> float:
    return slow * 3 if len(text.encode("utf-8", "surrogatepass")) > LARGE else slow


def serve(part: str, seed: int, slow: float, conn, slot) -> None:
    """A worker's life: take (start, count, skip) batches until None; for each, send back
    (stats, findings, restart). slot = [index, monotonic start] of the input running now."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if part == "mutate":
        _cap_memory()
    _prepare(part)
    base = _peak()
    while (task := conn.recv()) is not None:
        start, count, skip = task
        stats, findings, restart = collections.Counter(), [], False
        for index in range(start, start + count):
            if index in skip:
                continue
            text, tags = generate(part, seed, index)
            finding = _timed(part, text, index, tags, slow, stats, slot)
            if part == "mutate" and _peak() - base > MEMORY:
                finding = finding or _finding(index, "memory", f"peak RSS grew {(_peak() - base) >> 20} MB", tags)
                restart = True  # the high-water mark stays up: a fresh worker measures the next ones
            if finding:
                findings.append(finding)
                restart |= finding["type"] == "MemoryError"
        conn.send((dict(stats), findings, restart))
        if restart:
            return


def _cap_memory() -> None:
    """Cap the address space: a blow-up becomes a MemoryError (a finding), not the OOM killer."""
    status = Path("/proc/self/status")
    if status.exists():
        vm = int(re.search(r"VmSize:\s+(\d+)", status.read_text()).group(1)) << 10
        resource.setrlimit(resource.RLIMIT_AS, (vm + HEADROOM, resource.getrlimit(resource.RLIMIT_AS)[1]))


def _prepare(part: str) -> None:
    """Import what the part needs and warm it up, outside any timed input."""
    if part == "mutate":
        for text in fuzz_inputs.CORPUS[:3]:  # import and warm the parser outside any timed input
            fuzz_inputs.examine(text)
        import cnndsl.backends.onnx_emit  # noqa: F401 -- for _compile
        import cnndsl.backends.torch_source  # noqa: F401
    else:
        import fuzz_backends
        fuzz_backends.setup()


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10  # KiB on Linux


def _timed(part, text, index, tags, slow, stats, slot) -> dict | None:
    """Run one input (again if it was slow, to tell the input from a busy machine). Its time is
    the worker's CPU time: steady when other work shares the machine (the wall time, which the
    parent's --kill bounds, goes in the message)."""
    seconds, wall, finding, net = _once(part, text, index, tags, stats, slot)
    if finding is None and seconds > limit(text, slow):
        again, wall_again, _, _ = _once(part, text, index, tags, collections.Counter(), slot)
        seconds, wall = min(seconds, again), min(wall, wall_again)
        if seconds > limit(text, slow):
            finding = _finding(index, "slow", f"{seconds:.2f} s CPU ({wall:.2f} s wall) for {len(text):,} characters",
                               tags, seconds)
    stats["seconds"] += seconds
    stats["wall_seconds"] += wall
    stats["bytes"] += len(text)
    if seconds > stats["max_seconds"]:
        stats["max_seconds"], stats["max_index"] = seconds, index
    for edge in (0.01, 0.1, 0.5, 1.0, 3.0):
        stats[f"over {edge} s"] += seconds > edge
    if len(text) > LARGE:
        stats["large"] += 1
        stats["large_max_seconds"] = max(stats["large_max_seconds"], seconds)
    for tag in tags.replace("+", " ").split():
        stats[f"tag {tag}"] += 1
    if finding is None and net is not None and len(net.graph.nodes) <= COMPILE_NODES:
        slot[0], slot[1] = index, time.monotonic()
        finding = _compile(net, index, tags, stats)
        slot[1] = 0.0
    return finding


def _compile(net, index, tags, stats) -> dict | None:
    """An accepted mutant through the backends that need no torch: the generated source (and
    Python's compile of it), and the ONNX graph (weights not drawn). Timed apart from checking."""
    from cnndsl import CnnDslError
    from cnndsl.backends.onnx_emit import emit
    from cnndsl.backends.torch_source import to_source
    clock = time.process_time()
    try:
        compile(to_source(net), "generated.py", "exec")
        emit(net)
    except CnnDslError as exc:  # a backend refused what the checker accepted
        return _late_refusal(index, exc, tags)
    except Exception as exc:  # noqa: BLE001
        return _crash(index, exc, tags)
    finally:
        stats["compile_seconds"] += time.process_time() - clock
    stats["compiled"] += 1
    return None


def _late_refusal(index, exc, tags) -> dict:
    """A finding for a network the checker accepted and a backend refused."""
    message = exc.diagnostics[0].message
    return _finding(index, "late refusal", message, tags, key="late refusal: " + _shape(message))


def _once(part, text, index, tags, stats, slot) -> tuple[float, float, dict | None, object]:
    """(CPU s, wall s, finding, the accepted network or None) of one run of one input."""
    slot[0], slot[1] = index, time.monotonic()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        if index == STALL:
            time.sleep(3600)
        finding, net = _mutate(text, index, tags, stats) if part == "mutate" else \
            (_backends(text, index, tags, stats), None)
    finally:
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        slot[1] = 0.0
    return cpu, wall, finding, net


def _mutate(text, index, tags, stats) -> tuple[dict | None, object]:
    """(finding, the network when the checker accepted it)."""
    stats["n"] += 1
    try:
        net, problem = fuzz_inputs.examine(text, training=index % 8 == 0)
    except Exception as exc:  # noqa: BLE001 -- anything but CnnDslError is a crash
        return _crash(index, exc, tags), None
    stats["accepted" if net else "refused"] += 1
    if problem is None and index % 10 == 0:  # one input in ten also as a file, through the CLI
        stats["cli"] += 1
        flags = fuzz_inputs.CLI_FLAGS[index // 10 % len(fuzz_inputs.CLI_FLAGS)]
        problem = fuzz_inputs.examine_cli(text, scratch(os.getpid()), flags)
        if problem:
            return _finding(index, "crash", problem[1], tags, key="cnndsl check: " + _shape(problem[1]), type_="cli"), None
    if problem is None:
        return None, net
    return _finding(index, problem[0], problem[1], tags, key="bad span or message: " + _shape(problem[1])), None


def scratch(pid: int) -> str:
    """The file worker `pid` writes its CLI inputs to (the parent removes it when the worker stops)."""
    import tempfile
    return os.path.join(tempfile.gettempdir(), f"cnndsl-fuzz-{pid}.arch")


def _backends(text, index, tags, stats) -> dict | None:
    import fuzz_backends
    from cnndsl import CnnDslError
    stats["n"] += 1
    times: dict[str, float] = {}
    try:
        fuzz_backends.run(text, f"net{index}", times)
    except fuzz_backends.Refused as exc:
        stats["refused"] += 1
        stats["refused: " + _shape(str(exc))] += 1
        return None
    except fuzz_backends.Mismatch as exc:
        return _finding(index, "mismatch", str(exc), tags, key=_shape(str(exc).split(":")[0]))
    except CnnDslError as exc:  # a backend refused what the checker accepted
        return _late_refusal(index, exc, tags)
    except Exception as exc:  # noqa: BLE001
        return _crash(index, exc, tags)
    finally:
        for stage, seconds in times.items():
            stats[f"stage {stage}"] += seconds
    stats["ran"] += 1
    for tag in tags.split():
        stats[f"ran {tag}"] += 1
    return None


def _shape(message: str) -> str:
    """A message with its numbers and quoted names blanked, to group findings by kind."""
    return re.sub(r"'[^']*'|`[^`]*`|\d+", "_", message.split(":", 1)[-1] if message.startswith("line ") else message)[:70]


def _finding(index, kind, message, tags, seconds=None, key=None, where="", type_=None) -> dict:
    return {"index": index, "kind": kind, "key": key or kind, "type": type_ or kind, "where": where,
            "message": message[:300], "seconds": seconds, "tags": tags}


def _crash(index, exc: BaseException, tags) -> dict:
    where, place = _where(exc)
    key = f"{type(exc).__name__} at {place}"
    return _finding(index, "crash", f"{type(exc).__name__}: {exc}"[:300], tags, key=key, where=where,
                    type_=type(exc).__name__)


def _where(exc: BaseException) -> tuple[str, str]:
    """(the innermost frames, the innermost frame in cnndsl's own code)."""
    frames = traceback.extract_tb(exc.__traceback__)
    short = [f"{_short(f.filename)}:{f.lineno} {f.name}" for f in frames]
    ours = [s for s, f in zip(short, frames) if "/cnndsl/" in f.filename.replace("\\", "/")]
    return " <- ".join(reversed(short[-4:])), (ours[-1] if ours else short[-1] if short else "?")


def _short(path: str) -> str:
    path = path.replace("\\", "/")
    for marker in ("/site-packages/", "/cnndsl/", "/benchmarks/"):
        if marker in path:
            return (marker.strip("/") + "/" if marker != "/site-packages/" else "") + path.split(marker)[-1]
    return path
