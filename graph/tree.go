package graph

import (
	"encoding/hex"
	"fmt"
	"io/fs"
	"strings"

	"lukechampine.com/blake3"
)

// TreeDigest computes the digest of a local file or directory tree, the key
// material of a src input: one line per entry, in lexical path order (as
// filepath.WalkDir visits), of its path relative to the root ("." for the root),
// its type, its NormalMode and its content digest or symlink target. Owners and
// times are not part of it. lang hashes sources with it; the executor hashes what
// it copies into the job with it, so that a source edited between compile and job
// is an error, never a result cached under its old content's key.
type TreeDigest struct{ list strings.Builder }

// File adds a regular file whose content has BLAKE3-256 sum (hex).
func (t *TreeDigest) File(rel string, mode fs.FileMode, sum string) {
	fmt.Fprintf(&t.list, "file %04o %q %s\n", NormalMode(mode), rel, sum)
}

// Dir adds a directory.
func (t *TreeDigest) Dir(rel string, mode fs.FileMode) {
	fmt.Fprintf(&t.list, "dir %04o %q\n", NormalMode(mode|fs.ModeDir), rel)
}

// Symlink adds a symbolic link.
func (t *TreeDigest) Symlink(rel, target string) {
	fmt.Fprintf(&t.list, "symlink %q %q\n", rel, target)
}

// FileDigest is the TreeDigest of a single file: what a src naming a file is keyed
// by, from its mode and the hex BLAKE3-256 of its content.
func FileDigest(mode fs.FileMode, sum string) string {
	var t TreeDigest
	t.File(".", mode, sum)
	return t.Sum()
}

// Sum returns "blake3:<hex>" of the listing.
func (t *TreeDigest) Sum() string {
	sum := blake3.Sum256([]byte(t.list.String()))
	return "blake3:" + hex.EncodeToString(sum[:])
}
