#!/bin/bash
# bench-gaps.sh ROUNDS [LIVEFIX...]: runs e2e/user's BenchmarkProcessCommands
# (one sub-benchmark, workers=8 unless SUB says otherwise) ROUNDS times per
# livefix program, alternating, and pools every longest gap each run logs
# (patch, unpatch, and the no-patching baseline windows) into one
# distribution per program. With more busy threads than CPUs the gaps come
# in whole time slices, so one run's median of 10 moves by a slice; the
# pooled figures show the difference between two programs. No program
# given: the tree's own (built by the benchmark).
set -euo pipefail
rounds=${1:?usage: bench-gaps.sh ROUNDS [LIVEFIX...]}
shift
progs=("$@")
[ ${#progs[@]} -gt 0 ] || progs=("")
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
go test -c -o "$out/user.test" "$root/e2e/user"
cd "$root/e2e/user"
for _ in $(seq "$rounds"); do
	for i in "${!progs[@]}"; do
		LIVEFIX_BENCH_LIVEFIX=${progs[$i]} "$out/user.test" -test.run '^$' \
			-test.bench "ProcessCommands/${SUB:-workers=8}\$" -test.benchtime 10x 2>&1 |
			grep 'patch gaps' >>"$out/log.$i" || true
	done
done
for i in "${!progs[@]}"; do
	python3 - "$out/log.$i" "${progs[$i]:-tree}" <<'PY'
import re, statistics, sys
def ms(v):
    for unit, f in (("µs", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float(v)
pools = {"patch": [], "unpatch": [], "baseline": []}
for line in open(sys.argv[1]):
    for name in pools:
        m = re.search(r"(?:^|[ ;])" + name + r"(?: gaps)? \[([^]]*)\]", line)
        if m:
            pools[name] += [ms(v) for v in m.group(1).split()]
for name, v in pools.items():
    if not v:
        continue
    v.sort()
    print(f"{sys.argv[2]}: {name:8s} n={len(v)} mean={statistics.mean(v):.1f} "
          f"median={statistics.median(v):.1f} p90={v[int(0.9 * (len(v) - 1))]:.1f} max={v[-1]:.1f} ms")
PY
done
