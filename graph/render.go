package graph

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Select returns the nodes that build the named images (all if none), parents
// before children, each once.
func (g *Graph) Select(images ...string) ([]*Node, error) {
	if len(images) == 0 {
		return g.Nodes, nil
	}
	want := map[Key]bool{}
	for _, name := range images {
		im, ok := g.Image(name)
		if !ok {
			return nil, fmt.Errorf("no image %q (images: %s)", name, strings.Join(g.ImageNames(), ", "))
		}
		for _, n := range Chain(im.Final()) {
			want[n.Key] = true
		}
	}
	var out []*Node
	for _, n := range g.Nodes {
		if want[n.Key] {
			out = append(out, n)
		}
	}
	return out, nil
}

// ImageNames returns the names of the graph's images, sorted.
func (g *Graph) ImageNames() []string {
	var names []string
	for _, im := range g.Images {
		names = append(names, im.Name)
	}
	return names
}

// jsonNode is the JSON form of a node.
type jsonNode struct {
	Key    Key     `json:"key"`
	Image  string  `json:"image"`
	Step   int     `json:"step"`
	Name   string  `json:"name,omitempty"`
	Op     string  `json:"op"`
	Params Job     `json:"params"`
	Parent *Key    `json:"parent"`
	Inputs []Input `json:"inputs"`
	Pos    string  `json:"pos,omitempty"`
}

type jsonImage struct {
	Name  string `json:"name"`
	From  string `json:"from,omitempty"`
	Disks []Disk `json:"disks"`
	Final *Key   `json:"final"`
	Steps int    `json:"steps"`
}

// WriteJSON writes the nodes that build the named images (all if none) as JSON.
func (g *Graph) WriteJSON(w io.Writer, images ...string) error {
	nodes, err := g.Select(images...)
	if err != nil {
		return err
	}
	out := struct {
		Images []jsonImage `json:"images"`
		Nodes  []jsonNode  `json:"nodes"`
	}{Images: []jsonImage{}, Nodes: []jsonNode{}}
	for _, im := range g.Images {
		if len(images) > 0 && !slices.Contains(images, im.Name) {
			continue
		}
		ji := jsonImage{Name: im.Name, From: im.From, Disks: im.Disks, Steps: len(im.Nodes)}
		if f := im.Final(); f != nil {
			ji.Final = &f.Key
		}
		out.Images = append(out.Images, ji)
	}
	for _, n := range nodes {
		jn := jsonNode{Key: n.Key, Image: n.Image, Step: n.Step, Name: n.Name, Op: n.Job.Kind(),
			Params: n.Job, Inputs: n.Inputs, Pos: n.Pos}
		if jn.Inputs == nil {
			jn.Inputs = []Input{}
		}
		if n.Parent != nil {
			jn.Parent = &n.Parent.Key
		}
		out.Nodes = append(out.Nodes, jn)
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func (d Disk) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Name string `json:"name"`
		Size int64  `json:"size"`
	}{d.Name, int64(d.Size)})
}

// WriteDOT writes the nodes that build the named images (all if none) for Graphviz.
func (g *Graph) WriteDOT(w io.Writer, images ...string) error {
	nodes, err := g.Select(images...)
	if err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("digraph vmb {\n\trankdir=TB;\n\tnode [shape=box, fontname=\"monospace\"];\n")
	for _, n := range nodes {
		fmt.Fprintf(&b, "\t%q [label=%q];\n", n.Key.Short(), n.Key.Short()+"\n"+n.Label())
		if n.Parent != nil {
			fmt.Fprintf(&b, "\t%q -> %q;\n", n.Parent.Key.Short(), n.Key.Short())
		}
	}
	for _, im := range g.Images {
		if f := im.Final(); f != nil && (len(images) == 0 || slices.Contains(images, im.Name)) {
			fmt.Fprintf(&b, "\t%q [shape=ellipse];\n\t%q -> %q [style=dashed];\n", "image "+im.Name, f.Key.Short(), "image "+im.Name)
		}
	}
	b.WriteString("}\n")
	_, err = io.WriteString(w, b.String())
	return err
}
