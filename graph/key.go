package graph

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"lukechampine.com/blake3"
)

// KeyVersion is the first line of every preimage. Changing how keys are formed
// changes it, so that no old key is ever taken for a new one.
const KeyVersion = "vmb key v1"

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

// ParseKey parses the 64 hex digits of a key.
func ParseKey(s string) (Key, error) {
	var k Key
	err := k.UnmarshalText([]byte(s))
	return k, err
}

// ExecutorID is the identity of a build VM as it enters keys: the digest of its
// appliance (kernel, initramfs, agent) and the version of the agent's job protocol.
// Two machines with equal ExecutorIDs produce equal keys for equal definitions.
func ExecutorID(applianceDigest string, protocol int) string {
	return fmt.Sprintf("appliance %s agent/%d", applianceDigest, protocol)
}

// Input is a digest a node depends on besides its parameters: a local file or
// tree hashed by content, a fetched file's pinned digest.
type Input struct {
	Name   string `json:"name"`   // what the job calls it: "src"
	Digest string `json:"digest"` // "blake3:<hex>" or "sha256:<hex>"
}

// Preimage returns the text whose BLAKE3-256 hash is the key of a node with these
// parts, one fact a line:
//
//	vmb key v1
//	executor <appliance digest and agent protocol version>
//	parent <key hex> | parent none
//	op <kind>
//	param <path>=<JSON value>     one line per parameter (Params)
//	input <name> <digest>         one line per input, in the job's order
//
// Parameters are the job's JSON fields flattened to leaves: "param fs=\"ext4\"",
// "param partitions[0].size=268435456", "param env.LANG=\"C\"". Numbers are
// integers; strings are JSON-quoted, so a value never spans lines. Names,
// descriptions and source positions are not in it.
func Preimage(executor string, parent *Key, job Job, inputs []Input) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\nexecutor %s\n", KeyVersion, oneLine(executor))
	if parent != nil {
		fmt.Fprintf(&b, "parent %s\n", parent)
	} else {
		b.WriteString("parent none\n")
	}
	fmt.Fprintf(&b, "op %s\n", job.Kind())
	for _, p := range Params(job) {
		fmt.Fprintf(&b, "param %s\n", p)
	}
	for _, in := range inputs {
		fmt.Fprintf(&b, "input %s %s\n", oneLine(in.Name), oneLine(in.Digest))
	}
	return b.Bytes()
}

// HashPreimage returns the key whose preimage is p.
func HashPreimage(p []byte) Key { return Key(blake3.Sum256(p)) }

func oneLine(s string) string {
	if strings.ContainsAny(s, "\n\r") {
		return strconv.Quote(s)
	}
	return s
}

// Params returns the canonical parameter lines of a job, "path=value": object
// fields in sorted order at every level, list elements in their order. A run's
// timeout is left out: it decides whether the job completes, not what it makes.
// It panics if a job does not encode or holds a float: our types never do.
func Params(job Job) []string {
	raw, err := json.Marshal(job)
	if err != nil {
		panic(fmt.Sprintf("graph: job %T does not encode: %v", job, err))
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		panic(fmt.Sprintf("graph: job %T: %v", job, err))
	}
	for _, f := range notKeyed(job) {
		delete(v.(map[string]any), f)
	}
	var lines []string
	flatten(&lines, "", v)
	return lines
}

// notKeyed returns the JSON names of a job's fields tagged key:"-": parameters that
// cannot change its result, only whether it completes (raising a run's timeout
// must not rebuild it and all after it).
func notKeyed(job Job) []string {
	var names []string
	t := reflect.TypeOf(job).Elem()
	for i := range t.NumField() {
		if f := t.Field(i); f.Tag.Get("key") == "-" {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			names = append(names, name)
		}
	}
	return names
}

var plainField = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

func flatten(lines *[]string, path string, v any) {
	switch v := v.(type) {
	case map[string]any:
		if len(v) == 0 {
			*lines = append(*lines, path+"={}")
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			e := v[k]
			p := path + "[" + strconv.Quote(k) + "]"
			if plainField.MatchString(k) {
				p = path + "." + k
				if path == "" {
					p = k
				}
			}
			flatten(lines, p, e)
		}
	case []any:
		if len(v) == 0 {
			*lines = append(*lines, path+"=[]")
		}
		for i, e := range v {
			flatten(lines, fmt.Sprintf("%s[%d]", path, i), e)
		}
	case json.Number:
		if strings.ContainsAny(string(v), ".eE") {
			panic(fmt.Sprintf("graph: parameter %s is not an integer: %s", path, v))
		}
		*lines = append(*lines, path+"="+string(v))
	default: // string, bool or null
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false) // "a > b", not "a \u003e b"
		enc.Encode(v)
		*lines = append(*lines, path+"="+strings.TrimSuffix(b.String(), "\n"))
	}
}
