package cas

import (
	"encoding/hex"
	"fmt"
	"hash"

	"lukechampine.com/blake3"
)

// Size is the length in bytes of a Digest.
const Size = 32

// Digest names a blob: the BLAKE3-256 hash of its uncompressed content.
type Digest [Size]byte

// Sum returns the Digest of b.
func Sum(b []byte) Digest { return blake3.Sum256(b) }

// NewHasher returns a BLAKE3-256 hash.Hash whose Sum is a Digest's bytes.
func NewHasher() hash.Hash { return blake3.New(Size, nil) }

// String returns the digest in lower-case hex.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// Short returns the first 12 hex digits, for human-readable output.
func (d Digest) Short() string { return d.String()[:12] }

// IsZero reports whether d is the zero value (no digest).
func (d Digest) IsZero() bool { return d == Digest{} }

// MarshalText encodes d as hex, so digests read naturally in JSON.
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses a hex digest.
func (d *Digest) UnmarshalText(b []byte) error {
	p, err := ParseDigest(string(b))
	if err != nil {
		return err
	}
	*d = p
	return nil
}

// ParseDigest parses the 64 hex digits of a Digest.
func ParseDigest(s string) (Digest, error) {
	var d Digest
	if len(s) != 2*Size {
		return d, fmt.Errorf("digest %q: want %d hex digits, have %d", s, 2*Size, len(s))
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return d, fmt.Errorf("digest %q: %w", s, err)
	}
	return d, nil
}
