"""Batch audit throughput: one-at-a-time vs batched local vs Ray with 1 and 2 workers.

    python benchmarks/batch.py                    # 2,000 generated inspection cases (the issue's figure)
    python benchmarks/batch.py --cases 200 --sample 20   # a quick look

For each of "decision + Shapley" (--no-ig) and "with IG", prints cases/s, cases/s per
core and the peak resident memory per worker (VmHWM of the worker process, read from
/proc while it runs) of:

* one-at-a-time: today's per-case path (``Lens.explain`` case by case, as
  ``audit report --cases all`` does), timed on ``--sample`` cases and extrapolated;
* batched local: ``deq-lens batch --engine local`` (one process, one thread);
* Ray 1 / Ray 2: ``deq-lens batch --engine ray --workers 1|2`` in local mode.

Rates are steady-state (``BatchResult.steady_rate``: the model load, Ray's start and the
first chunk excluded). Stability columns are off (``--starts 0``) so that the figures
are the issue's: decision + Shapley, and with IG. Every run is a subprocess with one
torch thread per worker; the audit log and signing key go to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # this checkout's deq_core, also when run as a script
    sys.path.insert(0, str(ROOT))
MODEL = ROOT / "assets" / "models" / "inspection-deq"
MONTH = 10_000_000
SECONDS_PER_MONTH = 30 * 24 * 3600


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _peak_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _is_worker(pid: int, ray: bool) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return "LensWorker" in cmdline if ray else True


def run_measured(command: list[str], env: dict, ray: bool) -> tuple[dict, float]:
    """Run ``command``; (its JSON result, the largest peak RSS in MB of a worker process)."""
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks: dict[int, int] = {}

    def watch():
        while process.poll() is None:
            pids = _descendants(process.pid) if ray else {process.pid}
            for pid in pids:
                if _is_worker(pid, ray):
                    peak = _peak_kb(pid)
                    if peak:
                        peaks[pid] = max(peaks.get(pid, 0), peak)
            time.sleep(0.3)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = process.communicate()
    watcher.join()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1]), max(peaks.values(), default=0) / 1024


def one_at_a_time(cases: Path, sample: int, ig: bool, env: dict) -> tuple[float, float]:
    """Cases/s of Lens.explain case by case on ``sample`` cases (after one uncounted warm-up), and peak MB."""
    code = f"""
import json, time, torch
torch.set_num_threads(1)
from deq_core.lens import Lens
from deq_core.data import load_folder
from deq_core.batch import RecordOptions, chunk_cases, one_at_a_time_records
lens = Lens.open({str(MODEL)!r}, device="cpu")
data = load_folder({str(cases)!r}, modalities=lens.modalities).subset(list(range({sample + 1})))
texts = [{{k: v[i] for k, v in data.texts.items()}} for i in range(len(data))]
cases = chunk_cases(lens.modalities, data.inputs, data.ids, data.labels.tolist(), texts, "bench")
options = RecordOptions(ig={ig}, stability_starts=0)
one_at_a_time_records(lens, cases[:1], options)
start = time.perf_counter()
one_at_a_time_records(lens, cases[1:], options)
print(json.dumps({{"steady_rate": {sample} / (time.perf_counter() - start)}}))
"""
    result, peak = run_measured([sys.executable, "-c", code], env, ray=False)
    return result["steady_rate"], peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=2000, help="generated inspection cases (default 2000)")
    parser.add_argument("--sample", type=int, default=50, help="cases timed for the one-at-a-time loop")
    parser.add_argument("--chunk", type=int, default=32, help="cases per batched call")
    parser.add_argument("--modes", default="shapley,ig", help="comma list of: shapley (decision + Shapley), ig")
    parser.add_argument("--engines", default="one,local,ray1,ray2")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="deq-batch-bench-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DEQ_LENS_KEY_DIR": str(work / "keys"),
           "DEQ_LENS_CACHE": str(work / "cache"), "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}  # fmt: skip
    from deq_core.data import generate_folder

    cases = generate_folder("inspection", args.cases, work / "cases")
    engines = args.engines.split(",")
    print(f"{args.cases} generated inspection cases (seed 1), model {MODEL.name}, chunk {args.chunk}, "
          f"1 torch thread per worker, stability off; one-at-a-time timed on {args.sample} cases and extrapolated")  # fmt: skip
    header = f"{'mode':<18} {'engine':<14} {'workers':>7} {'cases/s':>9} {'per core':>9} {'peak MB/worker':>15}"
    print(header)
    print("-" * len(header))
    verdicts = []
    for mode in args.modes.split(","):
        ig = mode == "ig"
        rates: dict[str, float] = {}
        peaks: dict[str, float] = {}
        if "one" in engines:
            rates["one"], peaks["one"] = one_at_a_time(cases, min(args.sample, args.cases - 1), ig, env)
        for name, engine, workers in (("local", "local", 1), ("ray1", "ray", 1), ("ray2", "ray", 2)):
            if name not in engines:
                continue
            command = [sys.executable, "-m", "deq_core", "batch", "--model", str(MODEL), "--cases", str(cases),
                       "--out", str(work / f"{mode}-{name}"), "--engine", engine, "--workers", str(workers),
                       "--chunk", str(args.chunk), "--starts", "0", "--no-progress", "--json",
                       "--log", f"sqlite:///{work / f'{mode}-{name}.sqlite'}"] + ([] if ig else ["--no-ig"])  # fmt: skip
            result, peaks[name] = run_measured(command, env, ray=engine == "ray")
            rates[name] = result["steady_rate"] or float("nan")
        label = "decision + Shapley" if not ig else "with IG"
        for name, workers in (("one", 1), ("local", 1), ("ray1", 1), ("ray2", 2)):
            if name in rates:
                shown = {"one": "one-at-a-time", "local": "batched local", "ray1": "Ray", "ray2": "Ray"}[name]
                print(f"{label:<18} {shown:<14} {workers:>7} {rates[name]:>9.2f} {rates[name] / workers:>9.2f} "
                      f"{peaks[name]:>15.0f}")  # fmt: skip
        if "one" in rates and "local" in rates:
            ratio = rates["local"] / rates["one"]
            verdicts.append(f"{label}: batched local / one-at-a-time per core = {ratio:.1f}x (target >= 5x: "
                            f"{'met' if ratio >= 5 else 'NOT met'})")  # fmt: skip
        if "ray1" in rates and "ray2" in rates:
            ratio = rates["ray2"] / rates["ray1"]
            verdicts.append(f"{label}: Ray 2 workers / Ray 1 worker = {ratio:.2f}x (target >= 1.6x: "
                            f"{'met' if ratio >= 1.6 else 'NOT met'})")  # fmt: skip
        if peaks:
            worst = max(peaks.values())
            verdicts.append(f"{label}: peak memory per worker {worst:.0f} MB (target <= 1536 MB: "
                            f"{'met' if worst <= 1536 else 'NOT met'})")  # fmt: skip
        best = rates.get("local") or rates.get("ray1")
        if best:
            needed = MONTH / SECONDS_PER_MONTH / best
            verdicts.append(f"{label}: 10 million decisions a month = {MONTH / SECONDS_PER_MONTH:.2f} cases/s; at "
                            f"{best:.2f} cases/s per core that needs {needed:.2g} cores running all month "
                            f"({max(1, math.ceil(needed))} whole)")  # fmt: skip
    print()
    print("\n".join(verdicts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
