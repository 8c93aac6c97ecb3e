"""Fuzzing campaigns for cnndsl, in two parts:

  mutate    mutated .arch text (seeded by architectures/ and architectures/invalid/: token and
            line edits, splices, numeric extremes, deep nesting, unicode, CR/LF, bulk) through
            `cnndsl.loads` and the rendering of its report or diagnostics; one input in ten also
            as a file through `cnndsl check` (cycling through its flags), and accepted ones through
            to_source and ONNX emission (fuzz_inputs.py);
  backends  random valid networks through the PyTorch module, the generated source (imported)
            and ONNX (the streamed bytes, the full checker, onnxruntime), compared with the IR's
            shapes and with each other within 1e-4 (fuzz_nets.py, fuzz_backends.py).

    python benchmarks/fuzz.py mutate --count 20000 --seed 1 --jobs 2 --out benchmarks/results/fuzz.md
    python benchmarks/fuzz.py backends --count 200 --seed 1 --jobs 2 --out benchmarks/results/fuzz.md
    python benchmarks/fuzz.py report --out benchmarks/results/fuzz.md   # the markdown from what is recorded
    python benchmarks/fuzz.py show mutate --seed 1 1234                 # print input 1234 of that campaign
    python benchmarks/fuzz.py reduce fuzz-state/inputs/mutate-s1-1234.arch   # shrink a failing input

Input i of a campaign is a pure function of (part, seed, i), so a campaign runs in chunks
(`--start K --count N`, in any order, on any machines sharing the state folder one at a time),
and an interrupted one resumes: each finished batch is appended to the journal
`STATE/PART-seedS.jsonl`, and a rerun of the same command runs only what the journal lacks.
A journal written by another version of the generator or corpus is refused (the inputs differ).

Each input runs in a worker process under a timer: one that takes more than --slow seconds of
CPU (1 s; 3 s for an input over 100 KB) is run again and, if still slow, recorded; a worker
stuck on one input for --kill seconds (wall) is killed, the input recorded as a hang, and its
batch goes on without it; a worker that dies is recorded the same way. A mutate worker also
records an input that grows its peak memory by 200 MB, and its address space is capped (a
blow-up becomes a MemoryError). A crash is any exception but CnnDslError; crashes are grouped
by type and place, and every finding's input is saved under STATE/inputs/.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import sys
import time
from multiprocessing.connection import wait
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_reduce  # noqa: E402
import fuzz_report  # noqa: E402
import fuzz_work  # noqa: E402
from fuzz_work import generate  # noqa: E402

BATCH = {"mutate": 250, "backends": 5}
KILL = {"mutate": 10.0, "backends": 60.0}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    state = Path(args.state)
    if args.command == "report":
        return _write_report(state, args.out)
    if args.command == "show":
        sys.stdout.write(generate(args.part, args.seed, args.index)[0])
        return 0
    if args.command == "reduce":
        return fuzz_reduce.reduce_file(Path(args.file), args.budget, args.part)
    code = run_campaign(args, state, argv)
    _write_report(state, args.out)
    return code


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for part in ("mutate", "backends"):
        c = sub.add_parser(part)
        c.add_argument("--count", type=int, required=True, help="inputs to run (from --start)")
        c.add_argument("--start", type=int, default=0, help="index of the first input (to run a campaign in chunks)")
        c.add_argument("--seed", type=int, default=1)
        c.add_argument("--jobs", type=int, default=1, help="worker processes")
        c.add_argument("--slow", type=float, default=1.0, help="seconds an input may take (3x for inputs over 100 KB)")
        c.add_argument("--kill", type=float, default=KILL[part], help="seconds before a stuck worker is killed")
        c.add_argument("--state", default="fuzz-state", help="journal and saved inputs (default: ./fuzz-state)")
        c.add_argument("--out", help="write the markdown report here (default: print it)")
        c.add_argument("--quiet", action="store_true")
    r = sub.add_parser("report")
    r.add_argument("--state", default="fuzz-state")
    r.add_argument("--out")
    s = sub.add_parser("show")
    s.add_argument("part", choices=("mutate", "backends"))
    s.add_argument("index", type=int)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--state", default="fuzz-state")
    d = sub.add_parser("reduce")
    d.add_argument("file")
    d.add_argument("--part", choices=("mutate", "backends"), help="default: from the file name (backends-...)")
    d.add_argument("--budget", type=int, default=2000, help="attempts at most")
    d.add_argument("--state", default="fuzz-state")
    return p


def _write_report(state: Path, out: str | None) -> int:
    text = fuzz_report.render(state)
    if out:
        Path(out).write_text(text, encoding="utf-8")
        print(f"wrote {out}")
    else:
        sys.stdout.write(text)
    return 0


# -- the campaign: batches to workers, a watchdog, the journal ---------------------------------

class Worker:
    """A worker process, the pipe to it, and the (index, start time) of the input it runs."""

    def __init__(self, ctx, part: str, seed: int, slow: float) -> None:
        self.slot = ctx.Array("d", [-1.0, 0.0], lock=False)
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=fuzz_work.serve, args=(part, seed, slow, child, self.slot), daemon=True)
        self.proc.start()
        child.close()
        self.task: tuple[int, int] | None = None

    def stop(self) -> None:
        self.proc.kill()
        self.proc.join()
        self.conn.close()
        Path(fuzz_work.scratch(self.proc.pid)).unlink(missing_ok=True)


def _plan(journal: Path, start: int, count: int, size: int) -> list[tuple[int, int]]:
    """Batches of at most `size` inputs (aligned to multiples of it) covering [start, start + count),
    less what the journal already holds."""
    covered = fuzz_report.covered(fuzz_report.batches(journal))
    plan, i, end = [], start, start + count
    while i < end:
        inside = next(((a, b) for a, b in covered if a <= i < b), None)
        if inside:
            i = inside[1]
            continue
        stop = min(end, (i // size + 1) * size, *(a for a, _ in covered if a > i))
        plan.append((i, stop - i))
        i = stop
    return plan


def run_campaign(args, state: Path, argv: list[str] | None = None) -> int:
    part, seed = args.command, args.seed
    journal = state / f"{part}-seed{seed}.jsonl"
    (state / "inputs").mkdir(parents=True, exist_ok=True)
    generator = fuzz_work.generator_id(part)
    earlier = {r.get("generator") for r in fuzz_report.records(journal) if r.get("type") == "run"}
    if earlier - {generator}:
        print(f"{journal} was written by another version of the generator or corpus (inputs differ): "
              "use a new --state or --seed", file=sys.stderr)
        return 2
    plan = collections.deque(_plan(journal, args.start, args.count, BATCH[part]))
    left = sum(n for _, n in plan)
    _append(journal, {"type": "run", "argv": ["python", "benchmarks/fuzz.py", *(argv or sys.argv[1:])],
                      **fuzz_report.machine(), "generator": generator, "start": args.start, "count": args.count,
                      "jobs": args.jobs, "left": left})
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    clock, code = time.monotonic(), 0
    campaign = _Campaign(ctx, args, journal, state, plan, left)
    try:
        campaign.loop()
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume", file=sys.stderr)
        code = 130
    finally:
        campaign.close()
        _append(journal, {"type": "end", "wall": time.monotonic() - clock, "interrupted": code != 0,
                          "done": campaign.done})
    return code


class _Campaign:
    def __init__(self, ctx, args, journal: Path, state: Path, plan, left: int) -> None:
        self.ctx, self.args, self.journal, self.state, self.plan = ctx, args, journal, state, plan
        self.left, self.done, self.findings = left, 0, 0
        self.skip: dict[int, set[int]] = collections.defaultdict(set)  # batch start -> indices killed
        self.extra: dict[int, list[dict]] = collections.defaultdict(list)
        self.workers = [self._spawn() for _ in range(min(args.jobs, len(plan)) or 0)]
        self.last_note = time.monotonic()

    def _spawn(self) -> Worker:
        return Worker(self.ctx, self.args.command, self.args.seed, self.args.slow)

    def loop(self) -> None:
        while self.plan or any(w.task for w in self.workers):
            for w in self.workers:
                if w.task is None and self.plan:
                    w.task = self.plan.popleft()
                    w.conn.send((*w.task, sorted(self.skip[w.task[0]])))
            busy = [w for w in self.workers if w.task]
            for conn in wait([w.conn for w in busy], timeout=0.25):
                self._receive(next(w for w in busy if w.conn is conn))
            self._watch()
            self._progress()

    def _receive(self, w: Worker) -> None:
        try:
            stats, findings, restart = w.conn.recv()
        except (EOFError, OSError):
            return self._lost(w, "died", f"worker exited with code {w.proc.exitcode}")
        start, count = w.task
        findings += self.extra.pop(start, [])
        for f in findings:
            f["saved"] = self._save(f["index"])
        stats["skipped"] = len(self.skip.pop(start, ()))
        _append(self.journal, {"type": "batch", "start": start, "count": count, "stats": stats, "findings": findings})
        self.done += count
        self.findings += len(findings)
        w.task = None
        if restart:
            self._replace(w)

    def _watch(self) -> None:
        now = time.monotonic()
        for w in self.workers:
            if w.task is None:
                continue
            began = w.slot[1]
            if began and now - began > self.args.kill:
                self._lost(w, "hang", f"killed after {now - began:.1f} s")
            elif not w.proc.is_alive():
                self._lost(w, "died", f"worker exited with code {w.proc.exitcode}")

    def _lost(self, w: Worker, kind: str, message: str) -> None:
        """The worker is gone mid-batch: record the input it held, and run the batch again without it."""
        index, start = int(w.slot[0]), w.task[0]
        if index >= 0:
            self.skip[start].add(index)
            self.extra[start].append({"index": index, "kind": kind, "key": kind, "type": kind, "where": "",
                                      "message": message, "seconds": self.args.kill if kind == "hang" else None})
        self.plan.appendleft(w.task)
        w.task = None
        self._replace(w)

    def _replace(self, w: Worker) -> None:
        w.stop()
        self.workers[self.workers.index(w)] = self._spawn()

    def _save(self, index: int) -> str:
        path = self.state / "inputs" / f"{self.args.command}-s{self.args.seed}-{index}.arch"
        if not path.exists():
            path.write_text(generate(self.args.command, self.args.seed, index)[0], encoding="utf-8", newline="")
        return str(path)

    def _progress(self) -> None:
        if self.args.quiet or time.monotonic() - self.last_note < 10:
            return
        self.last_note = time.monotonic()
        print(f"{self.done:,}/{self.left:,} inputs, {self.findings} findings", file=sys.stderr, flush=True)

    def close(self) -> None:
        for w in self.workers:
            if w.task is None and w.proc.is_alive():
                try:
                    w.conn.send(None)
                except OSError:
                    pass
            w.stop()


def _append(journal: Path, record: dict) -> None:
    with journal.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    sys.exit(main())
