package solver

import (
	"encoding/json"
	"os"
	"path/filepath"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/internal/atomicfile"
)

// ledgerName is the file in the output directory that records what vmb wrote there.
const ledgerName = ".vmb-outputs.json"

// A ledger records, for each output file vmb wrote, the blob it holds and the size
// and modification time it had then. A solve whose output is already in place (the
// same blob, the file untouched since) does not copy it again: a cached solve of a
// repository with gigabytes of exported images writes nothing. A file changed or
// replaced by hand has another size or time, and is written again.
type ledger struct {
	path    string
	entries map[string]ledgerEntry // by output path
	changed bool
}

type ledgerEntry struct {
	Digest  string `json:"digest"`
	Size    int64  `json:"size"`
	ModTime int64  `json:"mtime_ns"`
}

func openLedger(outDir string) *ledger {
	l := &ledger{path: filepath.Join(outDir, ledgerName), entries: map[string]ledgerEntry{}}
	if b, err := os.ReadFile(l.path); err == nil {
		json.Unmarshal(b, &l.entries) // unreadable: every output is written again
	}
	return l
}

// current says whether path holds blob d as vmb left it.
func (l *ledger) current(path string, d cas.Digest) bool {
	e, ok := l.entries[path]
	if !ok || e.Digest != d.String() {
		return false
	}
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Size() == e.Size && fi.ModTime().UnixNano() == e.ModTime
}

// wrote records that path now holds blob d.
func (l *ledger) wrote(path string, d cas.Digest) {
	fi, err := os.Stat(path)
	if err != nil {
		delete(l.entries, path)
	} else {
		l.entries[path] = ledgerEntry{Digest: d.String(), Size: fi.Size(), ModTime: fi.ModTime().UnixNano()}
	}
	l.changed = true
}

// save writes the ledger atomically, if it changed.
func (l *ledger) save() error {
	if !l.changed {
		return nil
	}
	b, err := json.MarshalIndent(l.entries, "", "\t")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(l.path, b, 0o644)
}
