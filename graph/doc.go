// Package graph holds the build DAG: nodes, their typed jobs (one struct per kind,
// plain data with JSON tags, for the executor to map to the build VM's protocol),
// places and sizes, and the key of every node, derived from a canonical text
// preimage (DESIGN.md, "Keys"; Preimage documents its lines). It renders graphs as
// text, JSON and DOT to a writer it is given.
//
// graph is pure: it does no I/O of its own and imports nothing of vmb's. The
// language (lang) produces graphs; the solver walks them; vmb explain prints a
// key's preimage.
package graph
