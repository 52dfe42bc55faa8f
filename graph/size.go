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
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}}

// ParseSize parses a byte count. The grammar is one everywhere (definitions and
// flags): decimal digits, optionally followed by an IEC unit, with nothing between:
//
//	512   64KiB   512MiB   20GiB   1TiB
//
// There are no fractions and no decimal units: "1.5GiB" is "1536MiB", and "100M"
// must be written "100MiB" (or "100000000" for decimal megabytes).
func ParseSize(s string) (int64, error) {
	num, mult := s, int64(1)
	for _, u := range sizeUnits {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = n, u.mult
			break
		}
	}
	if num == "" || strings.TrimLeft(num, "0123456789") != "" {
		return 0, fmt.Errorf("size %q: want digits with an optional unit KiB, MiB, GiB or TiB, such as \"512MiB\"", s)
	}
	i, err := strconv.ParseInt(num, 10, 64)
	if err != nil || i > (1<<63-1)/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return i * mult, nil
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
