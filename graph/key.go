package graph

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"lukechampine.com/blake3"
)

// KeyVersion is the first line of every preimage. Changing how keys are formed
// changes it, so that no old key is ever taken for a new one.
const KeyVersion = "vmb key 1"

// Key is the BLAKE3-256 hash of a node's preimage: everything that can change the
// node's result. It is the node's action ID in the cache.
type Key [32]byte

func (k Key) String() string { return hex.EncodeToString(k[:]) }

// Short returns the first 12 hex digits.
func (k Key) Short() string { return k.String()[:12] }

func (k Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

func (k *Key) UnmarshalText(b []byte) error {
	if len(b) != 64 {
		return fmt.Errorf("key %q: want 64 hex digits", b)
	}
	_, err := hex.Decode(k[:], b)
	return err
}

// Input is a digest a node depends on besides its parameters: a local file or
// tree hashed by content, a fetched file's pinned digest.
type Input struct {
	Name   string `json:"name"`   // what the job calls it: "src"
	Digest string `json:"digest"` // "blake3:<hex>" or "sha256:<hex>"
}

// preimage returns the text whose hash is the key of a node with these parts:
//
//	vmb key 1
//	executor <appliance digest and agent protocol>
//	parent <key> | parent none
//	job <kind>
//	params <canonical JSON of the job>
//	input <name> <digest>        one line per input, in the job's order
//
// Names, descriptions and source positions are not in it.
func preimage(executor string, parent *Node, job Job, inputs []Input) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\nexecutor %s\n", KeyVersion, executor)
	if parent != nil {
		fmt.Fprintf(&b, "parent %s\n", parent.Key)
	} else {
		b.WriteString("parent none\n")
	}
	params, err := json.Marshal(job)
	if err != nil {
		panic(fmt.Sprintf("graph: job %T does not encode: %v", job, err)) // our types always do
	}
	fmt.Fprintf(&b, "job %s\nparams %s\n", job.Kind(), params)
	for _, in := range inputs {
		fmt.Fprintf(&b, "input %s %s\n", in.Name, in.Digest)
	}
	return []byte(b.String())
}

func hashPreimage(p []byte) Key { return Key(blake3.Sum256(p)) }
