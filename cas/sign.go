package cas

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// Action records are the trust point of a shared cache: blobs verify themselves by
// their names, but a record says "this key built that", which only its writer can
// vouch for. A cache with a signing key signs the records it pushes; a cache that
// pulls accepts a remote record only when a key it trusts signed it.
//
// What a signature covers is the record's fingerprint, one line of text without a
// newline:
//
//	vmb-record-v1 <action key, 64 hex> <BLAKE3-256 of the canonical record, 64 hex>
//
// The canonical record is the record's JSON as Go's encoding/json writes the
// Result struct with no signatures: compact, fields in the order outputs, log
// (left out when zero), duration (nanoseconds), executor, created (RFC 3339 with
// nanoseconds). A record with a field this vmb does not know is refused: its
// canonical form would not cover that field.
//
// Keys are written as Nix writes its: NAME:BASE64 in a file of one line, where the
// secret key's bytes are ed25519's 64-byte private key and the public key's its 32
// bytes. A signature is {"key": NAME, "sig": BASE64 of the 64-byte signature}.

// Signature is one signature of an action record.
type Signature struct {
	Key string `json:"key"` // the name of the key that signed
	Sig []byte `json:"sig"`
}

// SigningKey is a secret key that signs records.
type SigningKey struct {
	Name string
	key  ed25519.PrivateKey
}

// PublicKey is a key whose signatures a cache trusts.
type PublicKey struct {
	Name string
	key  ed25519.PublicKey
}

var keyName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// GenerateKey makes a new key pair called name and returns the text of the secret
// and public key files.
func GenerateKey(name string) (secret, public []byte, err error) {
	if !keyName.MatchString(name) {
		return nil, nil, fmt.Errorf("key name %q: want letters, digits, '.', '-' and '_'", name)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	enc := base64.StdEncoding.EncodeToString
	return []byte(name + ":" + enc(priv) + "\n"), []byte(name + ":" + enc(pub) + "\n"), nil
}

func parseKeyFile(path string, size int) (string, []byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", nil, err
	}
	name, b64, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
	if !ok || !keyName.MatchString(name) {
		return "", nil, fmt.Errorf("key file %s: want NAME:BASE64", path)
	}
	k, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(k) != size {
		return "", nil, fmt.Errorf("key file %s: want %d bytes in base64", path, size)
	}
	return name, k, nil
}

// ReadSigningKey reads a secret key file that GenerateKey wrote.
func ReadSigningKey(path string) (*SigningKey, error) {
	name, k, err := parseKeyFile(path, ed25519.PrivateKeySize)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	return &SigningKey{Name: name, key: ed25519.PrivateKey(k)}, nil
}

// ReadPublicKey reads a public key file that GenerateKey wrote.
func ReadPublicKey(path string) (*PublicKey, error) {
	name, k, err := parseKeyFile(path, ed25519.PublicKeySize)
	if err != nil {
		return nil, fmt.Errorf("trusted key: %w", err)
	}
	return &PublicKey{Name: name, key: ed25519.PublicKey(k)}, nil
}

// Fingerprint returns the text a signature of record r for action a covers.
func Fingerprint(a ActionID, r *Result) ([]byte, error) {
	c := *r
	c.Signatures = nil
	b, err := json.Marshal(&c)
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, "vmb-record-v1 %s %s", a, Sum(b)), nil
}

// sign returns record b for action a with k's signature, replacing an older one
// of k's.
func (k *SigningKey) sign(a ActionID, b []byte) ([]byte, error) {
	r, err := decodeStrict(b)
	if err != nil {
		return nil, err
	}
	fp, err := Fingerprint(a, r)
	if err != nil {
		return nil, err
	}
	sigs := []Signature{{Key: k.Name, Sig: ed25519.Sign(k.key, fp)}}
	for _, s := range r.Signatures {
		if s.Key != k.Name {
			sigs = append(sigs, s)
		}
	}
	r.Signatures = sigs
	out, err := json.MarshalIndent(r, "", "\t")
	return append(out, '\n'), err
}

// ErrUntrusted is returned (wrapped) for a remote record that no trusted key
// signed: it is never used.
var ErrUntrusted = errors.New("not signed by a trusted key")

// Trust says which remote records a cache accepts.
type Trust struct {
	Keys []*PublicKey
	// Unsigned accepts records without checking signatures: for a remote only
	// the user writes to.
	Unsigned bool
}

// check decodes record b of action a and checks that a trusted key signed it.
func (t *Trust) check(a ActionID, b []byte) (*Result, error) {
	r, err := decodeStrict(b)
	if err != nil {
		return nil, fmt.Errorf("action record %s: %w", a, err)
	}
	if t.Unsigned {
		return r, nil
	}
	if len(t.Keys) == 0 {
		return nil, fmt.Errorf("action record %s: %w: no key is trusted (give --trust KEYFILE)", a, ErrUntrusted)
	}
	if len(r.Signatures) == 0 {
		return nil, fmt.Errorf("action record %s is unsigned: %w", a, ErrUntrusted)
	}
	fp, err := Fingerprint(a, r)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range r.Signatures {
		names = append(names, s.Key)
		for _, k := range t.Keys {
			if k.Name == s.Key && ed25519.Verify(k.key, fp, s.Sig) {
				return r, nil
			}
		}
	}
	return nil, fmt.Errorf("action record %s: signatures by %s: %w (or the signature does not match the record)",
		a, strings.Join(names, ", "), ErrUntrusted)
}

// decodeStrict decodes a record, refusing fields this vmb does not know.
func decodeStrict(b []byte) (*Result, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var r Result
	if err := dec.Decode(&r); err != nil {
		return nil, err
	}
	return &r, checkKinds(r.Outputs)
}
