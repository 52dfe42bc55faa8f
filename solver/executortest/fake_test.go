package executortest_test

import (
	"testing"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/solver/executortest"
)

// The fake the solver's tests count calls on keeps the contract the real executor
// keeps.
func TestConformance(t *testing.T) {
	store, err := cas.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	executortest.Run(t, &executortest.Fake{Store: store}, store, executortest.Options{})
}

// So does the fake that runs chains.
func TestConformanceChain(t *testing.T) {
	store, err := cas.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	executortest.Run(t, &executortest.Fake{Store: store, Chain: true}, store, executortest.Options{})
}
