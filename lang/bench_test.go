package lang

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// benchRepo writes a repository of n images of 10 steps each into a new directory.
func benchRepo(b *testing.B, n int) string {
	dir := b.TempDir()
	writeFile(b, filepath.Join(dir, "files/a.txt"), "hello\n")
	var src strings.Builder
	src.WriteString("package bench\n")
	for i := range n {
		fmt.Fprintf(&src, `
images: "img%04d": {
	disks: root: "%dMiB"
	steps: [
		{job: "label", disk: "root", type: "msdos"},
		{job: "partition", disk: "root", partitions: [{size: "rest", bootable: true}]},
		{job: "format", place: "root:1", fs: "ext4"},
		{job: "copy-in", src: "files/a.txt", dest: "root:1:/a.txt"},
		{job: "run", root: "root:1", command: "echo %d > /etc/n"},
		{job: "copy-in", src: "files", dest: "root:1:/srv"},
		{job: "remove", path: "root:1:/srv/a.txt"},
		{job: "hash", disk: "root", dest: "root.b3"},
		{job: "tar-out", src: "root:1:/etc", dest: "etc.tar"},
		{job: "export", disk: "root", format: "qcow2", dest: "img.qcow2"},
	]
}
`, i, 64+i, i)
	}
	writeFile(b, filepath.Join(dir, "bench.cue"), src.String())
	return dir
}

// BenchmarkCompile100x10 loads, compiles and keys a repository of 100 images of
// 10 steps each (target: well under a second).
func BenchmarkCompile100x10(b *testing.B) {
	dir := benchRepo(b, 100)
	opt := Options{StatCache: filepath.Join(b.TempDir(), "stat-cache.json")}
	for b.Loop() {
		g, err := Compile(b.Context(), dir, opt)
		if err != nil {
			b.Fatal(err)
		}
		if len(g.Images) != 100 || len(g.Nodes) != 100*11 {
			b.Fatalf("%d images, %d nodes", len(g.Images), len(g.Nodes))
		}
	}
}

// BenchmarkNoopSolve1000x10 compiles a repository of 1,000 images of 10 steps
// each (11,000 nodes) once fresh, then, per iteration, through the graph cache as
// a no-op solve does (target: under 0.3 s). It reports both, and their ratio.
// The files count as settled (racy 0), as a repository's are between two solves.
func BenchmarkNoopSolve1000x10(b *testing.B) {
	dir := benchRepo(b, 1000)
	state := b.TempDir()
	opt := Options{StatCache: filepath.Join(state, "stat-cache.json")}
	t0, c0 := time.Now(), cpuTime(b)
	want, err := compile(b.Context(), dir, opt, 0)
	if err != nil {
		b.Fatal(err)
	}
	fresh, freshCPU := time.Since(t0), cpuTime(b)-c0
	opt.GraphCache = filepath.Join(state, "graph")
	if _, err := compile(b.Context(), dir, opt, 0); err != nil { // fills the cache
		b.Fatal(err)
	}
	b.ResetTimer()
	t1, c1 := time.Now(), cpuTime(b)
	n := 0
	for b.Loop() {
		g, err := compile(b.Context(), dir, opt, 0)
		if err != nil {
			b.Fatal(err)
		}
		if len(g.Nodes) != len(want.Nodes) || g.Images[999].Final().Key != want.Images[999].Final().Key {
			b.Fatalf("%d nodes, want %d; or the last key differs", len(g.Nodes), len(want.Nodes))
		}
		n++
	}
	hit, hitCPU := time.Since(t1)/time.Duration(n), (cpuTime(b)-c1)/time.Duration(n)
	b.ReportMetric(float64(fresh.Milliseconds()), "fresh-ms")
	b.ReportMetric(float64(freshCPU.Milliseconds()), "fresh-cpu-ms")
	b.ReportMetric(float64(hit.Microseconds())/1000, "hit-ms")
	b.ReportMetric(float64(hitCPU.Microseconds())/1000, "hit-cpu-ms")
	b.ReportMetric(float64(fresh)/float64(hit), "fresh/hit")
}

// cpuTime is the CPU time (user and system) the process has used: on a machine
// others share, a steadier measure than the wall clock.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
