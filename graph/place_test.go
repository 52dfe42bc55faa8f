package graph

import (
	"testing"

	"github.com/google/go-cmp/cmp"
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
		{in: "fs:/", want: Place{Disk: "fs", Path: "/"}},
		{in: "data_1:128:/a b", want: Place{Disk: "data_1", Partition: 128, Path: "/a b"}},
		{in: "root:1:/etc//x/./y/", want: Place{Disk: "root", Partition: 1, Path: "/etc/x/y"}},
		{in: "Root:1", err: true},
		{in: "root:0", err: true},
		{in: "root:129", err: true},
		{in: "root:x", err: true},
		{in: "root:1:etc", err: true},
		{in: "root:1:/etc/../x", err: true},
		{in: "", err: true},
		{in: ":1", err: true},
	} {
		got, err := ParsePlace(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("ParsePlace(%q): error %v, want error: %v", tc.in, err, tc.err)
			continue
		}
		if tc.err {
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("ParsePlace(%q) (-want +got):\n%s", tc.in, diff)
		}
		if again, _ := ParsePlace(got.String()); again != got {
			t.Errorf("ParsePlace(%q).String() = %q does not parse back", tc.in, got.String())
		}
	}
}

// FuzzParsePlace: whatever ParsePlace accepts prints to a text that parses back to it.
func FuzzParsePlace(f *testing.F) {
	for _, s := range []string{"root", "root:2", "root:2:/etc/motd", "fs:/", "a:1:/x/../y", "b:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePlace(s)
		if err != nil {
			return
		}
		q, err := ParsePlace(p.String())
		if err != nil || q != p {
			t.Errorf("%q -> %q -> %v, %v", s, p.String(), q, err)
		}
	})
}
