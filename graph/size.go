package graph

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"kB", 1e3}, {"KB", 1e3},
	{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1},
}

// ParseSize parses a byte count such as "512", "64KiB", "20GiB" or "1.5G" (single
// letters are binary units).
func ParseSize(s string) (int64, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range sizeUnits {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	if i, err := strconv.ParseInt(num, 10, 64); err == nil && i >= 0 {
		if i > (1<<63-1)/mult {
			return 0, fmt.Errorf("size %q is too large", s)
		}
		return i * mult, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || f*float64(mult) >= 1<<63 {
		return 0, fmt.Errorf("size %q: want a number of bytes with an optional unit (KiB, MiB, GiB, TiB)", s)
	}
	return int64(f * float64(mult)), nil
}

// FormatSize renders n bytes for humans: "0 B", "512 B", "1.5 KiB", "20.0 GiB".
func FormatSize(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, unit := float64(n), ""
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB", "PiB"} {
		v, unit = v/1024, u
		if v < 1024 {
			break
		}
	}
	return fmt.Sprintf("%.1f %s", v, unit)
}

// Size is a byte count. In definitions it is written as ParseSize reads it; in
// canonical form (and so in keys) it is a plain number of bytes.
type Size int64

// UnmarshalJSON accepts a number of bytes or a string ParseSize reads.
func (z *Size) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err := json.Unmarshal(b, &n); err != nil || n < 0 {
			return fmt.Errorf("size %s: want a number of bytes or a string such as \"2GiB\"", b)
		}
		*z = Size(n)
		return nil
	}
	n, err := ParseSize(s)
	*z = Size(n)
	return err
}

// Set makes *Size a flag.Value.
func (z *Size) Set(s string) error {
	n, err := ParseSize(s)
	*z = Size(n)
	return err
}

func (z *Size) String() string {
	if z == nil || *z == 0 {
		return ""
	}
	return FormatSize(int64(*z))
}
