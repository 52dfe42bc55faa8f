package graph

import (
	"encoding/json"
	"strconv"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"512", 512, true},
		{"64KiB", 64 << 10, true},
		{"512MiB", 512 << 20, true},
		{"2GiB", 2 << 30, true},
		{"1TiB", 1 << 40, true},
		{"8388607TiB", 8388607 << 40, true},
		{"8388608TiB", 0, false}, // overflows int64
		{"100M", 0, false},       // decimal or binary? neither: one grammar
		{"1.5GiB", 0, false},
		{"2 GiB", 0, false},
		{"GiB", 0, false},
		{"", 0, false},
		{"-1", 0, false},
		{"2gib", 0, false},
	} {
		got, err := ParseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestSizeJSON(t *testing.T) {
	var v struct{ A, B Size }
	if err := json.Unmarshal([]byte(`{"A": "1MiB", "B": 4096}`), &v); err != nil {
		t.Fatal(err)
	}
	if v.A != 1<<20 || v.B != 4096 {
		t.Errorf("got %d, %d", v.A, v.B)
	}
	b, _ := json.Marshal(v)
	if string(b) != `{"A":1048576,"B":4096}` {
		t.Errorf("canonical form %s: want plain byte counts", b)
	}
	if err := json.Unmarshal([]byte(`{"A": -1}`), &v); err == nil {
		t.Error("a negative size was accepted")
	}
}

func TestFormatSize(t *testing.T) {
	for in, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 2 << 30: "2.0 GiB"} {
		if got := FormatSize(in); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", in, got, want)
		}
	}
}

// FuzzParseSize: what ParseSize accepts is a non-negative count that prints back.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "512", "64KiB", "2GiB", "9223372036854775807", "8388608TiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
		if m, err := ParseSize(strconv.FormatInt(n, 10)); err != nil || m != n {
			t.Errorf("ParseSize(%q) = %d does not print back: %d, %v", s, n, m, err)
		}
	})
}
