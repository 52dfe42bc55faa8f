package vmexec

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// flatten writes the filesystem of an image, its layers applied bottom first, as
// one tar stream: whiteouts (.wh.NAME) remove what lower layers have, an opaque
// marker (.wh..wh..opq) hides a directory's lower contents, an upper entry
// replaces a lower one. layers opens each layer's uncompressed tar, bottom first;
// spool is a directory for temporary files.
//
// It does what go-containerregistry's mutate.Extract does, with two passes
// instead of one so that it can avoid that function's known fault
// (go-containerregistry#2002): Extract walks the layers top first, so a hard link
// of a lower layer whose target an upper layer replaced comes out linked to the
// upper file, and one whose target an upper layer removed comes out linked to
// nothing (tar fails). Here the first pass, top first, decides which entry of
// which layer survives; the second writes the survivors bottom first, and a hard
// link whose target (in its own layer, or the nearest lower one that has it) did
// not survive becomes a file of its own with that target's metadata and content.
// Several links to one such target stay linked to each other.
func flatten(w io.Writer, layers []func() (io.ReadCloser, error), spool string) error {
	type entry struct{ layer, ord int }
	keep := map[entry]bool{}        // the surviving entries
	survivor := map[string]*entry{} // by name
	present := []map[string]int{}   // per layer: name -> ordinal of its last entry
	links := map[entry]string{}     // surviving hard links: entry -> target name
	hidden := map[string]bool{}     // names an upper layer decided: true if it hides the subtree
	opaque := map[string]bool{}     // directories an upper layer made opaque
	for i := len(layers) - 1; i >= 0; i-- {
		var names []*tar.Header
		err := readLayer(layers[i], func(h *tar.Header, _ io.Reader) error {
			names = append(names, h)
			return nil
		})
		if err != nil {
			return fmt.Errorf("layer %d: %w", i+1, err)
		}
		last := map[string]int{}
		for ord, h := range names {
			last[h.Name] = ord // tar semantics: the last of two entries of a name wins
		}
		layerOpaque := map[string]bool{}
		pres := map[string]int{}
		for ord, h := range names {
			if last[h.Name] != ord {
				continue
			}
			dir, base := path.Split(h.Name)
			dir = path.Clean("/" + dir)[1:]
			if dir == "" {
				dir = "."
			}
			if base == ".wh..wh..opq" {
				layerOpaque[dir] = true
				continue
			}
			name, tombstone := h.Name, false
			if b, ok := strings.CutPrefix(base, ".wh."); ok {
				name, tombstone = path.Join(dir, b), true
			} else {
				pres[name] = ord
			}
			if _, decided := hidden[name]; decided && !tombstone {
				continue
			}
			if under(hidden, name) || under(opaque, name) {
				continue
			}
			hidden[name] = tombstone || h.Typeflag != tar.TypeDir
			if tombstone {
				continue
			}
			id := entry{i, ord}
			keep[id], survivor[name] = true, &id
			if h.Typeflag == tar.TypeLink {
				links[id] = h.Linkname
			}
		}
		for d := range layerOpaque {
			opaque[d] = true
		}
		present = append([]map[string]int{pres}, present...)
	}

	// A link whose target is not the entry it was made to: materialize it.
	broken := map[entry]entry{} // link -> the target entry it had
	need := map[entry]bool{}
	for id, target := range links {
		for j := id.layer; j >= 0; j-- {
			if ord, ok := present[j][target]; ok {
				if t, s := (entry{j, ord}), survivor[target]; s == nil || *s != t {
					broken[id], need[t] = t, true
				}
				break
			}
		}
	}

	tw := tar.NewWriter(w)
	type spooled struct {
		h    *tar.Header
		file string
	}
	spools := map[entry]spooled{}
	defer func() {
		for _, s := range spools {
			os.Remove(s.file)
		}
	}()
	made := map[entry]string{} // a materialized target -> the name it was written as
	for i := range layers {
		ord := -1
		err := readLayer(layers[i], func(h *tar.Header, r io.Reader) error {
			ord++
			id := entry{i, ord}
			if need[id] {
				f, err := os.CreateTemp(spool, "link-target-")
				if err != nil {
					return err
				}
				_, err = io.Copy(f, r)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
				spools[id] = spooled{h: h, file: f.Name()}
				if err != nil {
					return err
				}
				if keep[id] {
					return writeFrom(tw, h, f.Name())
				}
			}
			if !keep[id] {
				return nil
			}
			t, isBroken := broken[id]
			if !isBroken {
				h.Format = tar.FormatPAX
				if err := tw.WriteHeader(h); err != nil {
					return err
				}
				_, err := io.Copy(tw, r)
				return err
			}
			if first, ok := made[t]; ok {
				return tw.WriteHeader(&tar.Header{Name: h.Name, Typeflag: tar.TypeLink, Linkname: first, ModTime: h.ModTime, Format: tar.FormatPAX})
			}
			s, ok := spools[t]
			if !ok {
				return fmt.Errorf("%s: hard link to %s, which its layer does not have before it", h.Name, h.Linkname)
			}
			th := *s.h
			th.Name = h.Name
			made[t] = h.Name
			return writeFrom(tw, &th, s.file)
		})
		if err != nil {
			return fmt.Errorf("layer %d: %w", i+1, err)
		}
	}
	return tw.Close()
}

// under says whether a strict parent of name is true in set.
func under(set map[string]bool, name string) bool {
	for d := path.Dir(name); ; d = path.Dir(d) {
		if set[d] {
			return true
		}
		if d == "." {
			return false
		}
	}
}

// writeFrom writes header h and the content of file p.
func writeFrom(tw *tar.Writer, h *tar.Header, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	h.Format = tar.FormatPAX
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}

// readLayer calls fn with each entry of a layer, its names made clean and
// relative ("./etc/" and "/etc" are "etc"; the root is "."), and with a reader
// of its content.
func readLayer(open func() (io.ReadCloser, error), fn func(*tar.Header, io.Reader) error) error {
	rc, err := open()
	if err != nil {
		return err
	}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			rc.Close()
			return err
		}
		h.Name = cleanName(h.Name)
		if h.Typeflag == tar.TypeLink {
			h.Linkname = cleanName(h.Linkname)
		}
		if err := fn(h, tr); err != nil {
			rc.Close()
			return err
		}
	}
	return rc.Close()
}

// cleanName makes a layer's entry name relative and clean, so that no name leaves
// the root.
func cleanName(n string) string {
	n = path.Clean("/" + n)[1:]
	if n == "" {
		return "."
	}
	return n
}

// uncompressed returns a tar stream from a layer's bytes: gzip, zstd or plain.
func uncompressed(r io.Reader) (io.Reader, error) {
	br := bufio.NewReader(r)
	magic, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		return gzip.NewReader(br)
	case bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		d, err := zstd.NewReader(br)
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	}
	return br, nil
}
