package graph

import (
	"os/exec"
	"strings"
	"testing"
)

// Every alias must name the type the host's partition tool knows by that name: an
// independent source, since a GUID copied by hand is how "bios" once went wrong.
func TestGUIDAliasesAgainstSfdisk(t *testing.T) {
	out, err := exec.Command("sfdisk", "--label", "gpt", "--list-types").Output()
	if err != nil {
		t.Skipf("sfdisk --list-types: %v (dev/setup installs fdisk)", err)
	}
	types := map[string]string{} // GUID -> sfdisk's name
	for _, l := range strings.Split(string(out), "\n") {
		if guid, name, ok := strings.Cut(strings.TrimSpace(l), " "); ok && guidPattern.MatchString(guid) {
			types[guid] = strings.TrimSpace(name)
		}
	}
	want := map[string]string{
		"linux":       "Linux filesystem",
		"efi":         "EFI System",
		"swap":        "Linux swap",
		"bios":        "BIOS boot",
		"root-x86-64": "Linux root (x86-64)",
		"root-arm64":  "Linux root (ARM-64)",
	}
	for alias, guid := range GUIDAliases {
		if w, ok := want[alias]; !ok {
			t.Errorf("alias %q has no expected sfdisk name in this test", alias)
		} else if got := types[guid]; got != w {
			t.Errorf("alias %q = %s, which sfdisk calls %q, want %q", alias, guid, got, w)
		}
	}
	if len(want) != len(GUIDAliases) {
		t.Errorf("%d aliases expected, %d defined", len(want), len(GUIDAliases))
	}
}
