package vmexec_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/vmexec"
	"vmb.dev/vmb/vmexec/proto"
	"vmb.dev/vmb/vmexec/qemu"
	"vmb.dev/vmb/vmexec/vmtest"
)

// chain runs jobs one after the other in a fresh store, as the solver would, and
// returns the final disks.
type chain struct {
	t      *testing.T
	x      *vmexec.Executor
	parent *graph.Node
	disks  map[string]cas.Digest
	steps  []cas.Digest // disk "d" after each job, for TestReproducible
	log    bytes.Buffer
}

// hostBusybox returns the host's static busybox, which tests copy into targets
// to run there, or skips the test without one.
func hostBusybox(t *testing.T) []byte {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skip("no static busybox on the host to run in the target (dev/setup installs busybox-static)")
	}
	return bb
}

func newChain(t *testing.T, repo string) *chain {
	store, err := cas.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a := vmtest.Seed(t, store)
	x := &vmexec.Executor{Store: store, Appliance: a, KVM: qemu.KVMUsable(), RepoDir: repo, TmpDir: t.TempDir(), VerifyWritten: true}
	t.Cleanup(x.Close)
	return &chain{t: t, x: x, disks: map[string]cas.Digest{}}
}

func (c *chain) run(j graph.Job, inputs ...graph.Input) (map[string]cas.Digest, error) {
	n := graph.NewNode(c.x.Identity(), c.parent, j, inputs)
	disks, files, err := c.x.Run(c.t.Context(), n, c.disks, &c.log)
	if err == nil {
		c.parent, c.disks = n, disks
	}
	return files, err
}

func (c *chain) must(j graph.Job) map[string]cas.Digest {
	c.t.Helper()
	files, err := c.run(j)
	if err != nil {
		c.t.Fatalf("%s: %v\n%s", j.Describe(), err, c.log.String())
	}
	return files
}

// all runs jobs after the chain's last, one Run each, or with inOne as one
// RunChain, and returns disk "d" and the files after each.
func (c *chain) all(jobs []graph.Job, inOne bool) (disks []cas.Digest, files []map[string]cas.Digest) {
	c.t.Helper()
	if !inOne {
		for _, j := range jobs {
			files = append(files, c.must(j))
			disks = append(disks, c.disks["d"])
		}
		return disks, files
	}
	var nodes []*graph.Node
	parent := c.parent
	for _, j := range jobs {
		n := graph.NewNode(c.x.Identity(), parent, j, nil)
		if len(nodes) > 0 && !c.x.Joins(nodes, n) {
			c.t.Fatalf("%s does not join the chain after %s", n.Label(), parent.Label())
		}
		nodes = append(nodes, n)
		parent = n
	}
	err := c.x.RunChain(c.t.Context(), nodes, c.disks, func(int) (context.Context, io.Writer) { return c.t.Context(), &c.log },
		func(i int, out, f map[string]cas.Digest) error {
			c.parent, c.disks = nodes[i], out
			disks, files = append(disks, out["d"]), append(files, f)
			return nil
		})
	if err != nil {
		c.t.Fatalf("a chain of %d jobs: %v\n%s", len(jobs), err, c.log.String())
	}
	return disks, files
}

// raw materializes a disk for host tools to inspect.
func (c *chain) raw(disk string) string {
	p := filepath.Join(c.t.TempDir(), disk+".raw")
	if err := c.x.Store.Materialize(c.t.Context(), c.disks[disk], p); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// rawAt materializes disk "d" as it was after job i.
func (c *chain) rawAt(i int) string {
	p := filepath.Join(c.t.TempDir(), "d.raw")
	if err := c.x.Store.Materialize(c.t.Context(), c.steps[i], p); err != nil {
		c.t.Fatal(err)
	}
	return p
}

func hostTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func place(s string) graph.Place {
	p, err := graph.ParsePlace(s)
	if err != nil {
		panic(err)
	}
	return p
}

// TestDiskJobs builds a GPT disk with fat32 and ext4 partitions, copies a tree in,
// runs a command in a chroot, and checks each result with the host's own tools.
func TestDiskJobs(t *testing.T) {
	repo := t.TempDir()
	os.MkdirAll(filepath.Join(repo, "tree/etc"), 0o755)
	os.WriteFile(filepath.Join(repo, "tree/etc/motd"), []byte("hello from the test\n"), 0o644)
	os.MkdirAll(filepath.Join(repo, "tree/bin"), 0o755)
	bb := hostBusybox(t)
	os.WriteFile(filepath.Join(repo, "tree/bin/busybox"), bb, 0o755)

	c := newChain(t, repo)
	c.must(&graph.CreateDisk{Disk: "root", Size: 128 << 20})
	c.must(&graph.Label{Disk: "root", Type: "gpt"})
	c.must(&graph.Partition{Disk: "root", Partitions: []graph.PartitionSpec{
		{Type: "primary", Size: 40 << 20, Name: "efi", GUID: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"},
		{Type: "primary", Name: "root"},
	}})
	c.must(&graph.Format{Place: place("root:1"), FS: "fat32", Label: "EFI"})
	c.must(&graph.Format{Place: place("root:2"), FS: "ext4", Label: "root"})
	c.must(&graph.CopyIn{Src: "tree", Dest: place("root:2:/")})
	c.must(&graph.Run{Root: place("root:2"), Command: graph.Command{"/bin/busybox", "sh", "-c", "echo ran > /ran; echo to the log"}, Workdir: "/", Mode: "chroot"})
	if !strings.Contains(c.log.String(), "to the log") {
		t.Errorf("the command's output is not in the log:\n%s", c.log.String())
	}

	raw := c.raw("root")
	dump := hostTool(t, "sfdisk", "--dump", raw)
	for _, want := range []string{"label: gpt", "size=       81920, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B", `name="efi"`, `name="root"`} {
		if !strings.Contains(dump, want) {
			t.Errorf("sfdisk --dump lacks %q:\n%s", want, dump)
		}
	}
	// Take the ext4 partition out and look at it with e2fsprogs.
	start, size := partition(t, raw, 2)
	part := filepath.Join(t.TempDir(), "p2")
	hostTool(t, "dd", "if="+raw, "of="+part, "bs=512", "skip="+start, "count="+size, "status=none")
	hostTool(t, "e2fsck", "-fn", part)
	if got := hostTool(t, "debugfs", "-R", "cat /etc/motd", part); !strings.Contains(got, "hello from the test") {
		t.Errorf("debugfs cat /etc/motd: %q", got)
	}
	if got := hostTool(t, "debugfs", "-R", "cat /ran", part); !strings.Contains(got, "ran") {
		t.Errorf("the chroot command's file: %q", got)
	}
	if got := hostTool(t, "blkid", "-o", "export", part); !strings.Contains(got, "LABEL=root") || !strings.Contains(got, "TYPE=ext4") {
		t.Errorf("blkid: %s", got)
	}
	// Jobs store new chunks raw and compress them in the background: once the
	// executor is closed, there is nothing left to compress.
	c.x.Close()
	if st, err := c.x.Store.Compact(t.Context(), []cas.Digest{c.disks["root"]}); err != nil || st.Objects != 0 {
		t.Errorf("after Close, Compact compressed %d objects (%v); want none left raw", st.Objects, err)
	}
}

// partition returns the start and size, in sectors, of partition n of a disk image.
func partition(t *testing.T, raw string, n int) (string, string) {
	out := hostTool(t, "sfdisk", "--dump", raw)
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, raw+string(rune('0'+n))+" ") {
			continue
		}
		var start, size string
		for _, f := range strings.Split(strings.SplitN(l, ":", 2)[1], ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
			switch k {
			case "start":
				start = strings.TrimSpace(v)
			case "size":
				size = strings.TrimSpace(v)
			}
		}
		return start, size
	}
	t.Fatalf("no partition %d in:\n%s", n, out)
	return "", ""
}

// The same jobs in two empty caches give the same snapshot: filesystem UUIDs, hash
// seeds and times come from the key and the build's epoch, not from the moment.
func TestReproducible(t *testing.T) {
	repo := t.TempDir()
	os.WriteFile(filepath.Join(repo, "f"), []byte("content\n"), 0o644)
	os.MkdirAll(filepath.Join(repo, "tree/bin"), 0o755)
	os.WriteFile(filepath.Join(repo, "tree/f"), []byte("content\n"), 0o600)
	jobs := []graph.Job{
		&graph.CreateDisk{Disk: "d", Size: 96 << 20},
		&graph.Label{Disk: "d", Type: "msdos"},
		&graph.Partition{Disk: "d", Partitions: []graph.PartitionSpec{{Type: "primary", Size: 40 << 20}, {Type: "primary"}}},
		&graph.Format{Place: place("d:1"), FS: "fat32"},
		&graph.Format{Place: place("d:2"), FS: "ext4"},
		&graph.CopyIn{Src: "f", Dest: place("d:1:/EFI/f")},
		&graph.CopyIn{Src: "tree", Dest: place("d:2:/")},
	}
	if bb, err := os.ReadFile("/bin/busybox"); err == nil {
		// A command that creates, changes and removes files, as package managers do.
		// A file removed and the next created 0.3 s later: on a running clock the two
		// fall in one second or in two by chance, and ext4 reuses the inode only in
		// the first case. The clock it reads stands at the epoch.
		os.WriteFile(filepath.Join(repo, "tree/bin/busybox"), bb, 0o755)
		jobs = append(jobs, &graph.Run{Root: place("d:2"), Mode: "chroot", Workdir: "/", Command: graph.Command{"/bin/busybox", "sh", "-c",
			"/bin/busybox mkdir -p /var/a /var/b && for i in 1 2 3 4 5 6 7 8; do echo $i > /var/a/$i; /bin/busybox sleep 0.2; done; /bin/busybox rm /var/a/3; /bin/busybox mv /var/a/4 /var/b/; /bin/busybox chmod 700 /var/b; " +
				"for i in 1 2 3 4 5 6; do echo t > /var/t; /bin/busybox rm /var/t; /bin/busybox sleep 0.3; echo $i > /var/n$i; done; " +
				"echo clock $(/bin/busybox date +%s) $(/bin/busybox sleep 1.5; /bin/busybox date +%s); " +
				// The FAT partition, mounted by the command itself as a boot
				// loader's installer does: its creation times, to 10 ms, are the
				// held clock's unless the agent clamps them.
				"for m in $(/bin/busybox sed -n 's/^vfat //p' /proc/1/root/etc/vmb/modules); do /bin/busybox insmod /proc/1/root$m 2>/dev/null; done; " +
				"/bin/busybox mkdir -p /esp && /bin/busybox mount -t vfat ${VMB_ROOT_DISK}1 /esp && for i in 1 2 3 4 5 6; do /bin/busybox mkdir /esp/d$i; /bin/busybox sleep 0.03; done; /bin/busybox umount /esp"}})
	}
	// The first build materializes every job's disks from the store, the second
	// takes each from the job before (warm disks): they must not differ either.
	var chains [2]*chain
	for i := range chains {
		c := newChain(t, repo)
		c.x.NoWarm = i == 0
		chains[i] = c
		for _, j := range jobs {
			c.log.Reset()
			c.must(j)
			if _, ok := j.(*graph.Run); ok && !strings.Contains(c.log.String(), fmt.Sprintf("clock %d %d\n", proto.Epoch, proto.Epoch)) {
				t.Errorf("the clock a run reads did not stand at the epoch:\n%s", c.log.String())
			}
			if i == 1 && c.disks["d"] != chains[0].steps[len(c.steps)] {
				a, b := chains[0].rawAt(len(c.steps)), c.raw("d")
				if dump := os.Getenv("VMB_TEST_DUMP"); dump != "" { // both disks, to look at
					exec.Command("cp", "--sparse=always", a, filepath.Join(dump, "a.raw")).Run()
					exec.Command("cp", "--sparse=always", b, filepath.Join(dump, "b.raw")).Run()
				}
				out, _ := exec.Command("cmp", "-l", a, b).CombinedOutput()
				lines := strings.SplitN(string(out), "\n", 20)
				t.Fatalf("%s: two builds of the same disk differ: %s and %s; bytes differ at (offset old new, octal):\n%s",
					j.Describe(), chains[0].steps[len(c.steps)].Short(), c.disks["d"].Short(), strings.Join(lines[:len(lines)-1], "\n"))
			}
			c.steps = append(c.steps, c.disks["d"])
		}
	}
	if cold, warm := chains[0].x.Materialized(), chains[1].x.Materialized(); warm != 1 || cold != int64(len(jobs)-1) {
		t.Errorf("materialized %d disks without warm disks and %d with; want %d and 1", cold, warm, len(jobs)-1)
	}
}

func TestFailures(t *testing.T) {
	repo := t.TempDir()
	big, _ := os.Create(filepath.Join(repo, "big"))
	big.Write(bytes.Repeat([]byte("vmb fills the disk\n"), 5<<20)) // 95 MB
	big.Close()
	os.WriteFile(filepath.Join(repo, "notatar"), []byte("this is not a tar archive\n"), 0o644)
	c := newChain(t, repo)
	c.must(&graph.CreateDisk{Disk: "d", Size: 64 << 20})
	c.must(&graph.Format{Place: place("d"), FS: "ext4"})

	// A failing command: its exit status and the end of its log.
	_, err := c.run(&graph.Run{Root: place("d"), Command: graph.Command{"/nonexistent"}, Workdir: "/", Mode: "chroot"})
	var je *vmexec.JobError
	if !errors.As(err, &je) || je.ExitCode() == 0 || !strings.Contains(je.Tail, "nonexistent") {
		t.Fatalf("failing command: %v (tail %q)", err, tailOf(je))
	}
	// A partition that does not exist.
	_, err = c.run(&graph.Format{Place: place("d:3"), FS: "ext4"})
	if !errors.As(err, &je) || !strings.Contains(je.Tail, "no partition 3") {
		t.Fatalf("missing partition: %v (tail %q)", err, tailOf(je))
	}
	// A full disk: the job fails and says so.
	_, err = c.run(&graph.CopyIn{Src: "big", Dest: place("d:/big")})
	if !errors.As(err, &je) || !strings.Contains(je.Tail, "no space left on device") {
		t.Fatalf("full disk: %v (tail %q)", err, tailOf(je))
	}
	// A payload that is not what the job takes.
	_, err = c.run(&graph.TarIn{Src: "notatar", Dest: place("d:/")})
	if !errors.As(err, &je) || !strings.Contains(je.Tail, "tar") {
		t.Fatalf("malformed tar-in: %v (tail %q)", err, tailOf(je))
	}
	// A job that hangs is killed at its timeout.
	c.x.Timeout = 1
	_, err = c.run(&graph.Label{Disk: "d", Type: "gpt"})
	if !errors.As(err, &je) || !strings.Contains(err.Error(), "did not finish") {
		t.Fatalf("timeout: %v", err)
	}
	c.x.Timeout = 0
	// Cancellation stops the VM.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	n := graph.NewNode(c.x.Identity(), c.parent, &graph.Label{Disk: "d", Type: "gpt"}, nil)
	if _, _, err := c.x.Run(ctx, n, c.disks, &c.log); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run: %v", err)
	}
	// Nothing outlives a run: no qemu, no job directory, and once the executor is
	// closed, no disk kept for a next job.
	c.x.Close()
	if out, _ := exec.Command("pgrep", "-af", "qemu-system.*"+c.x.TmpDir).Output(); len(out) > 0 {
		t.Fatalf("qemu still running:\n%s", out)
	}
	if left, _ := os.ReadDir(c.x.TmpDir); len(left) > 0 {
		t.Fatalf("left in the temp dir: %v", left)
	}
}

func tailOf(je *vmexec.JobError) string {
	if je == nil {
		return ""
	}
	return je.Tail
}

// The Debian mirror the build VMs of this machine may reach (and CI's, which reaches
// the package registries).
const mirror = "http://deb.debian.org/debian/dists/bookworm/Release"

// A run without network has none. With network: true it reaches the outside world
// (the Debian mirror, names resolved by the DNS forwarder its resolv.conf names
// for the job) and not a server on the host's 127.0.0.1, which qemu's user network
// would map to its gateway; with network: "host" it reaches that server too. The
// target's own resolv.conf is unchanged afterwards.
func TestNetwork(t *testing.T) {
	bb := hostBusybox(t)
	var served atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		io.WriteString(w, "served to the build VM\n")
	}))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	hostURL := "http://10.0.2.2:" + port + "/"

	repo := t.TempDir()
	os.MkdirAll(filepath.Join(repo, "root/bin"), 0o755)
	os.MkdirAll(filepath.Join(repo, "root/etc"), 0o755)
	os.WriteFile(filepath.Join(repo, "root/bin/busybox"), bb, 0o755)
	os.WriteFile(filepath.Join(repo, "root/etc/resolv.conf"), []byte("nameserver 192.0.2.1\n"), 0o644)
	build := exec.Command("go", "build", "-o", filepath.Join(repo, "root/bin/fetch"), "./testdata/fetch")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the client: %v\n%s", err, out)
	}
	c := newChain(t, repo)
	c.must(&graph.CreateDisk{Disk: "d", Size: 64 << 20})
	c.must(&graph.Format{Place: place("d"), FS: "ext4"})
	c.must(&graph.CopyIn{Src: "root", Dest: place("d:/")})
	try := func(network graph.Network, urls ...string) string {
		t.Helper()
		script := "/bin/busybox cat /etc/resolv.conf"
		for i, u := range urls {
			script += fmt.Sprintf(" && /bin/fetch %s /got%d", u, i)
		}
		c.log.Reset()
		c.must(&graph.Run{Root: place("d"), Mode: "chroot", Workdir: "/", Network: network, Command: graph.Command{"/bin/busybox", "sh", "-c", script}})
		return c.log.String()
	}

	_, err := c.run(&graph.Run{Root: place("d"), Mode: "chroot", Workdir: "/", Command: graph.Command{"/bin/fetch", hostURL, "/got"}})
	if err != nil || !strings.Contains(c.log.String(), "network is unreachable") {
		t.Fatalf("a run without network: %v\n%s", err, c.log.String())
	}

	urls := []string{hostURL}
	hostReachesMirror := false
	// Directly, as the guest goes: a proxy the host would use is not the guest's.
	direct := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 20 * time.Second}
	if resp, err := direct.Head(mirror); err == nil {
		resp.Body.Close()
		hostReachesMirror = resp.StatusCode == 200
		urls = append(urls, mirror)
	} else {
		t.Logf("the host cannot reach %s (%v): only the host's isolation is tested", mirror, err)
	}
	log := try(graph.NetOutside, urls...)
	if !strings.Contains(log, "unreachable "+hostURL) || served.Load() != 0 {
		t.Errorf("network: true reached the host's 127.0.0.1:\n%s", log)
	}
	if hostReachesMirror && !strings.Contains(log, "fetched "+mirror) {
		t.Errorf("network: true did not reach the Debian mirror:\n%s", log)
	}
	if !strings.Contains(log, "nameserver 10.0.2.3") {
		t.Errorf("the run did not see the DNS forwarder:\n%s", log)
	}

	log = try(graph.NetHost, hostURL)
	if !strings.Contains(log, "fetched "+hostURL) {
		t.Errorf("network: \"host\" did not reach the host's 127.0.0.1:\n%s", log)
	}
	raw := c.raw("d")
	if got := hostTool(t, "debugfs", "-R", "cat /got0", raw); !strings.Contains(got, "served to the build VM") {
		t.Errorf("fetched file: %q", got)
	}
	if hostReachesMirror {
		if got := hostTool(t, "debugfs", "-R", "cat /got1", raw); !strings.Contains(got, "Origin: Debian") {
			t.Errorf("the mirror's Release file: %q", got)
		}
	}
	if got := hostTool(t, "debugfs", "-R", "cat /etc/resolv.conf", raw); !strings.Contains(got, "192.0.2.1") {
		t.Errorf("the target's resolv.conf changed: %q", got)
	}
}
