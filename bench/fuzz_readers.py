"""Every reader of a user's file, fuzzed at length (issue 20): the generators of
tests/data/test_fuzz_readers.py (`CASES`, one function of a seed per reader) run for seeds 0..N-1,
each case's memory measured with tracemalloc. Per reader: the cases tried, how many loaded, how many
were refused with one line, how many ended otherwise (another exception: none expected), ran a
pickle's code (a marker file appeared: none expected) or allocated beyond the file (more than
tests' MEMORY_FLOOR + MEMORY_PER_BYTE x the file's bytes: none expected), and the largest growth seen.
The process's peak resident memory (getrusage) is reported too: it also counts what C libraries
(Pillow, pyarrow, torch) allocate, which tracemalloc does not see.

    OMP_NUM_THREADS=1 .venv/bin/python bench/fuzz_readers.py [--cases 2000] [--readers npy npz ...]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

os.environ["AEZOO_FUZZ_MEASURE"] = "1"
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' conftest (run_cli)
sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402


def load_tests():
    spec = importlib.util.spec_from_file_location("test_fuzz_readers", ROOT / "tests" / "data" / "test_fuzz_readers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=2000, help="seeds per reader")
    p.add_argument("--readers", nargs="*", help="only these readers (default: all)")
    args = p.parse_args()
    fuzz = load_tests()
    readers = args.readers or list(fuzz.CASES)
    tracemalloc.start()
    for name in readers:  # warm-up, on other seeds: imports and first-call caches are not the reader's allocation
        for seed in range(10**9, 10**9 + 20):
            with contextlib.suppress(Exception):
                fuzz.CASES[name](seed)
    fuzz.TALLY.clear()
    fuzz.PEAK.clear()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results, failures = {}, {}
    for name in readers:
        started = time.perf_counter()
        other_before = 0
        for seed in range(args.cases):
            try:
                fuzz.CASES[name](seed)
            except Exception as e:  # counted by `attempt` (other, ran_code, over_memory) or a failed check
                tally = fuzz.TALLY[name]
                if tally["other"] == other_before and not tally["ran_code"] and not tally["over_memory"]:
                    tally["failed_checks"] += 1
                other_before = tally["other"]
                first = str(e).splitlines()[0][:200] if str(e) else ""
                failures.setdefault(name, []).append(f"seed {seed}: {type(e).__name__}: {first}")
        tally, peak = fuzz.TALLY[name], fuzz.PEAK[name]
        results[name] = {
            "tried": tally["tried"], "loaded": tally["loaded"], "refused_one_line": tally["refused"],
            "other_exception": tally["other"], "ran_code": tally["ran_code"], "over_memory": tally["over_memory"],
            "failed_checks": tally["failed_checks"],
            "max_traced_growth_bytes": peak["bytes"], "file_bytes_at_max": peak["file_bytes"],
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(name, results[name], flush=True)
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bad = ("other_exception", "ran_code", "over_memory", "failed_checks")
    clean = all(r[k] == 0 for r in results.values() for k in bad)
    path = write_result(__file__, {
        "command": "python bench/fuzz_readers.py " + " ".join(sys.argv[1:]),
        "what": "per reader, cases generated from seeds 0..N-1 by tests/data/test_fuzz_readers.py (valid files, then "
                "damaged: cut, flipped, overwritten, inserted, appended, emptied; headers with other shapes, dtypes "
                "and huge sizes; pickles that would create a marker file; folders where files are expected)",
        "cases_per_reader": args.cases,
        "memory_budget": f"{fuzz.MEMORY_FLOOR} bytes + {fuzz.MEMORY_PER_BYTE} x the file's bytes "
                         "(tracemalloc's peak growth while reading)",
        "all_clean": clean,
        "readers": results,
        "total_tried": sum(r["tried"] for r in results.values()),
        "peak_rss_mib_before_cases": round(rss_before / 1024, 1),
        "peak_rss_mib_after_cases": round(rss_after / 1024, 1),
        "first_failures": {k: v[:5] for k, v in failures.items()},
    })
    print(f"wrote {path}; all clean: {clean}")


if __name__ == "__main__":
    main()
