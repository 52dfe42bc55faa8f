package graph

import (
	"fmt"
	"strings"
)

// Each job kind's name, description and what it touches. Kinds and NewJob derive
// from the table in job.go; lang, the executor, the agent and vmb shell from Uses.

func (*CreateDisk) Kind() string { return "create-disk" }
func (j *CreateDisk) Describe() string {
	return fmt.Sprintf("create-disk %s %s", j.Disk, FormatSize(int64(j.Size)))
}
func (j *CreateDisk) Uses() Uses { return Uses{} } // it makes the disk

func (*ResizeDisk) Kind() string { return "resize-disk" }
func (j *ResizeDisk) Describe() string {
	return fmt.Sprintf("resize-disk %s %s", j.Disk, FormatSize(int64(j.Size)))
}
func (j *ResizeDisk) Uses() Uses { return Uses{Disks: []string{j.Disk}} }

func (*Label) Kind() string       { return "label" }
func (j *Label) Describe() string { return fmt.Sprintf("label %s %s", j.Disk, j.Type) }
func (j *Label) Uses() Uses       { return Uses{Disks: []string{j.Disk}} }

func (*Partition) Kind() string { return "partition" }
func (j *Partition) Describe() string {
	return fmt.Sprintf("partition %s (%d)", j.Disk, len(j.Partitions))
}
func (j *Partition) Uses() Uses { return Uses{Disks: []string{j.Disk}} }

func (*Format) Kind() string       { return "format" }
func (j *Format) Describe() string { return fmt.Sprintf("format %s %s", j.Place, j.FS) }
func (j *Format) Uses() Uses       { return Uses{Disks: []string{j.Place.Disk}} } // a volume with no filesystem yet

func (*Fetch) Kind() string       { return "fetch" }
func (j *Fetch) Describe() string { return fmt.Sprintf("fetch %s -> %s", j.URL, j.Dest) }
func (j *Fetch) Uses() Uses {
	return Uses{Writes: []Place{j.Dest}, Pinned: &Input{Name: "fetch", Digest: j.Digest}, Remote: j.URL}
}

func (*TarIn) Kind() string       { return "tar-in" }
func (j *TarIn) Describe() string { return fmt.Sprintf("tar-in %s -> %s", j.Src, j.Dest) }
func (j *TarIn) Uses() Uses       { return Uses{Writes: []Place{j.Dest}, Src: &j.Src} }

func (*ImageIn) Kind() string       { return "image-in" }
func (j *ImageIn) Describe() string { return fmt.Sprintf("image-in %s -> %s", j.Ref, j.Dest) }
func (j *ImageIn) Uses() Uses {
	source, name, digest := ParseImageRef(j.Ref)
	if source == ImageDockerArchive {
		return Uses{Writes: []Place{j.Dest}, Src: &name} // a local file; the ref is not keyed
	}
	return Uses{Writes: []Place{j.Dest}, Pinned: &Input{Name: "image", Digest: digest}, Remote: j.Ref}
}

func (*TarOut) Kind() string       { return "tar-out" }
func (j *TarOut) Describe() string { return fmt.Sprintf("tar-out %s -> %s", j.Src, j.Dest) }
func (j *TarOut) Uses() Uses       { return Uses{Reads: []Place{j.Src}, Output: &j.Dest} }

func (*CopyIn) Kind() string       { return "copy-in" }
func (j *CopyIn) Describe() string { return fmt.Sprintf("copy-in %s -> %s", j.Src, j.Dest) }
func (j *CopyIn) Uses() Uses       { return Uses{Writes: []Place{j.Dest}, Src: &j.Src} }

func (*CopyOut) Kind() string       { return "copy-out" }
func (j *CopyOut) Describe() string { return fmt.Sprintf("copy-out %s -> %s", j.Src, j.Dest) }
func (j *CopyOut) Uses() Uses       { return Uses{Reads: []Place{j.Src}, Output: &j.Dest} }

func (*DD) Kind() string       { return "dd" }
func (j *DD) Describe() string { return fmt.Sprintf("dd %s -> %s@%d", j.Src, j.Disk, j.Offset) }
func (j *DD) Uses() Uses       { return Uses{Disks: []string{j.Disk}, Src: &j.Src} }

func (*Run) Kind() string { return "run" }
func (j *Run) Describe() string {
	if len(j.Command) == 3 && j.Command[0] == "/bin/sh" && j.Command[1] == "-c" {
		return fmt.Sprintf("run %q on %s", short(j.Command[2]), j.Root)
	}
	return fmt.Sprintf("run %q on %s", j.Command, j.Root)
}

// short is the first line of a script, cut at 60 characters: a label fits a line.
func short(script string) string {
	line, rest, _ := strings.Cut(strings.TrimSpace(script), "\n")
	if r := []rune(line); len(r) > 60 {
		return string(r[:59]) + "…"
	} else if rest != "" {
		return line + " …"
	}
	return line
}
func (j *Run) Uses() Uses {
	if j.Mode == "boot" {
		return Uses{Disks: []string{j.Root.Disk}}
	}
	return Uses{Writes: []Place{j.Root}}
}

func (*Hash) Kind() string       { return "hash" }
func (j *Hash) Describe() string { return fmt.Sprintf("hash %s -> %s", j.Disk, j.Dest) }
func (j *Hash) Uses() Uses       { return Uses{Disks: []string{j.Disk}, Output: &j.Dest} }

func (*Diff) Kind() string       { return "diff" }
func (j *Diff) Describe() string { return fmt.Sprintf("diff %s -> %s", j.Place, j.Dest) }
func (j *Diff) Uses() Uses       { return Uses{Reads: []Place{j.Place}, Output: &j.Dest} }

func (*Remove) Kind() string       { return "remove" }
func (j *Remove) Describe() string { return fmt.Sprintf("remove %s", j.Path) }
func (j *Remove) Uses() Uses       { return Uses{Writes: []Place{j.Path}} }

func (*Export) Kind() string { return "export" }
func (j *Export) Describe() string {
	return fmt.Sprintf("export %s %s -> %s", j.volume(), j.Format, j.Dest)
}
func (j *Export) Uses() Uses {
	if j.Partition > 0 { // a filesystem image: the partition must hold one
		return Uses{Reads: []Place{j.volume()}, Output: &j.Dest}
	}
	return Uses{Disks: []string{j.Disk}, Output: &j.Dest}
}
func (j *Export) volume() Place { return Place{Disk: j.Disk, Partition: j.Partition} }
