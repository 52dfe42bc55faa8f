package solver_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/lang"
	"vmb.dev/vmb/solver"
	"vmb.dev/vmb/solver/executortest"
)

// BenchmarkCachedSolve100x10 is a no-op rebuild of a repository of 100 images of 10
// steps each, every node cached and every output in place: what a user waits for
// when nothing changed. "compile" loads the CUE, hashes local inputs (through the
// stat cache) and derives keys; "solve" plans against the action cache and checks
// the outputs; "total" is both, vmb solve's wall time less process start.
func BenchmarkCachedSolve100x10(b *testing.B) {
	dir := b.TempDir()
	os.MkdirAll(filepath.Join(dir, "files/site"), 0o755)
	for i := range 20 {
		os.WriteFile(filepath.Join(dir, "files/site", fmt.Sprintf("page%02d.html", i)), []byte(strings.Repeat("<p>vmb</p>\n", 100*(i+1))), 0o644)
	}
	os.WriteFile(filepath.Join(dir, "files/motd"), []byte("hello\n"), 0o644)
	var src strings.Builder
	src.WriteString("package bench\n")
	for i := range 100 {
		fmt.Fprintf(&src, `
images: "img%03d": {
	disks: root: "%dMiB"
	steps: [
		{job: "label", disk: "root", type: "gpt"},
		{job: "partition", disk: "root", partitions: [{size: "100MiB", guid: "efi"}, {size: "rest"}]},
		{job: "format", place: "root:1", fs: "fat32"},
		{job: "format", place: "root:2", fs: "ext4"},
		{job: "copy-in", src: "files/motd", dest: "root:2:/etc/motd"},
		{job: "copy-in", src: "files/site", dest: "root:2:/srv/www"},
		{job: "run", root: "root:2", command: "echo %d > /etc/n"},
		{job: "remove", path: "root:2:/srv/www/page00.html"},
		{job: "copy-out", src: "root:2:/etc/n", dest: "n"},
		{job: "export", disk: "root", format: "qcow2", dest: "img.qcow2"},
	]
}
`, i, 1024+i, i)
	}
	os.WriteFile(filepath.Join(dir, "build.cue"), []byte(src.String()), 0o644)
	store, err := cas.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	x := &executortest.Fake{Store: store}
	out := b.TempDir()
	opt := lang.Options{Executor: x.Identity(), StatCache: filepath.Join(b.TempDir(), "stat-cache.json")}
	compile := func() *graph.Graph {
		g, err := lang.Compile(b.Context(), dir, opt)
		if err != nil {
			b.Fatal(err)
		}
		return g
	}
	solve := func(g *graph.Graph) *solver.Summary {
		sum, err := solver.New(store, x, solver.Options{OutDir: out}).Solve(b.Context(), g)
		if err != nil {
			b.Fatal(err)
		}
		return sum
	}
	g := compile()
	if sum := solve(g); sum.Executed != 1100 { // 10 steps and the disk's creation each
		b.Fatalf("first solve executed %d nodes, want 1100", sum.Executed)
	}
	b.Run("compile", func(b *testing.B) {
		for b.Loop() {
			compile()
		}
	})
	b.Run("solve", func(b *testing.B) {
		for b.Loop() {
			if sum := solve(g); sum.Executed != 0 {
				b.Fatalf("executed %d", sum.Executed)
			}
		}
	})
	b.Run("total", func(b *testing.B) {
		for b.Loop() {
			if sum := solve(compile()); sum.Executed != 0 {
				b.Fatalf("executed %d", sum.Executed)
			}
		}
	})
}

// BenchmarkSolveTracing runs every node of 20 images of 5 steps with the fake
// executor (--no-cache), without a tracer provider ("off", vmb's default: the
// otel API's no-op) and with one that records every span ("on"): what a trace
// costs the solver, and that it costs nothing measurable off.
func BenchmarkSolveTracing(b *testing.B) {
	dir := b.TempDir()
	os.WriteFile(filepath.Join(dir, "motd"), []byte("hello\n"), 0o644)
	var src strings.Builder
	src.WriteString("package bench\n")
	for i := range 20 {
		fmt.Fprintf(&src, `images: "img%02d": {
	disks: root: "%dMiB"
	steps: [
		{job: "format", place: "root", fs: "ext4"},
		{job: "copy-in", src: "motd", dest: "root:/etc/motd"},
		{job: "run", root: "root", command: "echo %d > /etc/n"},
		{job: "remove", path: "root:/etc/motd"},
	]
}
`, i, 64+i, i)
	}
	os.WriteFile(filepath.Join(dir, "build.cue"), []byte(src.String()), 0o644)
	store, err := cas.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	x := &executortest.Fake{Store: store, Chain: true}
	g, err := lang.Compile(b.Context(), dir, lang.Options{Executor: x.Identity()})
	if err != nil {
		b.Fatal(err)
	}
	solve := func(b *testing.B) {
		for b.Loop() {
			if sum, err := solver.New(store, x, solver.Options{NoCache: true}).Solve(b.Context(), g); err != nil || sum.Executed != 100 {
				b.Fatalf("%+v, %v", sum, err)
			}
		}
	}
	prev := otel.GetTracerProvider()
	defer otel.SetTracerProvider(prev)
	b.Run("off", solve)
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tracetest.NewSpanRecorder())))
	b.Run("on", solve)
}
