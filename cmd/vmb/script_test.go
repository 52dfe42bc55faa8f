package main

import (
	"context"
	"os"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/vmexec"
	"vmb.dev/vmb/vmexec/vmtest"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"vmb": func() {
			os.Exit(Main(os.Args[1:], &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}))
		},
	})
}

// TestScripts runs the CLI sessions in testdata/script: each is a user story, with
// the files it starts from, the commands and what they must print.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(e *testscript.Env) error {
			e.Setenv("VMB_CACHE", e.WorkDir+"/cache")
			return nil
		},
	})
}

// TestScriptsAppliance runs the sessions of testdata/script/appliance, whose cache
// starts with the build VM's appliance in it (built once per machine, see vmtest).
func TestScriptsAppliance(t *testing.T) {
	shared, app := vmtest.Require(t)
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script/appliance",
		Setup: func(e *testscript.Env) error {
			dir := e.WorkDir + "/cache"
			e.Setenv("VMB_CACHE", dir)
			e.Setenv("VMB_CONFIG", e.WorkDir+"/config")
			store, err := cas.Open(dir)
			if err != nil {
				return err
			}
			return vmexec.CopyAppliance(context.Background(), store, shared, app)
		},
	})
}
