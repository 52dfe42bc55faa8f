package graph

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"reflect"
	"regexp"
	"strconv"
	"strings"
)

// Job is the typed parameters of one step. Each kind of the vm-builder seed has a
// struct here; lang decodes definitions into them, the executor switches on them.
// Every field is key material unless tagged key:"-": its canonical form is the
// JSON of the struct (Params), so adding a field changes keys only where set.
//
// Adding a job kind means: its struct and methods here and a row in kinds, its
// schema in stdlib, its work in the agent (or on the host, in vmexec), and its row
// in BUILD.md. lang checks it, the executor passes its source and output, and vmb
// shell prepares its place from Uses.
type Job interface {
	Kind() string
	// Describe renders the job in a few words: "format root:1 ext4".
	Describe() string
	// Uses says what of the image and of the host the job touches.
	Uses() Uses
}

// Uses is what a job touches. Pointers point into the job, so that lang can
// write the canonical form of a source or output name back.
type Uses struct {
	// Disks are disks the job works on whole (they must exist).
	Disks []string
	// Reads and Writes are places on a filesystem (which must have been
	// formatted) the job reads or changes. A job that only reads mounts read-only.
	Reads, Writes []Place
	// Src is a local file or tree, relative to the repository, the job reads: it
	// is hashed into the key as the input "src".
	Src *string
	// Pinned is the remote input the job reads, keyed by the digest it is pinned
	// by: a fetch's URL as the input "fetch", an image-in's image as "image". A
	// Pinned without a Digest is a reference not pinned yet, which lang refuses,
	// saying what Remote resolves to now.
	Pinned *Input
	// Remote is the reference Pinned pins: a URL, an image reference.
	Remote string
	// Output is the name of the host output the job writes.
	Output *string
}

// kinds is the one table of job kinds, in the order BUILD.md documents them:
// Kinds and NewJob derive from it.
var kinds = []Job{
	&CreateDisk{}, &ResizeDisk{}, &Label{}, &Partition{}, &Format{}, &Fetch{}, &TarIn{},
	&ImageIn{}, &TarOut{}, &CopyIn{}, &CopyOut{}, &DD{}, &Run{}, &Hash{}, &Diff{}, &Remove{}, &Export{},
}

// Kinds lists every job kind, in the order BUILD.md documents them.
var Kinds = func() []string {
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = k.Kind()
	}
	return names
}()

// NewJob returns a zero job of the given kind, or nil if there is no such kind.
func NewJob(kind string) Job {
	for _, k := range kinds {
		if k.Kind() == kind {
			return reflect.New(reflect.TypeOf(k).Elem()).Interface().(Job)
		}
	}
	return nil
}

// Output returns the name of the host output a job writes, or "".
func Output(j Job) string {
	if o := j.Uses().Output; o != nil {
		return *o
	}
	return ""
}

// CreateDisk adds an empty (sparse, all-zero) disk to the image.
type CreateDisk struct {
	Disk string `json:"disk"`
	Size Size   `json:"size"`
}

// ResizeDisk grows or shrinks a disk; growing adds zeros at the end.
type ResizeDisk struct {
	Disk string `json:"disk"`
	Size Size   `json:"size"`
}

// Label writes an empty partition table.
type Label struct {
	Disk string `json:"disk"`
	Type string `json:"type"` // msdos or gpt
}

// Partition creates partitions on a labelled disk, in order.
type Partition struct {
	Disk       string          `json:"disk"`
	Partitions []PartitionSpec `json:"partitions"`
}

// PartitionSpec is one partition. Size 0 means the rest of the disk (or of the
// extended partition, for a logical one). Once compiled, a gpt partition has a
// GUID and no ID, an msdos one an ID and no GUID or Name.
type PartitionSpec struct {
	Type     string `json:"type"`           // msdos: primary, extended, logical; gpt: primary
	Size     Size   `json:"size"`           // 0: the rest
	Name     string `json:"name,omitempty"` // gpt partition name
	GUID     string `json:"guid,omitempty"` // gpt type GUID, upper case (ResolveGUID)
	ID       string `json:"id,omitempty"`   // msdos type id, lower-case hex without leading zeros (83, ef, 82, 5, c)
	Bootable bool   `json:"bootable,omitempty"`
}

// GUIDAliases names common gpt partition types. It is the only table of them:
// lang resolves an alias before the job is keyed, so the agent sees GUIDs only.
var GUIDAliases = map[string]string{
	"linux":       "0FC63DAF-8483-4772-8E79-3D69D8477DE4", // Linux filesystem data
	"efi":         "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", // EFI system partition
	"swap":        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
	"bios":        "21686148-6449-6E6F-744E-656564454649", // BIOS boot partition (grub): "Hah!IdontNeedEFI"
	"root-x86-64": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", // discoverable partitions: root
	"root-arm64":  "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
}

var guidPattern = regexp.MustCompile(`^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$`)

// ResolveGUID returns the canonical form of a gpt type: an alias's GUID, a GUID in
// upper case, or Linux filesystem data for "".
func ResolveGUID(s string) (string, error) {
	if s == "" {
		s = "linux"
	}
	if g, ok := GUIDAliases[s]; ok {
		return g, nil
	}
	if g := strings.ToUpper(s); guidPattern.MatchString(g) {
		return g, nil
	}
	return "", fmt.Errorf("guid %q: want a GUID (0FC63DAF-8483-4772-8E79-3D69D8477DE4) or linux, efi, swap, bios, root-x86-64, root-arm64", s)
}

// Format makes a filesystem on a partition (or on a whole disk).
type Format struct {
	Place   Place    `json:"place"`
	FS      string   `json:"fs"`
	Label   string   `json:"label,omitempty"`
	Options []string `json:"options,omitempty"` // extra mkfs arguments
}

// Fetch downloads a file on the host, checks it against Digest, and copies it in.
type Fetch struct {
	URL    string   `json:"url"`
	Digest string   `json:"digest"` // "sha256:<hex>" or "blake3:<hex>"; the key uses it, not the URL's bytes
	Dest   Place    `json:"dest"`
	Mode   FileMode `json:"mode,omitempty"`
}

// TarIn extracts a tar archive (a local file, compressed or not) into a directory.
type TarIn struct {
	Src  string `json:"src"` // relative to the repository
	Dest Place  `json:"dest"`
}

// ImageIn puts the filesystem of a container image (its layers applied in
// order, whiteouts and all) into a directory, with owners, modes, xattrs, links
// and device nodes as the image has them. Ref names the image (ParseImageRef); a
// registry or OCI layout image is pinned by the digest of its manifest or index,
// which is key material, not where it is read from; a docker-save archive is a
// local file, keyed by its content as a src is.
type ImageIn struct {
	Ref      string `json:"ref" key:"-"` // where the image is read from: its digest (or content) is keyed
	Platform string `json:"platform"`    // os/arch[/variant], chosen from an index: "linux/amd64"
	Dest     Place  `json:"dest"`
}

// Image sources an ImageIn's ref names.
const (
	ImageRegistry      = "registry"       // host[:port]/repository[:tag]@sha256:<hex>
	ImageOCILayout     = "oci"            // oci:DIR[:tag]@sha256:<hex>, DIR relative to the repository
	ImageDockerArchive = "docker-archive" // docker-archive:FILE, a docker save tarball in the repository
)

// ParseImageRef splits an image-in ref into its source (ImageRegistry,
// ImageOCILayout or ImageDockerArchive), what it names there (a registry
// reference or a path, without the digest) and the digest it is pinned by
// ("sha256:<hex>", or "" if none).
func ParseImageRef(ref string) (source, name, digest string) {
	source, name = ImageRegistry, ref
	if rest, ok := strings.CutPrefix(ref, ImageDockerArchive+":"); ok {
		return ImageDockerArchive, rest, ""
	}
	if rest, ok := strings.CutPrefix(ref, ImageOCILayout+":"); ok {
		source, name = ImageOCILayout, rest
	}
	if i := strings.LastIndex(name, "@"); i >= 0 {
		name, digest = name[:i], name[i+1:]
	}
	return source, name, digest
}

// TarOut archives a directory of the disk into an output file, deterministically.
type TarOut struct {
	Src  Place  `json:"src"`
	Dest string `json:"dest"` // output name, relative to the output directory
}

// CopyIn copies a local file or directory onto the disk, at Dest (a directory
// source becomes the directory Dest, with its tree). Files get NormalMode unless
// Mode says otherwise; owners are Owner, times the build's epoch.
type CopyIn struct {
	Src   string   `json:"src"` // relative to the repository
	Dest  Place    `json:"dest"`
	Mode  FileMode `json:"mode,omitempty"`  // for a single file; default: NormalMode of the source
	Owner string   `json:"owner,omitempty"` // uid:gid; default 0:0
}

// CopyOut copies a file or directory of the disk to an output.
type CopyOut struct {
	Src  Place  `json:"src"`
	Dest string `json:"dest"`
}

// DD writes a local file's bytes at an offset of a disk, e.g. a boot loader.
type DD struct {
	Src    string `json:"src"`
	Disk   string `json:"disk"`
	Offset Size   `json:"offset"`
}

// Run runs a command as the target: in chroot mode inside the build VM with the
// target filesystem as root; in boot mode by booting the target itself.
type Run struct {
	Root    Place             `json:"root"` // the filesystem that is /
	Command Command           `json:"command"`
	Env     map[string]string `json:"env,omitempty"`
	Workdir string            `json:"workdir"`
	Mode    string            `json:"mode"` // chroot or boot
	Network Network           `json:"network"`
	Timeout int               `json:"timeout,omitempty" key:"-"` // seconds; 0: the executor's default. Not keyed: it decides whether the job completes, not what it makes
}

// Network is what a run's network reaches: nothing (false, the default), the
// outside world but not the host (true), or the host's loopback too ("host"). It
// encodes as it is written, so the keys of false and true runs are what they were
// when the field was a bool.
type Network string

const (
	NoNetwork  Network = ""
	NetOutside Network = "outside"
	NetHost    Network = "host"
)

// MarshalJSON writes false, true or "host".
func (n Network) MarshalJSON() ([]byte, error) {
	switch n {
	case NoNetwork:
		return []byte("false"), nil
	case NetOutside:
		return []byte("true"), nil
	case NetHost:
		return []byte(`"host"`), nil
	}
	return nil, fmt.Errorf("network %q: want false, true or \"host\"", string(n))
}

// UnmarshalJSON reads false, true or "host".
func (n *Network) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case "false", "null":
		*n = NoNetwork
	case "true":
		*n = NetOutside
	case `"host"`:
		*n = NetHost
	default:
		return fmt.Errorf("network: want false, true or \"host\", not %s", b)
	}
	return nil
}

// Hash writes the digest of a raw disk to an output.
type Hash struct {
	Disk      string `json:"disk"`
	Algorithm string `json:"algorithm"` // blake3 or sha256
	Dest      string `json:"dest"`
}

// Diff writes a file-level listing of a filesystem (paths, metadata, content
// digests) to an output, to compare two builds.
type Diff struct {
	Place Place  `json:"place"`
	Dest  string `json:"dest"`
}

// Remove deletes a file or directory tree from the disk.
type Remove struct {
	Path Place `json:"path"`
}

// Export converts a disk, or one of its partitions, to an image format,
// deterministically, as an output.
type Export struct {
	Disk      string `json:"disk"`
	Partition int    `json:"partition,omitempty"` // only this partition: a filesystem image, for direct kernel boot
	Format    string `json:"format"`              // raw, qcow2, vmdk, vdi, vhdx
	Dest      string `json:"dest"`
}

// FileMode is a permission in octal, written with four digits ("644" is "0644"),
// so that one mode has one key.
type FileMode string

// UnmarshalJSON reads an octal mode and writes it with four digits.
func (m *FileMode) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("mode: want an octal string such as \"0644\"")
	}
	if s == "" {
		*m = ""
		return nil
	}
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o7777 {
		return fmt.Errorf("mode %q: want an octal mode such as \"0644\"", s)
	}
	*m = FileMode(fmt.Sprintf("%04o", n))
	return nil
}

// NormalMode is the permission a local file or directory has once copied in (and
// in its digest): 0755 for a directory or a file with any execute bit, else 0644,
// as git stores them. A checkout under any umask thus builds the same image with
// the same keys; a copy-in step's mode sets anything else.
func NormalMode(m fs.FileMode) fs.FileMode {
	if m.IsDir() || m&0o111 != 0 {
		return 0o755
	}
	return 0o644
}

// Command is an argv. Written as a string in a definition, it runs under /bin/sh -c.
type Command []string

// UnmarshalJSON accepts an argv or a shell command line.
func (c *Command) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*c = Command{"/bin/sh", "-c", s}
		return nil
	}
	var argv []string
	if err := json.Unmarshal(b, &argv); err != nil || len(argv) == 0 {
		return fmt.Errorf("command: want a string or a non-empty list of strings")
	}
	*c = argv
	return nil
}

// UnmarshalJSON reads a partition whose size may be "rest" (stored as 0).
func (p *PartitionSpec) UnmarshalJSON(b []byte) error {
	type plain PartitionSpec
	var raw struct {
		plain
		Size json.RawMessage `json:"size"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*p = PartitionSpec(raw.plain)
	if string(raw.Size) == `"rest"` {
		p.Size = 0
		return nil
	}
	// 0 is how the canonical form (and so the executor) says "rest".
	return p.Size.UnmarshalJSON(raw.Size)
}
