package lang

import (
	"bytes"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestGraphGolden pins the graph of the hello example: its nodes, parameters, input
// digests and keys. A change here is a change of every user's keys: it must be
// deliberate (go test ./lang -update).
func TestGraphGolden(t *testing.T) {
	g, err := Compile("../testdata/examples/hello", Options{Executor: "golden"})
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []struct {
		file  string
		write func(*bytes.Buffer) error
	}{
		{"testdata/hello.graph.json", func(b *bytes.Buffer) error { return g.WriteJSON(b) }},
		{"testdata/hello.graph.dot", func(b *bytes.Buffer) error { return g.WriteDOT(b) }},
	} {
		var got bytes.Buffer
		if err := format.write(&got); err != nil {
			t.Fatal(err)
		}
		if *update {
			os.WriteFile(format.file, got.Bytes(), 0o644)
			continue
		}
		want, err := os.ReadFile(format.file)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(want), got.String()); diff != "" {
			t.Errorf("%s differs (-want +got):\n%s", format.file, diff)
		}
	}
}
