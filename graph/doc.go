// Package graph holds the build DAG: nodes, their operations and parameters, and
// the key of every node, derived from a canonical text preimage (DESIGN.md, "Keys").
//
// graph is pure: it does no I/O and imports nothing of vmb's. The language (lang)
// produces graphs; the solver walks them; vmb explain prints a key's preimage.
package graph
