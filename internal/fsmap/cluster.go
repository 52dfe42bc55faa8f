package fsmap

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
)

// Run names unit u (a cluster or block) that no structure holds by name, and
// says where the run of units from u that name names the same ends: at limit at
// the latest.
func Run(u, limit int64, name func(int64) string) (string, int64) {
	s := name(u)
	e := u + 1
	for e < limit && name(e) == s {
		e++
	}
	return s, e
}

// Chain follows a cluster chain (FAT's, exFAT's) from cluster c for n clusters,
// next giving each one's successor, and lists them. A chain that ends early (at a
// cluster valid rejects) or comes back to one of its own is an error, with the
// clusters up to there: the walk is bounded by the number of clusters. mark is a
// bitmap of every cluster, all clear, which Chain leaves clear.
func Chain(c, n int64, mark []uint64, valid func(int64) bool, next func(int64) int64) ([]int64, error) {
	var out []int64
	defer func() {
		for _, c := range out {
			mark[c/64] &^= 1 << (c % 64)
		}
	}()
	for int64(len(out)) < n {
		switch {
		case !valid(c):
			return out, fmt.Errorf("cluster chain ends after %d of %d clusters (at %#x)", len(out), n, c)
		case mark[c/64]&(1<<(c%64)) != 0:
			return out, fmt.Errorf("cluster chain loops back to cluster %d", c)
		}
		mark[c/64] |= 1 << (c % 64)
		out = append(out, c)
		c = next(c)
	}
	return out, nil
}

// Identity is a file's identity for vmb diff: a hash of what says how long it is
// (prefix) and of the clusters that hold it.
func Identity(prefix []byte, clusters []int64) uint64 {
	b := prefix
	for _, c := range clusters {
		b = binary.LittleEndian.AppendUint64(b, uint64(c))
	}
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64()
}
