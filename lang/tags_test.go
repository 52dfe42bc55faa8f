package lang

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"vmb.dev/vmb/graph"
)

// A tag injects a value into a field marked @tag(key): the image built from it is
// keyed by that value, a tag's default applies without it, and a tag no field
// takes, or a value of the wrong type, is an error that names it.
func TestTags(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.cue"), `package x

size: *"64MiB" | string @tag(size)
label: string @tag(label)
images: a: {disks: root: size, steps: [{job: "format", place: "root", fs: "ext4", "label": label}]}
`)
	compile := func(tags ...string) (*graph.Graph, error) {
		return Compile(context.Background(), dir, Options{Executor: testExecutor, Tags: tags})
	}
	final := func(g *graph.Graph) *graph.Node { return g.Images[0].Final() }

	g1, err := compile("label=one")
	if err != nil {
		t.Fatal(err)
	}
	if f := final(g1).Job.(*graph.Format); f.Label != "one" || final(g1).Parent.Job.(*graph.CreateDisk).Size != 64<<20 {
		t.Errorf("label=one: %s after %s", f.Describe(), final(g1).Parent.Job.Describe())
	}
	g2, err := compile("label=two", "size=128MiB")
	if err != nil {
		t.Fatal(err)
	}
	if final(g1).Key == final(g2).Key || final(g2).Parent.Job.(*graph.CreateDisk).Size != 128<<20 {
		t.Errorf("other tags, same key or size: %s", final(g2).Parent.Job.Describe())
	}
	for _, c := range []struct {
		tags []string
		want string
	}{
		{nil, "label"}, // required, not given
		{[]string{"label=x", "colour=red"}, "-t colour: no field takes this tag"},
	} {
		_, err := compile(c.tags...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("tags %q: %v, want an error naming %s", c.tags, err, c.want)
		}
	}
}
