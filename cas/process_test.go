package cas

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// The test binary doubles as a writer process for the tests below.
func TestMain(m *testing.M) {
	if mode := os.Getenv("VMB_CAS_TEST_WRITER"); mode != "" {
		if err := writer(mode, os.Args[len(os.Args)-2], os.Args[len(os.Args)-1]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// writer is the body of a writer process: mode, the store directory, and an argument.
func writer(mode, dir, arg string) error {
	s, err := Open(dir)
	if err != nil {
		return err
	}
	switch mode {
	case "put": // store blobs shared with other writers and blobs of its own
		id, _ := strconv.Atoi(arg)
		for i := range 30 {
			seed := uint64(i)
			if i%2 == 1 {
				seed = uint64(1000*id + i)
			}
			r := rand.New(rand.NewPCG(seed, seed))
			if _, err := s.PutBytes(randBytes(r, 1000+r.IntN(200000))); err != nil {
				return err
			}
		}
		return nil
	case "slowput": // stream a blob that never ends, until killed
		_, _, err := s.Put(slowReader{rand.New(rand.NewPCG(1, 1))})
		return err
	case "ingest":
		_, _, err := s.IngestDisk(context.Background(), arg, IngestOptions{Workers: 1})
		return err
	}
	return fmt.Errorf("unknown writer mode %q", mode)
}

// slowReader yields incompressible bytes slowly and never ends.
type slowReader struct{ r *rand.Rand }

func (s slowReader) Read(p []byte) (int, error) {
	time.Sleep(time.Millisecond)
	n := min(len(p), 64<<10)
	for i := range n {
		p[i] = byte(s.r.Uint32())
	}
	return n, nil
}

func startWriter(t *testing.T, mode, dir, arg string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", dir, arg)
	cmd.Env = append(os.Environ(), "VMB_CAS_TEST_WRITER="+mode)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// Several processes writing the same and different blobs into one store at once all
// succeed and leave every blob whole.
func TestConcurrentProcesses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	const procs = 6
	var cmds []*exec.Cmd
	for i := range procs {
		cmds = append(cmds, startWriter(t, "put", dir, strconv.Itoa(i)))
	}
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	// 15 shared blobs and 15 of each writer's own.
	checkStore(t, s, 15+procs*15)
}

// A writer killed in the middle of a write leaves no torn blob: verify finds the
// store sound, the staging file is the only trace, and gc removes it once stale.
func TestKilledWriter(t *testing.T) {
	for _, mode := range []string{"slowput", "ingest"} {
		t.Run(mode, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "cache")
			arg := ""
			var disk []byte
			if mode == "ingest" {
				arg = filepath.Join(t.TempDir(), "disk")
				disk = sparseImage(t, rand.New(rand.NewPCG(30, 31)), arg, 256<<20, 200)
			}
			cmd := startWriter(t, mode, dir, arg)
			// Kill it once it has written something.
			deadline := time.Now().Add(time.Minute)
			for {
				if mode == "slowput" && dirSize(filepath.Join(dir, tmpDir)) > 1<<20 {
					break
				}
				if mode == "ingest" && countFiles(t, filepath.Join(dir, objectsDir)) > 20 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("writer wrote nothing in a minute")
				}
				time.Sleep(10 * time.Millisecond)
			}
			cmd.Process.Kill()
			cmd.Wait()

			clock := &fakeClock{t: time.Now()}
			s, err := Open(dir, WithClock(clock.now))
			if err != nil {
				t.Fatal(err)
			}
			rep, err := s.Verify(t.Context(), false)
			if err != nil || !rep.OK() {
				t.Fatalf("verify after a killed writer: %+v, %v", rep, err)
			}
			clock.add(2 * DefaultGrace)
			if _, err := s.GC(t.Context(), GCOptions{}); err != nil {
				t.Fatal(err)
			}
			checkStore(t, s, 0) // nothing reached the blobs: gc took them and the staging files

			if mode == "ingest" { // the interrupted ingest can be done again
				roundTrip(t, s, arg, disk, IngestOptions{})
			}
		})
	}
}

func dirSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil {
			n += fi.Size()
		}
		return nil
	})
	return n
}
