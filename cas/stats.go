package cas

import (
	"os"
	"path/filepath"
)

// Stats counts what the store holds.
type Stats struct {
	Dir         string `json:"dir"`
	Objects     int    `json:"objects"`
	ObjectBytes int64  `json:"object_bytes"` // compressed, as stored
	Actions     int    `json:"actions"`
	ActionBytes int64  `json:"action_bytes"`
	Refs        int    `json:"refs"`
	Temps       int    `json:"temps"` // staging files: writes under way, or left by a crash
	TempBytes   int64  `json:"temp_bytes"`
	Quarantined int    `json:"quarantined"`
}

// Stats walks the store and counts its files.
func (s *Store) Stats() (*Stats, error) {
	st := &Stats{Dir: s.dir}
	objs, _, err := s.walk(objectsDir)
	if err != nil {
		return nil, err
	}
	for _, e := range objs {
		st.Objects++
		st.ObjectBytes += e.size
	}
	acts, _, err := s.walk(actionsDir)
	if err != nil {
		return nil, err
	}
	for _, e := range acts {
		st.Actions++
		st.ActionBytes += e.size
	}
	refs, err := s.Refs()
	if err != nil {
		return nil, err
	}
	st.Refs = len(refs)
	tmps, err := s.temps()
	if err != nil {
		return nil, err
	}
	for _, e := range tmps {
		st.Temps++
		st.TempBytes += e.size
	}
	q, _ := os.ReadDir(filepath.Join(s.dir, quarantineDir))
	st.Quarantined = len(q)
	return st, nil
}
