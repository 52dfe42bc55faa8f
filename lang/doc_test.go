package lang

import (
	"os"
	"strings"
	"testing"

	"cuelang.org/go/cue"

	"vmb.dev/vmb/graph"
)

// TestReference keeps BUILD.md's language reference true: every job kind has a
// row, and the example of every job is the one this package's tests compile.
func TestReference(t *testing.T) {
	doc, err := os.ReadFile("../BUILD.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range graph.Kinds {
		if !strings.Contains(string(doc), "\n| `"+kind+"` |") {
			t.Errorf("BUILD.md has no row for job %s", kind)
		}
	}
	if v := cue.LanguageVersion(); !strings.Contains(string(doc), "`language: version:\n\""+v+"\"`") && !strings.Contains(string(doc), "`language: version: \""+v+"\"`") {
		t.Errorf("BUILD.md does not say that vmb evaluates with CUE language version %s", v)
	}
	src, err := os.ReadFile("../testdata/examples/jobs/jobs.cue")
	if err != nil {
		t.Fatal(err)
	}
	example := string(src[strings.Index(string(src), "images: everything"):])
	if !strings.Contains(string(doc), "```cue\n"+example+"```") {
		t.Error("BUILD.md's example of every job differs from testdata/examples/jobs/jobs.cue")
	}
}
