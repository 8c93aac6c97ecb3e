"""The journals of benchmarks/fuzz.py, summed into a markdown report."""

from __future__ import annotations

import collections
import datetime
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cnndsl", "lark", "numpy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu")
TITLES = {"mutate": "Part (a): mutation fuzzer", "backends": "Part (b): backend fuzzer"}


def machine() -> dict:
    """Date, machine, Python, package versions and the git commit, for the journal's run record."""
    cpu = platform.processor() or "?"
    info = Path("/proc/cpuinfo")
    if info.exists():
        cpu = next((line.split(":", 1)[1].strip() for line in info.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.platform()}; {cpu}; {os.cpu_count()} logical cores; load {_load()}",
            "python": sys.version.split()[0], "versions": versions, "commit": _commit()}


def _load() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return f"{head}{' + uncommitted changes' if dirty else ''}" if head else "?"


def records(journal: Path) -> list[dict]:
    if not journal.exists():
        return []
    out = []
    for line in journal.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill: that batch runs again
            pass
    return out


def batches(journal: Path) -> list[dict]:
    """The journal's batches, each (start, count) once (the first record of it)."""
    seen, out = set(), []
    for r in records(journal):
        if r.get("type") == "batch" and (r["start"], r["count"]) not in seen:
            seen.add((r["start"], r["count"]))
            out.append(r)
    return out


def sum_stats(bs: list[dict]) -> collections.Counter:
    """The batches' counters added up, but their maxima maximized."""
    maxima = ("max_seconds", "large_max_seconds")
    stats = collections.Counter()
    for b in bs:
        stats.update({k: v for k, v in b["stats"].items() if k not in (*maxima, "max_index")})
    for key in maxima:
        stats[key] = max((b["stats"].get(key, 0) for b in bs), default=0)
    return stats


def render(state: Path) -> str:
    journals = sorted(state.glob("*-seed*.jsonl"))
    out = ["# Fuzzing campaigns", "",
           f"Written by `python benchmarks/fuzz.py report --state {state}` from the journals there; how the "
           "fuzzers work and how to run them: the docstring of `benchmarks/fuzz.py`. Any input of a campaign "
           "comes back with `python benchmarks/fuzz.py show PART --seed S INDEX`.", ""]
    if not journals:
        return "\n".join(out + ["No campaign recorded yet.", ""])
    for journal in sorted(journals, key=lambda j: (list(TITLES).index(j.name.split("-seed")[0])
                                                   if j.name.split("-seed")[0] in TITLES else 9, j.name)):
        part = journal.name.split("-seed")[0]
        out += _section(part, journal)
    return "\n".join(out)


def _section(part: str, journal: Path) -> list[str]:
    rs, bs = records(journal), batches(journal)
    seed = journal.stem.split("-seed")[-1]
    stats = sum_stats(bs)
    slowest = max(bs, key=lambda b: b["stats"].get("max_seconds", 0), default=None)
    findings = [f for b in bs for f in b["findings"]]
    runs = [r for r in rs if r.get("type") == "run"]
    wall, job_seconds = _walls(rs)
    n = stats["n"]
    out = [f"## {TITLES.get(part, part)}, seed {seed}", ""]
    out += [f"- run {i}: `{' '.join(r['argv'])}` on {r['date']}, commit {r['commit']}" for i, r in enumerate(runs, 1)]
    if runs:
        last = runs[-1]
        versions = ", ".join(f"{k} {v}" for k, v in last["versions"].items())
        out += [f"- machine: {last['machine']}", f"- Python {last['python']}; {versions}"]
    kinds = collections.Counter(f["kind"] for f in findings)
    out += ["", "Times are a worker's CPU time on the input (steady when other work shares the machine); "
            "a worker stuck longer than --kill seconds of wall time is killed.",
            "", "| measure | value |", "|---|---:|",
            f"| inputs run | {n:,} (indices {_ranges(bs)}) |"]
    if part == "mutate":
        out += [f"| accepted by the checker | {stats['accepted']:,} |",
                f"| refused with diagnostics | {stats['refused']:,} |",
                f"| also run as a file through `cnndsl check` | {stats['cli']:,} |",
                f"| accepted and also through to_source + ONNX emission (up to 3,000 nodes) | {stats['compiled']:,} "
                f"({stats['compile_seconds']:,.0f} s CPU, not in the times below) |"]
    else:
        out += [f"| refused by the checker (discarded) | {stats['refused']:,} |",
                f"| run through torch, generated source, ONNX checker, onnxruntime | {stats['ran']:,} |"]
    for kind in ("crash", "mismatch", "late refusal", "diagnostic", "slow", "hang", "died", "memory"):
        distinct = len({f["key"] for f in findings if f["kind"] == kind})
        out.append(f"| {kind} findings | {kinds[kind]:,}" + (f" ({distinct} distinct)" if kinds[kind] else "") + " |")
    out += [f"| inputs over 1 s / 3 s | {stats['over 1.0 s']:,} / {stats['over 3.0 s']:,} |",
            *([f"| inputs over 100 KB (allowed 3 x --slow) | {stats['large']:,}, slowest "
               f"{stats['large_max_seconds']:.2f} s |"] if part == "mutate" else []),
            f"| slowest input | {stats['max_seconds']:.3f} s (index {slowest['stats'].get('max_index') if slowest else '-'}) |",
            f"| mean time an input | {1000 * stats['seconds'] / max(1, n):.2f} ms CPU, "
            f"{1000 * stats['wall_seconds'] / max(1, n):.2f} ms wall |",
            f"| wall time of the runs | {wall:,.0f} s |",
            f"| throughput (wall time, everything included) | {n / wall if wall else 0:,.1f} inputs/s over all "
            f"jobs; {n / job_seconds if job_seconds else 0:,.1f} inputs/s a job |"]
    out += _details(part, stats, findings)
    return out + [""]


def _walls(rs: list[dict]) -> tuple[float, float]:
    """(wall seconds of all runs, job-seconds: each run's wall time times its jobs)."""
    wall = jobs_wall = 0.0
    jobs = 1
    for r in rs:
        if r.get("type") == "run":
            jobs = r.get("jobs", 1)
        elif r.get("type") == "end":
            wall += r.get("wall", 0)
            jobs_wall += r.get("wall", 0) * jobs
    return wall, jobs_wall


def _details(part: str, stats: collections.Counter, findings: list[dict]) -> list[str]:
    out = []
    if part == "mutate":
        tags = sorted((k[4:], v) for k, v in stats.items() if k.startswith("tag "))
        out += ["", "Mutation operators applied: " + ", ".join(f"{k} {v:,}" for k, v in tags) + "."]
    else:
        stages = {k[6:]: v for k, v in stats.items() if k.startswith("stage ")}
        out += ["", "Wall time in each stage (s, all networks): " + ", ".join(f"{k} {v:,.1f}" for k, v in stages.items())]
        ran = sorted((k[4:], v) for k, v in stats.items() if k.startswith("ran "))
        out += ["", "Networks run, by feature: " + ", ".join(f"{k} {v:,}" for k, v in ran) + "."]
        refused = collections.Counter({k[9:]: v for k, v in stats.items() if k.startswith("refused: ")})
        out += ["", "Most common reasons the checker refused a generated network: " +
                "; ".join(f"{k} ({v})" for k, v in refused.most_common(6)) + "."]
    if findings:
        out += ["", "| finding | count | first input | message | where | saved input |", "|---|---:|---:|---|---|---|"]
        by_key = collections.defaultdict(list)
        for f in findings:
            by_key[(f["kind"], f["key"])].append(f)
        for (kind, key), fs in sorted(by_key.items(), key=lambda kv: -len(kv[1])):
            first = min(fs, key=lambda f: f["index"])
            cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")[:160]  # noqa: E731
            out.append(f"| {kind}: {cell(key.removeprefix(kind + ': '))} | {len(fs)} | {first['index']} | {cell(first['message'])} | "
                       f"{cell(first['where'])} | {first.get('saved', '')} |")
    return out


def covered(bs: list[dict]) -> list[tuple[int, int]]:
    """The index ranges [a, b) the batches cover, merged and sorted."""
    merged: list[list[int]] = []
    for a, b in sorted((b["start"], b["start"] + b["count"]) for b in bs):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def _ranges(bs: list[dict]) -> str:
    return ", ".join(f"{a:,}-{b - 1:,}" for a, b in covered(bs)) or "none"
