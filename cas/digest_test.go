package cas

import (
	"encoding/json"
	"testing"
)

func TestDigestText(t *testing.T) {
	d := Sum([]byte("hello"))
	// Known BLAKE3 test vector for "hello".
	const want = "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"
	if d.String() != want {
		t.Fatalf("Sum(hello) = %s, want %s", d, want)
	}
	b, err := json.Marshal(map[string]Digest{"d": d})
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]Digest
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back["d"] != d {
		t.Fatalf("round trip: got %s, want %s", back["d"], d)
	}
	for _, bad := range []string{"", "abc", want[:63] + "g", want + "00"} {
		if _, err := ParseDigest(bad); err == nil {
			t.Errorf("ParseDigest(%q) succeeded, want error", bad)
		}
	}
}
