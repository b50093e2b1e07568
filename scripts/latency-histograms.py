#!/usr/bin/env python3
"""Latency percentiles from wrk's histograms, merged across runs.

scripts/bench.sh's wrk script writes a run's whole latency histogram (lines "<microseconds> <calls>") to the file
named by BENCH_HISTOGRAM. Runs of two kinds taken in turn (through the sidecar, then direct, then the sidecar
again...) share the machine's slow drifts, and the union of each kind's runs is one measurement of it, with
exact percentiles computed as wrk computes its own (the smallest latency with at least p% of the samples at or
below it; for a single run they equal wrk's). wrk 4.1's histogram holds 10-15% more samples than the calls it
reports, so no count is printed.

  latency-histograms.py summary FILE...          p50, p99 and slowest call of the union
  latency-histograms.py added LABEL A,.. B,..    the p50, p99 and slowest call of A's union minus B's
"""

import math
import sys
from collections import Counter


def union(paths):
    calls = Counter()
    for path in paths:
        with open(path) as lines:
            for line in lines:
                value, count = line.split()
                calls[int(value)] += int(count)
    if not calls:
        sys.exit(f"latency-histograms: no calls in {', '.join(paths)}")
    return calls


def percentile(calls, p):
    # wrk's rank is C's round() of this: halves away from zero (Python's round() takes them to the even side).
    rank = math.floor(p / 100 * sum(calls.values()) + 0.5 + 0.5)
    seen = 0
    for value in sorted(calls):
        seen += calls[value]
        if seen >= rank:
            return value
    return max(calls)


def measures(calls):
    """p50, p99 and the slowest call, in ms."""
    return percentile(calls, 50) / 1000, percentile(calls, 99) / 1000, max(calls) / 1000


def main(args):
    if len(args) >= 2 and args[0] == "summary":
        p50, p99, slowest = measures(union(args[1:]))
        print(f"   p50 {p50:.3f} ms, p99 {p99:.3f} ms, slowest {slowest:.1f} ms")
    elif len(args) == 4 and args[0] == "added":
        a, b = (measures(union(files.split(","))) for files in args[2:])
        print(f"   against {args[1]}: p50 {a[0] - b[0]:+.3f} ms, p99 {a[1] - b[1]:+.3f} ms, slowest {a[2] - b[2]:+.1f} ms")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
