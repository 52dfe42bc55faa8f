package graph

import (
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"
)

// Place is a location on an image's disks, written the same way everywhere:
//
//	root            the disk "root"
//	root:2          its second partition
//	root:2:/etc     the path /etc in the filesystem of partition 2
//	root:/etc       the path /etc in a filesystem made on the whole disk
//
// Partitions are numbered from 1 as the kernel numbers them (logical partitions of an
// msdos label from 5).
type Place struct {
	Disk      string
	Partition int    // 0: the whole disk
	Path      string // "" when the place is a disk or a partition
}

var diskName = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)

// ParsePlace parses the text form of a Place.
func ParsePlace(s string) (Place, error) {
	var p Place
	disk, after, hasMore := strings.Cut(s, ":")
	if !diskName.MatchString(disk) {
		return p, fmt.Errorf("place %q: disk name %q must be lower-case letters, digits, - or _, starting with a letter", s, disk)
	}
	p.Disk = disk
	if !hasMore {
		return p, nil
	}
	if strings.HasPrefix(after, "/") {
		p.Path = after
	} else {
		num, pth, hasPath := strings.Cut(after, ":")
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 || n > 128 {
			return p, fmt.Errorf("place %q: partition %q must be a number from 1 to 128", s, num)
		}
		p.Partition = n
		if hasPath {
			if !strings.HasPrefix(pth, "/") {
				return p, fmt.Errorf("place %q: path %q must be absolute", s, pth)
			}
			p.Path = pth
		}
	}
	if p.Path != "" {
		for _, el := range strings.Split(p.Path[1:], "/") {
			if el == ".." {
				return p, fmt.Errorf("place %q: path must not contain ..", s)
			}
		}
		p.Path = path.Clean(p.Path) // one spelling, one key: "/etc/" is "/etc"
	}
	return p, nil
}

// String returns the text form of p.
func (p Place) String() string {
	s := p.Disk
	if p.Partition > 0 {
		s += ":" + strconv.Itoa(p.Partition)
	}
	if p.Path != "" {
		s += ":" + p.Path
	}
	return s
}

// Volume returns p without its path: the disk or partition that holds it.
func (p Place) Volume() Place { return Place{Disk: p.Disk, Partition: p.Partition} }

func (p Place) MarshalJSON() ([]byte, error) { return json.Marshal(p.String()) }

func (p *Place) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("place: want a string such as \"root:2:/etc\"")
	}
	q, err := ParsePlace(s)
	*p = q
	return err
}
