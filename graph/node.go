package graph

import (
	"fmt"
	"strconv"
	"strings"
)

// Node is one job of the build DAG. Its key is derived from its parent's key, its
// job's parameters, its inputs and the executor; the rest is metadata.
type Node struct {
	Key      Key
	Job      Job
	Parent   *Node // the image state the job starts from; nil: nothing (empty image)
	Inputs   []Input
	Executor string
	Preimage []byte

	// Metadata, never key material: where the node was first defined.
	Image string // image name
	Step  int    // index in the image's steps; -1 for a disk the image declares
	Name  string // the step's name, if it has one
	Pos   string // file:line:col of the step
}

// NewNode makes a node and computes its key.
func NewNode(executor string, parent *Node, job Job, inputs []Input) *Node {
	n := &Node{Job: job, Parent: parent, Inputs: inputs, Executor: executor}
	var pk *Key
	if parent != nil {
		pk = &parent.Key
	}
	n.Preimage = Preimage(executor, pk, job, inputs)
	n.Key = HashPreimage(n.Preimage)
	return n
}

// Label is a short human description: "hello[3] format root:1 ext4", naming the
// image and step that first defined the node.
func (n *Node) Label() string { return label(n.Image, n.Step, n.Name, n.Job) }

// label names a step by its name, when it has one, and what its job does
// otherwise: "debian[6] install the kernel (run)", "hello[3] format root:1 ext4".
func label(image string, step int, name string, j Job) string {
	s := fmt.Sprint(step)
	if step < 0 {
		s = "disk"
	}
	if name != "" {
		return fmt.Sprintf("%s[%s] %s (%s)", image, s, name, j.Kind())
	}
	return fmt.Sprintf("%s[%s] %s", image, s, j.Describe())
}

// Image is a compiled image: the chain of nodes that builds it.
type Image struct {
	Name  string
	From  string // the image it starts from, or ""
	Disks []Disk // its disks at the end, in the order they were created
	Steps []Step // its own nodes, in order (the base's are reached through Parent)
	Pos   string
}

// Step is a node as one image reaches it. The node may be shared with other images
// (its own metadata says where it was first defined); the rest is this image's.
type Step struct {
	Node  *Node
	Index int    // index in the image's steps; -1 for a disk the image declares
	Name  string // the step's name, if it has one
	Pos   string // file:line:col of the step
}

// Label is a short human description of the step: "hello[3] format root:1 ext4".
func (s Step) Label(image string) string { return label(image, s.Index, s.Name, s.Node.Job) }

// Final returns the node whose result is the image, or nil for an empty image.
func (im *Image) Final() *Node {
	if len(im.Steps) == 0 {
		return nil
	}
	return im.Steps[len(im.Steps)-1].Node
}

// StepCount returns how many of the image's steps are jobs of its steps list (the
// create-disk nodes of its declared disks are not counted).
func (im *Image) StepCount() int {
	n := 0
	for _, s := range im.Steps {
		if s.Index >= 0 {
			n++
		}
	}
	return n
}

// Find returns a step of the image: by its index in the steps list ("3"), by its
// name, or the create-disk of a declared disk ("disks.root"); "" is the last step.
func (im *Image) Find(step string) (Step, error) {
	if step == "" {
		if len(im.Steps) == 0 {
			return Step{}, fmt.Errorf("image %q has no steps", im.Name)
		}
		return im.Steps[len(im.Steps)-1], nil
	}
	i, err := strconv.Atoi(step)
	disk, isDisk := strings.CutPrefix(step, "disks.")
	for _, s := range im.Steps {
		switch {
		case err == nil && s.Index == i,
			err != nil && !isDisk && s.Name == step,
			isDisk && s.Index < 0 && s.Node.Job.(*CreateDisk).Disk == disk:
			return s, nil
		}
	}
	return Step{}, fmt.Errorf("image %q has no step %q (steps 0 to %d, a step's name, or disks.NAME)", im.Name, step, im.StepCount()-1)
}

// Disk is a disk of an image.
type Disk struct {
	Name string
	Size Size
}

// Graph is a compiled build: its images and their nodes, shared where keys agree.
type Graph struct {
	Dir    string   // the build repository, absolute: local sources (Src) are relative to it; not key material
	Images []*Image // sorted by name
	Nodes  []*Node  // every distinct node, parents before children
	byKey  map[Key]*Node
}

// Add adds n to the graph and returns the node with its key: n, or the node that
// was there, which then stands for both. Parents must be added first.
func (g *Graph) Add(n *Node) *Node {
	if g.byKey == nil {
		g.byKey = make(map[Key]*Node)
	}
	if old, ok := g.byKey[n.Key]; ok {
		return old
	}
	g.byKey[n.Key] = n
	g.Nodes = append(g.Nodes, n)
	return n
}

// Node returns the node with key k.
func (g *Graph) Node(k Key) (*Node, bool) {
	n, ok := g.byKey[k]
	return n, ok
}

// FindKey returns the node whose key is, or begins with, the hex digits prefix (at
// least 6 of them, and matching one node only).
func (g *Graph) FindKey(prefix string) (*Node, error) {
	if len(prefix) < 6 {
		return nil, fmt.Errorf("key prefix %q: want at least 6 hex digits", prefix)
	}
	var found *Node
	for _, n := range g.Nodes {
		if strings.HasPrefix(n.Key.String(), strings.ToLower(prefix)) {
			if found != nil {
				return nil, fmt.Errorf("key prefix %q names more than one node", prefix)
			}
			found = n
		}
	}
	if found == nil {
		return nil, fmt.Errorf("no node has a key beginning %q", prefix)
	}
	return found, nil
}

// Image returns the image called name.
func (g *Graph) Image(name string) (*Image, bool) {
	for _, im := range g.Images {
		if im.Name == name {
			return im, true
		}
	}
	return nil, false
}

// Chain returns the nodes that build n, from the first to n itself.
func Chain(n *Node) []*Node {
	var c []*Node
	for ; n != nil; n = n.Parent {
		c = append(c, n)
	}
	for i, j := 0, len(c)-1; i < j; i, j = i+1, j-1 {
		c[i], c[j] = c[j], c[i]
	}
	return c
}
