package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/vmexec/appliance"
	"vmb.dev/vmb/vmexec/proto"
	"vmb.dev/vmb/vmexec/vmtest"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"vmb": func() { os.Exit(Main(os.Args[1:], &env{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv})) },
	})
}

// TestScripts runs the CLI sessions in testdata/script: each is a user story, with
// the files it starts from, the commands and what they must print. $EXAMPLES is the
// repository's testdata/examples.
func TestScripts(t *testing.T) {
	examples, err := filepath.Abs("../../testdata/examples")
	if err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(e *testscript.Env) error {
			e.Setenv("VMB_CACHE", e.WorkDir+"/cache")
			e.Setenv("EXAMPLES", examples)
			e.Setenv("VMB_CONFIG", e.WorkDir+"/config")
			return nil
		},
		// [vm]: this machine can boot the build VM (or $VMB_REQUIRE_VM says it must:
		// then a missing qemu fails the script instead of skipping it).
		Condition: func(cond string) (bool, error) {
			if cond != "vm" {
				return false, errors.New("unknown condition " + cond)
			}
			_, _, err := vmtest.Shared()
			var u *vmtest.Unavailable
			return !errors.As(err, &u) || os.Getenv("VMB_REQUIRE_VM") != "", nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// envout NAME sets $NAME to what the last command printed, trimmed.
			"envout": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 1 {
					ts.Fatalf("usage: envout NAME")
				}
				ts.Setenv(args[0], strings.TrimSpace(ts.ReadFile("stdout")))
			},
			// appliance puts the build VM in $VMB_CACHE (built once per machine, by
			// vmtest) and sets the environment guestfish needs to read disks back.
			"appliance": func(ts *testscript.TestScript, neg bool, args []string) {
				ts.Check(vmtest.SeedDir(ts.Getenv("VMB_CACHE")))
				for _, kv := range vmtest.GuestfishEnv() {
					k, v, _ := strings.Cut(kv, "=")
					ts.Setenv(k, v)
				}
			},
			// fakeappliance KERNEL NAME puts an appliance of fake content (kernel
			// version KERNEL) in $VMB_CACHE as its current one, without building or
			// booting anything; it sets $NAME to its digest and $NAME_KERNEL to the
			// path of its kernel's blob in a cache directory.
			"fakeappliance": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 2 {
					ts.Fatalf("usage: fakeappliance KERNEL NAME")
				}
				s, err := cas.Open(ts.Getenv("VMB_CACHE"))
				ts.Check(err)
				m := appliance.Manifest{KernelVersion: args[0], Protocol: proto.Version}
				a, err := appliance.Put(s, m, []byte("vmlinux "+args[0]), []byte("initramfs "+args[0]))
				ts.Check(err)
				k := a.Kernel.String()
				ts.Setenv(args[1], a.Digest.String())
				ts.Setenv(args[1]+"_KERNEL", "objects/"+k[:2]+"/"+k)
			},
			// appliancedebs gives $VMB_CACHE the Debian packages vmtest built the
			// shared appliance from, and $VMB_AGENT its agent, so that vmb builds the
			// appliance itself, as on first use, without downloading anything (the
			// work directory's layout is the appliance package's: debs/ in its scratch place).
			"appliancedebs": func(ts *testscript.TestScript, neg bool, args []string) {
				s, _, err := vmtest.Shared()
				ts.Check(err)
				src := filepath.Join(cas.ScratchDir(s.Dir(), "appliance-work"), "debs")
				dst := filepath.Join(cas.ScratchDir(ts.Getenv("VMB_CACHE"), "appliance-work"), "debs")
				ts.Check(os.MkdirAll(dst, 0o755))
				debs, _ := filepath.Glob(filepath.Join(src, "*.deb"))
				if len(debs) == 0 {
					ts.Fatalf("no packages in %s", src)
				}
				for _, d := range debs {
					to := filepath.Join(dst, filepath.Base(d))
					if os.Link(d, to) != nil {
						b, err := os.ReadFile(d)
						ts.Check(err)
						ts.Check(os.WriteFile(to, b, 0o644))
					}
				}
				ts.Setenv("VMB_AGENT", filepath.Join(s.Dir(), "vmb-agent"))
			},
		},
	})
}
