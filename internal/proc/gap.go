package proc

import (
	"sort"
)

const (
	pageSize = 4096
	// rel32Reach bounds |x-y| for any two addresses that must reach each
	// other with a rel32 displacement. The displacement is relative to the
	// end of the instruction, so keep a margin below 2 GiB.
	rel32Reach = 1<<31 - 1<<16
	// lowestUserAddr is the lowest address we are willing to map at
	// (mmap_min_addr is 64 KiB by default; stay well clear of NULL).
	lowestUserAddr = 1 << 20
	// highestUserAddr is the end of the 47-bit x86-64 user address space;
	// the kernel only maps above it on request with 5-level paging.
	highestUserAddr = 1<<47 - pageSize
	// stackGrowthReserve is kept free below [stack] so the main stack can
	// still grow into it.
	stackGrowthReserve = 64 << 20
)

// reachWindow returns the range [lo, hi] of start addresses s such that every
// address in [s, s+size) is within rel32Reach of every address in
// [tlo, thi). ok is false if no such start exists.
func reachWindow(tlo, thi, size uint64) (lo, hi uint64, ok bool) {
	if thi <= tlo || size == 0 || size > 2*rel32Reach || thi-tlo > 2*rel32Reach {
		return 0, 0, false
	}
	// s >= thi-1 - rel32Reach  and  s+size-1 <= tlo + rel32Reach
	if thi-1 > rel32Reach {
		lo = thi - 1 - rel32Reach
	}
	top := tlo + rel32Reach + 1
	if top < size {
		return 0, 0, false
	}
	hi = top - size
	return lo, hi, lo <= hi
}

func alignUp(v uint64) uint64   { return (v + pageSize - 1) &^ (pageSize - 1) }
func alignDown(v uint64) uint64 { return v &^ (pageSize - 1) }

// gapCandidates returns page-aligned start addresses for a new mapping of
// size bytes (a page multiple) in the free space of maps, such that the new
// mapping is within rel32 reach of [tlo, thi). Candidates are ordered by
// distance from the target, nearest first, and keep a guard page from their
// neighbours so the kernel never merges them with adjacent mappings.
func gapCandidates(maps []Mapping, tlo, thi, size uint64, max int) []uint64 {
	wlo, whi, ok := reachWindow(tlo, thi, size)
	if !ok {
		return nil
	}
	ms := append([]Mapping(nil), maps...)
	sort.Slice(ms, func(i, j int) bool { return ms[i].Start < ms[j].Start })

	type cand struct{ start, dist uint64 }
	var cands []cand
	consider := func(gapLo, gapHi uint64) {
		// Keep one page free on both sides.
		gapLo = alignUp(gapLo) + pageSize
		if gapHi < pageSize {
			return
		}
		gapHi = alignDown(gapHi) - pageSize
		if gapLo < lowestUserAddr {
			gapLo = lowestUserAddr
		}
		if gapHi > highestUserAddr {
			gapHi = highestUserAddr
		}
		if gapHi <= gapLo || gapHi-gapLo < size {
			return
		}
		// Valid starts in this gap: [gapLo, gapHi-size] ∩ [wlo, whi].
		slo, shi := gapLo, gapHi-size
		if slo < wlo {
			slo = alignUp(wlo)
		}
		if shi > whi {
			shi = alignDown(whi)
		}
		if slo > shi {
			return
		}
		// Pick the start closest to the target range.
		var s, d uint64
		switch {
		case shi+size <= tlo: // gap entirely below the target
			s, d = shi, tlo-(shi+size)
		case slo >= thi: // above
			s, d = slo, slo-thi
		default: // the gap overlaps the target range (target is not mapped there)
			s, d = slo, 0
		}
		cands = append(cands, cand{s, d})
	}
	prevEnd := uint64(0)
	for _, m := range ms {
		if m.Start > prevEnd {
			hi := m.Start
			if m.Path == "[stack]" {
				if hi > stackGrowthReserve {
					hi -= stackGrowthReserve
				} else {
					hi = 0
				}
			}
			if hi > prevEnd {
				consider(prevEnd, hi)
			}
		}
		if m.End > prevEnd {
			prevEnd = m.End
		}
	}
	consider(prevEnd, highestUserAddr+pageSize)

	sort.SliceStable(cands, func(i, j int) bool { return cands[i].dist < cands[j].dist })
	out := make([]uint64, 0, len(cands))
	for _, c := range cands {
		if len(out) == max {
			break
		}
		out = append(out, c.start)
	}
	return out
}
