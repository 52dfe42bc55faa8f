package lang

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"vmb.dev/vmb/graph"
)

// state is what lang knows of an image's disks after a step: enough to reject a
// step that names a disk, partition or filesystem that does not exist at that point,
// or sizes that do not fit.
type state struct {
	disks   map[string]*diskState
	order   []string          // disk names in creation order
	outputs map[string]string // clean output name -> the step that writes it
}

type diskState struct {
	size  int64
	label string         // "", msdos or gpt
	parts []partState    // index i is partition number i+1 for primaries; logicals follow
	fs    map[int]string // partition number (0: whole disk) -> filesystem
}

type partState struct {
	number int
	kind   string // primary, extended, logical
	start  int64
	size   int64
}

func newState() *state {
	return &state{disks: map[string]*diskState{}, outputs: map[string]string{}}
}

// clone returns the state an image from this one starts with: the disks, not the
// outputs.
func (s *state) clone() *state {
	c := newState()
	c.order = append(c.order, s.order...)
	for k, d := range s.disks {
		dd := *d
		dd.parts = append([]partState(nil), d.parts...)
		dd.fs = map[int]string{}
		for n, f := range d.fs {
			dd.fs[n] = f
		}
		c.disks[k] = &dd
	}
	return c // outputs are each image's own: an image from another may reuse its names
}

func (s *state) diskList() []graph.Disk {
	var out []graph.Disk
	for _, name := range s.order {
		out = append(out, graph.Disk{Name: name, Size: graph.Size(s.disks[name].size)})
	}
	return out
}

const mib = 1 << 20

func (s *state) disk(name string) (*diskState, error) {
	d, ok := s.disks[name]
	if !ok {
		return nil, fmt.Errorf("no disk %q at this step (disks: %s)", name, s.names())
	}
	return d, nil
}

func (s *state) names() string {
	if len(s.order) == 0 {
		return "none"
	}
	return strings.Join(s.order, ", ")
}

// volume checks that a disk or partition exists; with fs, that it holds a filesystem.
func (s *state) volume(p graph.Place, needFS bool) error {
	d, err := s.disk(p.Disk)
	if err != nil {
		return err
	}
	if p.Partition > 0 {
		found := false
		for _, pt := range d.parts {
			if pt.number == p.Partition {
				found = pt.kind != "extended"
				if !found {
					return fmt.Errorf("%s is an extended partition: it holds partitions, not a filesystem", p.Volume())
				}
			}
		}
		if !found {
			return fmt.Errorf("no partition %d on disk %q at this step (it has %d)", p.Partition, p.Disk, len(d.parts))
		}
	}
	if needFS && d.fs[p.Partition] == "" {
		return fmt.Errorf("%s has no filesystem at this step: format it first", p.Volume())
	}
	return nil
}

// output checks an output name and writes it clean ("out//a" is "out/a"); by is
// the step that writes it.
func (s *state) output(dest *string, by string) error {
	clean := path.Clean(*dest)
	if *dest == "" || path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
		return fmt.Errorf("dest %q must be a relative path inside the output directory", *dest)
	}
	if earlier, ok := s.outputs[clean]; ok {
		return fmt.Errorf("dest %q is written by an earlier step of this image: %s", *dest, earlier)
	}
	s.outputs[clean] = by
	*dest = clean
	return nil
}

// apply checks job against the state and applies its effect. by names the step
// (with its position) for later errors that involve it.
func (s *state) apply(job graph.Job, by string) error {
	uses := job.Uses()
	for _, d := range uses.Disks {
		if _, err := s.disk(d); err != nil {
			return err
		}
	}
	for _, p := range append(uses.Reads, uses.Writes...) {
		if err := s.volume(p, true); err != nil {
			return err
		}
	}
	if uses.Output != nil {
		if err := s.output(uses.Output, by); err != nil {
			return err
		}
	}
	// What jobs do to the disks' layout, and rules of their own.
	switch j := job.(type) {
	case *graph.CreateDisk:
		if _, ok := s.disks[j.Disk]; ok {
			return fmt.Errorf("disk %q exists already", j.Disk)
		}
		if j.Size < mib {
			return fmt.Errorf("disk %q: size %d is less than 1MiB", j.Disk, j.Size)
		}
		s.disks[j.Disk] = &diskState{size: int64(j.Size), fs: map[int]string{}}
		s.order = append(s.order, j.Disk)
	case *graph.ResizeDisk:
		d := s.disks[j.Disk]
		if end := d.end(); int64(j.Size) < end {
			return fmt.Errorf("size %s does not fit disk %q's partitions, which end at %s", graph.FormatSize(int64(j.Size)), j.Disk, graph.FormatSize(end))
		}
		d.size = int64(j.Size)
	case *graph.Label:
		d := s.disks[j.Disk]
		d.label, d.parts, d.fs = j.Type, nil, map[int]string{}
	case *graph.Partition:
		return s.disks[j.Disk].partition(j)
	case *graph.Format:
		if err := s.volume(j.Place, false); err != nil {
			return err
		}
		if j.Place.Path != "" {
			return fmt.Errorf("place %q: format takes a disk or a partition, not a path", j.Place)
		}
		d := s.disks[j.Place.Disk]
		if j.Place.Partition == 0 && d.label != "" {
			return fmt.Errorf("disk %q has a %s label: format one of its partitions (%s:1)", j.Place.Disk, d.label, j.Place.Disk)
		}
		d.fs[j.Place.Partition] = j.FS
	case *graph.Remove:
		if j.Path.Path == "/" {
			return fmt.Errorf("remove %s: cannot remove a filesystem's root", j.Path)
		}
	}
	return nil
}

// end returns where the last partition ends (1 MiB for an unpartitioned disk's label).
func (d *diskState) end() int64 {
	var end int64
	for _, p := range d.parts {
		end = max(end, p.start+p.size)
	}
	if d.label == "gpt" && end > 0 {
		end += mib // the backup GPT
	}
	return end
}

// partition lays out new partitions after the existing ones, 1 MiB aligned, as
// sfdisk does, and checks that they fit.
func (d *diskState) partition(j *graph.Partition) error {
	if d.label == "" {
		return fmt.Errorf("disk %q has no partition table at this step: label it first", j.Disk)
	}
	usable := d.size
	if d.label == "gpt" {
		usable -= mib // backup GPT
	}
	next := int64(mib) // first usable, aligned
	ext := -1          // index of the extended partition in d.parts
	primaries, logicals := 0, 0
	for i := range d.parts {
		p := &d.parts[i]
		switch p.kind {
		case "extended":
			ext = i
			primaries++
		case "logical":
			logicals++
		default:
			primaries++
		}
		if p.kind != "logical" {
			next = max(next, p.start+p.size)
		}
	}
	extNext := int64(0)
	if ext >= 0 {
		extNext = d.parts[ext].start + mib
		for _, p := range d.parts {
			if p.kind == "logical" {
				extNext = max(extNext, p.start+p.size+mib)
			}
		}
	}
	for k, spec := range j.Partitions {
		where := fmt.Sprintf("partition %d", k+1)
		if d.label == "gpt" && spec.Type != "primary" {
			return fmt.Errorf("%s: type %s is for msdos labels; gpt partitions are all primary", where, spec.Type)
		}
		if err := canonicalType(d.label, &j.Partitions[k]); err != nil {
			return fmt.Errorf("%s: %v", where, err)
		}
		if spec.Size == 0 && k != len(j.Partitions)-1 && spec.Type != "extended" {
			return fmt.Errorf("%s: size \"rest\" is only for the last partition", where)
		}
		switch spec.Type {
		case "logical":
			if ext < 0 {
				return fmt.Errorf("%s: a logical partition needs an extended partition before it", where)
			}
			extEnd := d.parts[ext].start + d.parts[ext].size
			size := int64(spec.Size)
			if size == 0 {
				size = extEnd - extNext
			}
			if size <= 0 || extNext+size > extEnd {
				return fmt.Errorf("%s: %s does not fit in the extended partition (%s left)", where,
					graph.FormatSize(size), graph.FormatSize(max(0, extEnd-extNext)))
			}
			logicals++
			d.parts = append(d.parts, partState{number: 4 + logicals, kind: "logical", start: extNext, size: size})
			extNext += size + mib
		default:
			limit := 128
			if d.label == "msdos" {
				limit = 4
			}
			if primaries == limit {
				return fmt.Errorf("%s: a %s label holds at most %d primary partitions", where, d.label, limit)
			}
			if spec.Type == "extended" && ext >= 0 {
				return fmt.Errorf("%s: a disk holds one extended partition at most", where)
			}
			size := int64(spec.Size)
			if size == 0 {
				size = usable - next
			}
			if size <= 0 || next+size > usable {
				return fmt.Errorf("%s: %s does not fit on disk %q (%s left of %s)", where, graph.FormatSize(size), j.Disk,
					graph.FormatSize(max(0, usable-next)), graph.FormatSize(d.size))
			}
			primaries++
			d.parts = append(d.parts, partState{number: primaries, kind: spec.Type, start: next, size: size})
			if spec.Type == "extended" {
				ext = len(d.parts) - 1
				extNext = next + mib
			}
			next = (next + size + mib - 1) / mib * mib
		}
	}
	sort.Slice(d.parts, func(a, b int) bool { return d.parts[a].number < d.parts[b].number })
	return nil
}

// canonicalType checks a partition's type fields against the label and writes
// them one way, so that one partition type is one key: a gpt partition's guid as
// an upper-case GUID (aliases resolved, Linux data by default), an msdos
// partition's id as lower-case hex without leading zeros (83 by default, 5 for an
// extended partition).
func canonicalType(label string, p *graph.PartitionSpec) error {
	if label == "gpt" {
		if p.ID != "" || p.Bootable {
			return fmt.Errorf("id and bootable are for msdos labels; a gpt partition has a guid")
		}
		g, err := graph.ResolveGUID(p.GUID)
		p.GUID = g
		return err
	}
	if p.GUID != "" || p.Name != "" {
		return fmt.Errorf("name and guid are for gpt labels; an msdos partition has an id")
	}
	switch {
	case p.Type == "extended" && p.ID == "":
		p.ID = "5"
	case p.ID == "":
		p.ID = "83"
	}
	p.ID = strings.TrimLeft(strings.ToLower(p.ID), "0")
	if p.ID == "" {
		return fmt.Errorf("id 0 marks an empty partition slot")
	}
	return nil
}
