package fsmap

// File is what a filesystem records of one path, as vmb diff's files level
// compares and prints it. Each filesystem fills the fields it has and leaves the
// others empty: ext has no DOS attributes, FAT no mode, owner or ctime. Values
// are in the form they are printed, because only the filesystem knows their
// precision and zone (a FAT time is local wall time to 2 s, its creation time to
// 10 ms, its access time a date).
type File struct {
	Type   string // file, directory, symlink, char device, block device, fifo, socket
	Size   int64  // bytes of content (a file's; a directory's is not compared)
	Target string // a symlink's
	Device string // "major:minor"
	Mode   string // permission bits, octal: "0644"
	Owner  string // "uid:gid"
	Links  string // hard-link count
	Attrs  string // DOS attributes set, in this order: "read-only hidden system archive"

	// Times: RFC 3339 with the filesystem's precision; without a zone where the
	// filesystem records none (FAT), a date alone where it records no more.
	Mtime, Ctime, Atime, Crtime string

	Xattrs map[string]string // extended attributes by full name
}
