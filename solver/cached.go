package solver

import (
	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
)

// Cached returns the result recorded in store for node n: the state its job left
// and the files it wrote. An error wrapping cas.ErrNotFound means n has not been
// built (or its record was removed by gc).
func Cached(store *cas.Store, n *graph.Node) (*Result, error) {
	rec, err := store.GetAction(cas.ActionID(n.Key))
	if err != nil {
		return nil, err
	}
	return fromRecord(rec)
}
