package vmexec_test

import (
	"os/exec"
	"strings"
	"testing"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/solver"
	"vmb.dev/vmb/solver/executortest"
	"vmb.dev/vmb/vmexec"
	"vmb.dev/vmb/vmexec/qemu"
	"vmb.dev/vmb/vmexec/vmtest"
)

// The executor runs chains of jobs in one VM.
var _ solver.Chainer = (*vmexec.Executor)(nil)

// The real executor keeps solver.Executor's contract, checked as the solver's fake
// is: it boots the appliance for a format (twice), a failing run and a run that is
// cancelled while qemu runs, which must leave no qemu of its temp directory.
func TestConformance(t *testing.T) {
	store, err := cas.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a := vmtest.Seed(t, store)
	tmp := t.TempDir()
	x := &vmexec.Executor{Store: store, Appliance: a, KVM: qemu.KVMUsable(), TmpDir: tmp}
	t.Cleanup(x.Close)
	executortest.Run(t, x, store, executortest.Options{Processes: func() []string {
		out, _ := exec.Command("pgrep", "-af", "qemu-system.*"+tmp).Output()
		if len(out) == 0 {
			return nil
		}
		return strings.Split(strings.TrimSpace(string(out)), "\n")
	}})
}
