package lang

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// bigRepo writes a repository of 100 images x 10 steps, each image copying in a
// file of its own, so that load, compile, input hashing and keys are all measured.
func bigRepo(b *testing.B) string {
	var src strings.Builder
	src.WriteString("package build\n\n#Base: {\n\tdisks: root: \"1GiB\"\n\t...\n}\n\nimages: {\n")
	files := map[string]string{}
	for i := range 100 {
		fmt.Fprintf(&src, "\t\"img%03d\": #Base & {steps: [\n", i)
		src.WriteString("\t\t{job: \"label\", disk: \"root\", type: \"gpt\"},\n")
		src.WriteString("\t\t{job: \"partition\", disk: \"root\", partitions: [{size: \"64MiB\", guid: \"efi\"}, {size: \"rest\", guid: \"linux\"}]},\n")
		src.WriteString("\t\t{job: \"format\", place: \"root:1\", fs: \"fat32\"},\n")
		src.WriteString("\t\t{job: \"format\", place: \"root:2\", fs: \"ext4\"},\n")
		fmt.Fprintf(&src, "\t\t{job: \"copy-in\", src: \"files/%d\", dest: \"root:2:/etc/motd\"},\n", i)
		src.WriteString("\t\t{job: \"copy-in\", src: \"files/common\", dest: \"root:2:/opt\"},\n")
		fmt.Fprintf(&src, "\t\t{job: \"run\", root: \"root:2\", command: \"echo %d > /id\"},\n", i)
		src.WriteString("\t\t{job: \"remove\", path: \"root:2:/tmp\"},\n")
		src.WriteString("\t\t{job: \"hash\", disk: \"root\", dest: \"root.b3\"},\n")
		src.WriteString("\t\t{job: \"export\", disk: \"root\", format: \"qcow2\", dest: \"root.qcow2\"},\n")
		src.WriteString("\t]}\n")
		files[fmt.Sprintf("files/%d", i)] = fmt.Sprintf("image %d\n", i)
	}
	src.WriteString("}\n")
	files["build.cue"] = src.String()
	for j := range 50 {
		files[fmt.Sprintf("files/common/f%02d", j)] = strings.Repeat("x", 1000*j)
	}
	return writeRepo(b, files)
}

// BenchmarkCompile100x10 loads, compiles and keys 100 images of 10 steps with a warm
// stat cache, as a no-op rebuild does. Goal: under 1 s. The first five nodes are shared by all
// images: 5 + 100*6 distinct nodes.
func BenchmarkCompile100x10(b *testing.B) {
	dir := bigRepo(b)
	opt := Options{Executor: "bench", StatCache: filepath.Join(b.TempDir(), "stat-cache.json")}
	if _, err := Compile(dir, opt); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		g, err := Compile(dir, opt)
		if err != nil || len(g.Nodes) != 5+100*6 {
			b.Fatalf("%v, %d nodes", err, len(g.Nodes))
		}
	}
	os.Remove(opt.StatCache)
}
