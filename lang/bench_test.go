package lang

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkCompile100x10 loads, compiles and keys a repository of 100 images of
// 10 steps each (target: well under a second).
func BenchmarkCompile100x10(b *testing.B) {
	dir := b.TempDir()
	writeFile(b, filepath.Join(dir, "files/a.txt"), "hello\n")
	var src strings.Builder
	src.WriteString("package bench\n")
	for i := range 100 {
		fmt.Fprintf(&src, `
images: "img%03d": {
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
