package vmexec

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"lukechampine.com/blake3"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/internal/atomicfile"
	"vmb.dev/vmb/vmexec/appliance"
	"vmb.dev/vmb/vmexec/imagefmt"
	"vmb.dev/vmb/vmexec/proto"
	"vmb.dev/vmb/vmexec/qemu"
)

// DefaultTimeout bounds a job that sets none.
const DefaultTimeout = 30 * time.Minute

// Executor runs jobs in the appliance under qemu, reading and writing disks as
// snapshots in the store.
type Executor struct {
	Store     *cas.Store
	Appliance *appliance.Appliance
	Qemu      string // default qemu-system-x86_64
	KVM       bool
	Memory    int           // MiB; default 512
	CPUs      int           // virtual CPUs; default 1
	RTCBase   string        // where the guest clock starts (qemu -rtc base=); default the host's time
	Timeout   time.Duration // per job without a timeout of its own; default DefaultTimeout
	TmpDir    string        // where job disks are materialized; default os.TempDir()
	RepoDir   string        // the build repository local sources are relative to
	// Verbose adds qemu's command line to the log.
	Verbose bool

	// NoWarm makes every job materialize its disks from the store, as a job in
	// another process would (see warmDisks).
	NoWarm bool

	bootOnce     sync.Once
	bootErr      error
	boot         struct{ kernel, initrd string }
	warm         warmDisks
	materialized atomic.Int64
	compacting   sync.WaitGroup
}

// Close waits for the compression of what the jobs stored, and removes the disks
// the executor kept for the jobs that would follow.
func (x *Executor) Close() {
	x.compacting.Wait()
	x.warm.close()
}

// ingest stores a disk after a job. New chunks are stored uncompressed, so the
// next job starts sooner, and compressed in the background, on one core, while
// it runs (under TCG the VM keeps one core busy; with KVM, mostly none). A
// compression that fails leaves the chunks raw, which reads just as well, and
// vmb cache gc compresses them later.
func (x *Executor) ingest(ctx context.Context, path string, opt cas.IngestOptions) (cas.Digest, error) {
	opt.DeferCompression = true
	d, _, err := x.Store.IngestDisk(ctx, path, opt)
	if err != nil {
		return d, err
	}
	x.compacting.Add(1)
	go func() {
		defer x.compacting.Done()
		x.Store.CompactWorkers(context.Background(), []cas.Digest{d}, 1)
	}()
	return d, nil
}

// Materialized counts the disks materialized from the store so far.
func (x *Executor) Materialized() int64 { return x.materialized.Load() }

// keep gives the raw disk at p, which holds snapshot d, to the jobs that follow.
func (x *Executor) keep(d cas.Digest, p string) {
	if !x.NoWarm {
		x.warm.give(x.tmpDir(), d, p)
	}
}

// JobError is a job that ran in the VM and failed, or a VM that did not finish.
// Its methods ExitCode and LogTail make it a solver.JobFailure.
type JobError struct {
	Status int    // the job's exit status; -1 when the VM did not report one
	Tail   string // the last lines of the console
	Err    error
}

func (e *JobError) Error() string { return e.Err.Error() }

// ExitCode is the job's exit status; -1 when the VM did not report one.
func (e *JobError) ExitCode() int { return e.Status }

// LogTail is the last lines of the console.
func (e *JobError) LogTail() string { return e.Tail }

// Identity is the executor identity in keys.
func (x *Executor) Identity() string { return x.Appliance.Identity() }

// Run runs node n on disks (snapshot by disk name) and returns the disks after it
// and the files it wrote to the output directory (blob by output name).
func (x *Executor) Run(ctx context.Context, n *graph.Node, disks map[string]cas.Digest, log io.Writer) (map[string]cas.Digest, map[string]cas.Digest, error) {
	work, err := os.MkdirTemp(x.tmpDir(), "vmb-job-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(work)
	out := map[string]cas.Digest{}
	for k, v := range disks {
		out[k] = v
	}
	files := map[string]cas.Digest{}
	switch j := n.Job.(type) {
	case *graph.CreateDisk:
		m := &cas.Manifest{Size: int64(j.Size), ChunkSize: cas.DefaultChunkSize}
		d, err := x.Store.PutBytes(m.Encode())
		out[j.Disk] = d
		return out, files, err
	case *graph.ResizeDisk:
		err := x.onDisk(ctx, work, out, j.Disk, func(f *os.File, size int64) ([]cas.Extent, error) {
			return []cas.Extent{{Off: min(size, int64(j.Size)), Len: max(size, int64(j.Size)) - min(size, int64(j.Size))}}, f.Truncate(int64(j.Size))
		})
		return out, files, err
	case *graph.DD:
		src, err := x.readSrc(n, j.Src)
		if err != nil {
			return nil, nil, err
		}
		err = x.onDisk(ctx, work, out, j.Disk, func(f *os.File, size int64) ([]cas.Extent, error) {
			if int64(j.Offset)+int64(len(src)) > size {
				return nil, fmt.Errorf("dd: %d bytes at offset %d do not fit disk %q (%d bytes)", len(src), j.Offset, j.Disk, size)
			}
			_, err := f.WriteAt(src, int64(j.Offset))
			return []cas.Extent{{Off: int64(j.Offset), Len: int64(len(src))}}, err
		})
		return out, files, err
	case *graph.Hash:
		p, err := x.materialize(ctx, work, j.Disk, out[j.Disk])
		if err != nil {
			return nil, nil, err
		}
		sum, err := hashFile(p, j.Algorithm)
		if err != nil {
			return nil, nil, err
		}
		x.keep(out[j.Disk], p)
		fmt.Fprintf(log, "%s %s\n", sum, j.Disk)
		d, err := x.Store.PutBytes([]byte(sum + "  " + j.Disk + "\n"))
		files[j.Dest] = d
		return out, files, err
	case *graph.Export:
		p, err := x.materialize(ctx, work, j.Disk, out[j.Disk])
		if err != nil {
			return nil, nil, err
		}
		src := p
		if j.Partition > 0 {
			if src, err = partitionImage(p, j.Partition, filepath.Join(work, "partition.raw")); err != nil {
				return nil, nil, fmt.Errorf("export %s: %w", j.Describe(), err)
			}
		}
		d, err := x.export(ctx, work, src, j.Format, n.Key.String(), log)
		if err == nil {
			x.keep(out[j.Disk], p)
		}
		files[j.Dest] = d
		return out, files, err
	}
	files, err = x.vm(ctx, work, n, out, log)
	return out, files, err
}

func (x *Executor) tmpDir() string {
	if x.TmpDir != "" {
		return x.TmpDir
	}
	return os.TempDir()
}

func (x *Executor) src(rel string) string { return filepath.Join(x.RepoDir, filepath.FromSlash(rel)) }

// materialize writes snapshot d of a disk into work and returns its path.
func (x *Executor) materialize(ctx context.Context, work, disk string, d cas.Digest) (string, error) {
	if d.IsZero() {
		return "", fmt.Errorf("disk %q has no snapshot", disk)
	}
	p := filepath.Join(work, "disk-"+disk+".raw")
	if !x.NoWarm && x.warm.take(d, p) {
		return p, nil
	}
	x.materialized.Add(1)
	return p, x.Store.Materialize(ctx, d, p)
}

// onDisk runs a host-side change on a disk and ingests the result; change returns
// the ranges it wrote.
func (x *Executor) onDisk(ctx context.Context, work string, disks map[string]cas.Digest, disk string, change func(*os.File, int64) ([]cas.Extent, error)) error {
	p, err := x.materialize(ctx, work, disk, disks[disk])
	if err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	fi, _ := f.Stat()
	changed, err := change(f, fi.Size())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	base, err := x.Store.Manifest(disks[disk])
	if err != nil {
		return err
	}
	d, err := x.ingest(ctx, p, cas.IngestOptions{Base: base, Changed: changed})
	if err != nil {
		return err
	}
	disks[disk] = d
	x.keep(d, p)
	return nil
}

func hashFile(p, algorithm string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var h interface {
		io.Writer
		Sum([]byte) []byte
	} = blake3.New(32, nil)
	if algorithm == "sha256" {
		h = sha256.New()
	}
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return algorithm + ":" + hex.EncodeToString(h.Sum(nil)), nil
}

// partitionImage copies partition n of the raw disk at disk to dst, holes kept as
// holes, and returns dst.
func partitionImage(disk string, n int, dst string) (string, error) {
	f, err := os.Open(disk)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	e, err := imagefmt.PartitionExtent(f, fi.Size(), n)
	if err != nil {
		return "", err
	}
	out, err := os.Create(dst)
	if err != nil {
		return "", err
	}
	defer out.Close()
	if err := out.Truncate(e.Len); err != nil {
		return "", err
	}
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	for off := int64(0); off < e.Len; off += int64(len(buf)) {
		b := buf[:min(int64(len(buf)), e.Len-off)]
		if _, err := f.ReadAt(b, e.Off+off); err != nil {
			return "", err
		}
		if bytes.Equal(b, zero[:len(b)]) {
			continue
		}
		if _, err := out.WriteAt(b, off); err != nil {
			return "", err
		}
	}
	return dst, out.Close()
}

// export converts a raw disk with qemu-img and stores the image.
func (x *Executor) export(ctx context.Context, work, raw, format, seed string, log io.Writer) (cas.Digest, error) {
	if format == "raw" {
		f, err := os.Open(raw)
		if err != nil {
			return cas.Digest{}, err
		}
		defer f.Close()
		d, _, err := x.Store.Put(f)
		return d, err
	}
	dst := filepath.Join(work, "export."+format)
	if err := imagefmt.Convert(ctx, raw, dst, format, seed, log); err != nil {
		return cas.Digest{}, err
	}
	f, err := os.Open(dst)
	if err != nil {
		return cas.Digest{}, err
	}
	defer f.Close()
	d, _, err := x.Store.Put(f)
	return d, err
}

// vm runs a job in VMs: in the appliance, or, for a boot-mode run, in the
// target booted from its own disk (see boot.go). It materializes the disks, runs
// the job and ingests them, updating disks.
func (x *Executor) vm(ctx context.Context, work string, n *graph.Node, disks map[string]cas.Digest, log io.Writer) (map[string]cas.Digest, error) {
	if err := x.bootFiles(); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(disks))
	for name := range disks {
		names = append(names, name)
	}
	sort.Strings(names)
	paths := map[string]string{}
	for _, name := range names {
		p, err := x.materialize(ctx, work, name, disks[name])
		if err != nil {
			return nil, err
		}
		paths[name] = p
	}
	var files map[string]cas.Digest
	var err error
	if r, ok := n.Job.(*graph.Run); ok && r.Mode == "boot" {
		err = x.bootRun(ctx, work, n, r, names, paths, disks, log)
	} else {
		files, err = x.applianceJob(ctx, work, n, names, paths, nil, log)
	}
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		base, err := x.Store.Manifest(disks[name])
		if err != nil {
			return nil, err
		}
		d, err := x.ingest(ctx, paths[name], cas.IngestOptions{Base: base})
		if err != nil {
			return nil, err
		}
		disks[name] = d
	}
	for _, name := range names {
		x.keep(disks[name], paths[name])
	}
	return files, nil
}

// applianceJob runs node n's job in the appliance on the disks at paths (by name,
// attached in the order of names), and returns the files it wrote. booted, if
// set, is the disk a boot-mode run's target booted from (see proto.Booted).
func (x *Executor) applianceJob(ctx context.Context, work string, n *graph.Node, names []string, paths map[string]string, booted *bootedDisk, log io.Writer) (map[string]cas.Digest, error) {
	params, err := json.Marshal(n.Job)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, 8)
	rand.Read(nonce)
	job := proto.Job{Nonce: hex.EncodeToString(nonce), Kind: n.Job.Kind(), Params: params, Disks: names,
		Output: graph.Output(n.Job) != "", Epoch: proto.Epoch, Seed: n.Key.String()}
	if booted != nil {
		job.Booted = &booted.Booted
	}

	jobDisk := filepath.Join(work, "job.tar")
	if err := x.writeJobDisk(ctx, jobDisk, &job, n); err != nil {
		return nil, err
	}
	vm := x.newVM(jobDisk)
	if r, ok := n.Job.(*graph.Run); ok {
		vm.Network = vmNetwork[r.Network]
	}
	var total int64
	for _, name := range names {
		fi, err := os.Stat(paths[name])
		if err != nil {
			return nil, err
		}
		total += fi.Size()
		vm.Disks = append(vm.Disks, qemu.Drive{Path: paths[name]})
	}
	if booted != nil {
		vm.Disks = append(vm.Disks, qemu.Drive{Path: booted.path, ReadOnly: true})
	}
	outDisk := ""
	if job.Output {
		outDisk = filepath.Join(work, "output.tar")
		f, err := os.Create(outDisk)
		if err != nil {
			return nil, err
		}
		f.Truncate(total + 64<<20)
		f.Close()
		vm.Disks = append(vm.Disks, qemu.Drive{Path: outDisk})
	}
	if err := x.boot1(ctx, vm, job.Nonce, x.timeout(n), log); err != nil {
		return nil, err
	}
	files := map[string]cas.Digest{}
	if outDisk != "" {
		if err := x.readOutputs(outDisk, files); err != nil {
			return nil, err
		}
		if _, ok := files[graph.Output(n.Job)]; !ok {
			return nil, &JobError{Status: -1, Err: fmt.Errorf("the job wrote no output %q", graph.Output(n.Job))}
		}
	}
	return files, nil
}

// timeout is how long node n's VM may run.
func (x *Executor) timeout(n *graph.Node) time.Duration {
	if r, ok := n.Job.(*graph.Run); ok && r.Timeout > 0 {
		return time.Duration(r.Timeout) * time.Second
	}
	if x.Timeout != 0 {
		return x.Timeout
	}
	return DefaultTimeout
}

// boot1 boots the VM once and waits for the job's result line; with no nonce (a
// boot-mode run's target), for the VM to power off.
func (x *Executor) boot1(ctx context.Context, vm *qemu.VM, nonce string, timeout time.Duration, log io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if x.Verbose {
		fmt.Fprintf(log, "+ %s\n", vm)
	}
	p, err := vm.Start(ctx)
	if err != nil {
		return err
	}
	status, gotResult := -1, false
	var tail []string
	sc := bufio.NewScanner(p.Console)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := cleanLine(sc.Text())
		if s, ok := proto.ParseResult(line, nonce); ok && nonce != "" {
			status, gotResult = s, true
			continue
		}
		if strings.HasPrefix(line, proto.ReadyPrefix) {
			continue
		}
		fmt.Fprintln(log, line)
		tail = append(tail, line)
		if len(tail) > 20 {
			tail = tail[1:]
		}
	}
	werr := p.Wait()
	tailText := strings.Join(tail, "\n")
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return &JobError{Status: -1, Tail: tailText, Err: fmt.Errorf("the VM did not finish in %s: killed", timeout)}
	case ctx.Err() != nil:
		return ctx.Err()
	case nonce == "" && werr != nil:
		return &JobError{Status: -1, Tail: tailText, Err: fmt.Errorf("the target's VM failed: %v", werr)}
	case nonce == "":
		return nil
	case !gotResult && strings.Contains(tailText, "Kernel panic"):
		return &JobError{Status: -1, Tail: tailText, Err: errors.New("the build VM's kernel panicked")}
	case !gotResult:
		return &JobError{Status: -1, Tail: tailText, Err: fmt.Errorf("the build VM stopped without a result (%v)", werr)}
	case status != 0:
		return &JobError{Status: status, Tail: tailText, Err: fmt.Errorf("exit status %d", status)}
	}
	return nil
}

// vmNetwork is the VM network a run's network setting asks for.
var vmNetwork = map[graph.Network]qemu.Network{
	graph.NoNetwork: qemu.NoNetwork, graph.NetOutside: qemu.NetOutside, graph.NetHost: qemu.NetHost,
}

// newVM describes a boot of the appliance with the job disk as its first disk.
func (x *Executor) newVM(jobDisk string) *qemu.VM {
	return &qemu.VM{Qemu: x.qemu(), KVM: x.KVM, Memory: x.memory(), CPUs: x.CPUs, RTCBase: x.RTCBase, Kernel: x.boot.kernel, Initrd: x.boot.initrd,
		Cmdline: "console=ttyS0 quiet loglevel=3 panic=-1", Disks: []qemu.Drive{{Path: jobDisk, ReadOnly: true}}}
}

// cleanLine drops terminal escape sequences the firmware writes.
func cleanLine(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b {
			for i++; i < len(s) && !(s[i] >= 'A' && s[i] <= 'Z' || s[i] >= 'a' && s[i] <= 'z'); i++ {
			}
			continue
		}
		if s[i] == '\r' {
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// writeJobDisk writes job.json and the payload of node n (nil: none) as a tar
// stream.
func (x *Executor) writeJobDisk(ctx context.Context, path string, job *proto.Job, n *graph.Node) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	jb, _ := json.Marshal(job)
	mtime := time.Unix(proto.Epoch, 0)
	if err := tw.WriteHeader(&tar.Header{Name: proto.JobFile, Mode: 0o644, Size: int64(len(jb)), ModTime: mtime, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	tw.Write(jb)
	if n != nil {
		var p string
		switch j := n.Job.(type) {
		case *graph.Fetch:
			if p, err = x.fetch(ctx, j); err == nil {
				_, err = addTree(tw, p, proto.PayloadSrc, mtime)
			}
		case *graph.ImageIn:
			if p, err = x.flattenImage(ctx, n, j, filepath.Dir(path)); err == nil {
				_, err = addTree(tw, p, proto.PayloadSrc, mtime)
			}
		default:
			if src := n.Job.Uses().Src; src != nil {
				err = x.addSrc(tw, n, *src, mtime)
			}
		}
	}
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	fi, _ := f.Stat()
	return f.Truncate(max(fi.Size(), 1<<20))
}

// ErrSrcChanged is a local source whose content is not what the build was keyed by.
var ErrSrcChanged = errors.New("src changed since the build started")

// addSrc adds a job's local source to the payload, and checks that what it added
// is what the node's key holds: a source edited since the build was compiled fails
// the job rather than be cached under the key of its old content.
func (x *Executor) addSrc(tw *tar.Writer, n *graph.Node, src string, mtime time.Time) error {
	got, err := addTree(tw, x.src(src), proto.PayloadSrc, mtime)
	if err != nil {
		return fmt.Errorf("src %q: %w", src, err)
	}
	return checkSrc(n, src, got)
}

// readSrc reads a job's local source file, checked as addSrc checks a tree.
func (x *Executor) readSrc(n *graph.Node, src string) ([]byte, error) {
	p := x.src(src)
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	sum := blake3.Sum256(b)
	return b, checkSrc(n, src, graph.FileDigest(fi.Mode(), hex.EncodeToString(sum[:])))
}

func checkSrc(n *graph.Node, src, got string) error {
	for _, in := range n.Inputs {
		if in.Name == "src" && in.Digest != got {
			return fmt.Errorf("src %q: %w (keyed by %s, now %s): run the build again", src, ErrSrcChanged, in.Digest, got)
		}
	}
	return nil
}

// addTree adds a local file or tree under name, with modes normalized as lang keys
// them, owner 0:0 and the build's mtime, in sorted order, and returns the digest
// (graph.TreeDigest) of exactly what it added.
func addTree(tw *tar.Writer, root, name string, mtime time.Time) (string, error) {
	var t graph.TreeDigest
	buf := make([]byte, 256<<10) // BLAKE3 hashes many chunks at once in large writes
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		h := &tar.Header{Name: path.Join(name, rel), ModTime: mtime, Mode: int64(graph.NormalMode(fi.Mode()))}
		switch {
		case fi.IsDir():
			h.Typeflag = tar.TypeDir
			t.Dir(rel, fi.Mode())
		case fi.Mode()&fs.ModeSymlink != 0:
			h.Typeflag = tar.TypeSymlink
			if h.Linkname, err = os.Readlink(p); err != nil {
				return err
			}
			h.Mode = 0o777
			t.Symlink(rel, h.Linkname)
		case fi.Mode().IsRegular():
			h.Typeflag, h.Size = tar.TypeReg, fi.Size()
		default:
			return fmt.Errorf("%s: not a file, directory or symlink", p)
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		// The digest is of the bytes copied: a file that changed size since the
		// header was written fails here, one that changed content in the digest.
		sum := blake3.New(32, nil)
		if _, err := io.CopyBuffer(io.MultiWriter(tw, sum), f, buf); err != nil {
			return fmt.Errorf("%s: %w (%w)", p, ErrSrcChanged, err)
		}
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("%s: %w (%w)", p, ErrSrcChanged, err)
		}
		t.File(rel, fi.Mode(), hex.EncodeToString(sum.Sum(nil)))
		return nil
	})
	return t.Sum(), err
}

// readOutputs stores every file of the tar stream on the output disk.
func (x *Executor) readOutputs(path string, files map[string]cas.Digest) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("output disk: %w", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		d, _, err := x.Store.Put(tr)
		if err != nil {
			return err
		}
		files[h.Name] = d
	}
}

// bootFiles writes the appliance's kernel and initramfs where qemu can read them,
// once per appliance.
func (x *Executor) bootFiles() error {
	x.bootOnce.Do(func() { x.bootErr = x.writeBootFiles() })
	return x.bootErr
}

// writeBootFiles writes them to the cache's scratch place appliance-boot/, or
// uses the copies there when their content still hashes to the appliance's blobs.
func (x *Executor) writeBootFiles() error {
	dir, err := x.Store.Scratch("appliance-boot/" + x.Appliance.Digest.String())
	if err != nil {
		return err
	}
	for _, f := range []struct {
		d    cas.Digest
		name string
		dst  *string
	}{{x.Appliance.Kernel, "vmlinux", &x.boot.kernel}, {x.Appliance.Initrd, "initrd", &x.boot.initrd}} {
		p := filepath.Join(dir, f.name)
		if b, err := os.ReadFile(p); err != nil || cas.Sum(b) != f.d {
			b, err := x.Store.Get(f.d)
			if err != nil {
				return fmt.Errorf("appliance: %w", err)
			}
			if err := atomicfile.WriteFile(p, b, 0o644); err != nil {
				return err
			}
		} else {
			now := time.Now()
			os.Chtimes(p, now, now) // in use: gc leaves scratch files alone while they are
		}
		*f.dst = p
	}
	return nil
}

func (x *Executor) qemu() string {
	if x.Qemu != "" {
		return x.Qemu
	}
	return "qemu-system-x86_64"
}

func (x *Executor) memory() int {
	if x.Memory > 0 {
		return x.Memory
	}
	return 512
}
