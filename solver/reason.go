package solver

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"lukechampine.com/blake3"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
)

// The solver remembers, per image, the preimages of its nodes at the last successful
// build, so that a miss can say what changed: "params changed", "input src
// changed", "an earlier step changed", "the executor (appliance) changed". They
// are explanations, never key material. Each is a cas ref, last/<hash of the
// repository's directory and the image's name>, naming the preimages (a blob) and
// the records of the build's final node and of the nodes with outputs: a ref is a
// gc root, so the last build of every image survives any budget, and a no-op solve
// after gc still runs nothing.

type lastBuild struct {
	Image     string   `json:"image"`
	Preimages []string `json:"preimages"` // of the image's chain, in order
}

func lastRef(g *graph.Graph, image string) string {
	// The image name alone could collide between repositories; the root key (the
	// image's first node, which has no parent) would change with every edit, and the
	// executor with every appliance. The repository's directory is local to the
	// machine, as these explanations are.
	h := blake3.Sum256([]byte(g.Dir + "\x00" + image))
	return fmt.Sprintf("last/%x", h[:16])
}

// lastBuilds loads the last builds of the named images (all if none).
func (s *Solver) lastBuilds(g *graph.Graph, images []string) map[string]*lastBuild {
	out := map[string]*lastBuild{}
	for _, im := range g.Images {
		if len(images) > 0 && !slices.Contains(images, im.Name) {
			continue
		}
		ref, err := s.store.Ref(lastRef(g, im.Name))
		if err != nil {
			continue
		}
		o, ok := ref.Output("preimages")
		if !ok {
			continue
		}
		b, err := s.store.Get(o.Digest)
		if err != nil {
			continue
		}
		var lb lastBuild
		if json.Unmarshal(b, &lb) == nil && lb.Image == im.Name {
			out[im.Name] = &lb
		}
	}
	return out
}

func (s *Solver) saveLastBuilds(g *graph.Graph, images []string) {
	for _, im := range g.Images {
		if len(images) > 0 && !slices.Contains(images, im.Name) {
			continue
		}
		lb := lastBuild{Image: im.Name}
		ref := &cas.Ref{Actions: []cas.ActionID{cas.ActionID(im.Final().Key)}}
		for _, n := range graph.Chain(im.Final()) {
			lb.Preimages = append(lb.Preimages, string(n.Preimage))
			if graph.Output(n.Job) != "" && n != im.Final() {
				ref.Actions = append(ref.Actions, cas.ActionID(n.Key))
			}
		}
		b, _ := json.Marshal(lb)
		d, err := s.store.PutBytes(b)
		if err != nil {
			continue // an explanation lost is not worth failing a build for
		}
		ref.Outputs = []cas.Output{{Name: "preimages", Kind: cas.KindBlob, Digest: d}}
		s.store.SetRef(lastRef(g, im.Name), ref) // writes nothing when it is unchanged
	}
}

// reason explains why n is not cached, against the last build of its image.
func (s *Solver) reason(n *graph.Node, last map[string]*lastBuild) string {
	if s.opt.NoCache {
		return "--no-cache"
	}
	lb := last[n.Image]
	if lb == nil {
		return "not in the cache (no earlier build of " + n.Image + " on this machine)"
	}
	idx := len(graph.Chain(n)) - 1
	if idx >= len(lb.Preimages) {
		return "new step"
	}
	return diffPreimage(lb.Preimages[idx], string(n.Preimage))
}

// diffPreimage names what differs between two preimages of the same step.
func diffPreimage(old, cur string) string {
	if old == cur {
		return "not in the cache (removed by gc, or built elsewhere)"
	}
	field := func(p, prefix string) []string {
		var out []string
		for _, l := range strings.Split(p, "\n") {
			if strings.HasPrefix(l, prefix) {
				out = append(out, l)
			}
		}
		return out
	}
	var changes []string
	if strings.Join(field(old, "op "), "") != strings.Join(field(cur, "op "), "") {
		return "the step is a different job"
	}
	if strings.Join(field(old, "executor "), "") != strings.Join(field(cur, "executor "), "") {
		changes = append(changes, "the executor (appliance) changed")
	}
	// One "param path=value" line a parameter (graph.Preimage): name the lines
	// that differ.
	oldP, curP := field(old, "param "), field(cur, "param ")
	if !slices.Equal(oldP, curP) {
		only := func(a, b []string) string {
			var out []string
			for _, l := range a {
				if !slices.Contains(b, l) {
					out = append(out, strings.TrimPrefix(l, "param "))
				}
			}
			return strings.Join(out, ", ")
		}
		changes = append(changes, fmt.Sprintf("params changed: %s (was %s)", only(curP, oldP), only(oldP, curP)))
	}
	oldIn, curIn := field(old, "input "), field(cur, "input ")
	for _, l := range curIn {
		if !slices.Contains(oldIn, l) {
			name := strings.Fields(l)[1]
			// The parameter of the same name says where the input comes from:
			// src="files/hello.txt".
			for _, pl := range curP {
				if v, ok := strings.CutPrefix(pl, "param "+name+"="); ok {
					name += " " + v
				}
			}
			changes = append(changes, "input "+name+" changed")
		}
	}
	if len(changes) == 0 && strings.Join(field(old, "parent "), "") != strings.Join(field(cur, "parent "), "") {
		changes = append(changes, "an earlier step changed")
	}
	if len(changes) == 0 {
		return "changed"
	}
	return strings.Join(changes, "; ")
}
