package diff

import (
	"fmt"
	"io"
	"strings"
)

// WriteText writes the report for people: one line a range, then a summary, then
// the files that differ, filesystem by filesystem.
//
//	0x00100000-0x00101000 (4 KiB) root:2 ext4 inode table: inodes 12-15 (/etc/motd, /etc/hostname)
//	1 range, 4 KiB, 0.01% of 32 MiB differ
//	files (root:2 ext4):
//	  /etc/hostname: mtime 2020-01-01T00:00:00Z -> 2026-12-05T01:02:03Z
func (r *Report) WriteText(w io.Writer) {
	for _, g := range r.Ranges {
		fmt.Fprintf(w, "0x%08x-0x%08x (%s)%s\n", g.Off, g.Off+g.Len, FormatSize(g.Len), describe(g))
	}
	size := max(r.SizeA, r.SizeB)
	if r.SizeA != r.SizeB {
		fmt.Fprintf(w, "sizes differ: A %s, B %s\n", FormatSize(r.SizeA), FormatSize(r.SizeB))
	}
	if r.Identical() {
		fmt.Fprintf(w, "identical (%s)\n", FormatSize(size))
		return
	}
	s := "s"
	if len(r.Ranges) == 1 {
		s = ""
	}
	pct := 0.0
	if size > 0 {
		pct = 100 * float64(r.Bytes) / float64(size)
	}
	fmt.Fprintf(w, "%d range%s, %s, %s of %s differ\n", len(r.Ranges), s, FormatSize(r.Bytes), formatPercent(pct), FormatSize(size))
	writeFiles(w, r.Filesystems)
}

// describe is the text after a range's extent: where it lies and what it holds.
func describe(g Range) string {
	var b strings.Builder
	for _, s := range []string{g.Partition, g.FS} {
		if s != "" {
			b.WriteString(" " + s)
		}
	}
	switch {
	case g.Structure != "":
		b.WriteString(" " + g.Structure)
	case g.FS != "":
		fmt.Fprintf(&b, " at %#x within it", g.FSOff)
	}
	if len(g.Inodes) > 0 {
		word := "inode"
		if len(g.Inodes) > 1 {
			word = "inodes"
		}
		fmt.Fprintf(&b, ": %s %s", word, inodeList(g.Inodes))
	}
	if len(g.Paths) > 0 {
		paths := g.Paths
		more := ""
		if len(paths) > 8 {
			paths, more = paths[:8], fmt.Sprintf(", and %d more", len(g.Paths)-8)
		}
		fmt.Fprintf(&b, " (%s%s)", strings.Join(paths, ", "), more)
	}
	if g.InA != "" {
		fmt.Fprintf(&b, " [in A: %s]", g.InA)
	}
	return b.String()
}

// inodeList writes sorted inode numbers with runs as ranges: "12-15, 20".
func inodeList(inos []uint64) string {
	var parts []string
	for i := 0; i < len(inos); {
		j := i
		for j+1 < len(inos) && inos[j+1] == inos[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, fmt.Sprint(inos[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", inos[i], inos[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}

// formatPercent shows a share with two decimals, and a tiny one as such.
func formatPercent(p float64) string {
	if p > 0 && p < 0.01 {
		return "<0.01%"
	}
	return fmt.Sprintf("%.2f%%", p)
}

// FormatSize writes a byte count in binary units, as exact as it is short:
// "4 KiB", "1.5 MiB", "512 B".
func FormatSize(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, unit := float64(n), ""
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		v, unit = v/1024, u
		if v < 1024 {
			break
		}
	}
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d %s", int64(v), unit)
	}
	return fmt.Sprintf("%.1f %s", v, unit)
}
