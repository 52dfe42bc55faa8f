package graph

import (
	"encoding/json"
	"testing"
)

func TestParsePlace(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Place
		err  bool
	}{
		{in: "root", want: Place{Disk: "root"}},
		{in: "root:2", want: Place{Disk: "root", Partition: 2}},
		{in: "root:2:/etc/motd", want: Place{Disk: "root", Partition: 2, Path: "/etc/motd"}},
		{in: "data:/", want: Place{Disk: "data", Path: "/"}},
		{in: "Root", err: true},
		{in: "root:0", err: true},
		{in: "root:x", err: true},
		{in: "root:1:etc", err: true},
		{in: "root:1:/a/../b", err: true},
		{in: "", err: true},
	} {
		got, err := ParsePlace(tc.in)
		if (err != nil) != tc.err || (!tc.err && got != tc.want) {
			t.Errorf("ParsePlace(%q) = %+v, %v", tc.in, got, err)
		}
		if !tc.err && got.String() != tc.in {
			t.Errorf("ParsePlace(%q).String() = %q", tc.in, got.String())
		}
	}
}

func TestSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{`"2GiB"`, 2 << 30}, {`"512 MiB"`, 512 << 20}, {`"1.5K"`, 1536}, {`"10MB"`, 10e6}, {`4096`, 4096}, {`"7"`, 7},
	} {
		var z Size
		if err := json.Unmarshal([]byte(tc.in), &z); err != nil || int64(z) != tc.want {
			t.Errorf("Size(%s) = %d, %v; want %d", tc.in, z, err, tc.want)
		}
	}
	for _, bad := range []string{`"lots"`, `-1`, `"1XiB"`, `true`, `"99999999999TiB"`} {
		var z Size
		if err := json.Unmarshal([]byte(bad), &z); err == nil {
			t.Errorf("Size(%s) = %d, want an error", bad, z)
		}
	}
}

// Keys depend on the job, the parent and the inputs, never on metadata.
func TestKeys(t *testing.T) {
	a := NewNode("x", nil, &CreateDisk{Disk: "root", Size: 1 << 20}, nil)
	b := NewNode("x", nil, &CreateDisk{Disk: "root", Size: 1 << 20}, nil)
	b.Name, b.Image, b.Pos = "other", "other", "f.cue:1:1"
	if a.Key != b.Key {
		t.Fatal("metadata changed a key")
	}
	child := NewNode("x", a, &Label{Disk: "root", Type: "gpt"}, nil)
	for name, n := range map[string]*Node{
		"executor": NewNode("y", a, &Label{Disk: "root", Type: "gpt"}, nil),
		"parent":   NewNode("x", nil, &Label{Disk: "root", Type: "gpt"}, nil),
		"param":    NewNode("x", a, &Label{Disk: "root", Type: "msdos"}, nil),
		"input":    NewNode("x", a, &Label{Disk: "root", Type: "gpt"}, []Input{{Name: "src", Digest: "blake3:00"}}),
	} {
		if n.Key == child.Key {
			t.Errorf("changing the %s did not change the key", name)
		}
	}
	var g Graph
	if g.Add(a) != a || g.Add(b) != a || len(g.Nodes) != 1 {
		t.Fatal("Add did not merge nodes with equal keys")
	}
}
