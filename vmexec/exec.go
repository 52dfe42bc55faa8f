package vmexec

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
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

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"lukechampine.com/blake3"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/internal/atomicfile"
	"vmb.dev/vmb/internal/tracing"
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

	// NoChain makes every job boot a build VM of its own: no node joins a
	// chain (see Joins).
	NoChain bool
	// ReadAll makes the host read the disks whole after each job, as vmb did
	// before qemu recorded the ranges jobs write (see session).
	ReadAll bool
	// VerifyWritten ingests each disk after a job both from the ranges qemu
	// recorded and whole, and fails the job if they differ: for tests.
	VerifyWritten bool

	bootOnce     sync.Once
	bootErr      error
	boot         struct{ kernel, initrd string }
	warm         warmDisks
	materialized atomic.Int64
	boots        atomic.Int64
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
	d, _, err := x.ingestStats(ctx, path, opt)
	return d, err
}

// ingestStats is ingest, saying what it read and stored.
func (x *Executor) ingestStats(ctx context.Context, path string, opt cas.IngestOptions) (cas.Digest, cas.IngestStats, error) {
	opt.DeferCompression = true
	d, st, err := x.Store.IngestDisk(ctx, path, opt)
	if err != nil {
		return d, st, err
	}
	x.compacting.Add(1)
	go func() {
		defer x.compacting.Done()
		_, span := tracing.Tracer().Start(ctx, "compress")
		x.Store.CompactWorkers(context.Background(), []cas.Digest{d}, 1)
		span.End()
	}()
	return d, st, nil
}

// Boots counts the build VMs booted so far.
func (x *Executor) Boots() int64 { return x.boots.Load() }

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
	case *graph.Hash, *graph.Export:
		disk := hostReads(n)
		p, err := x.materialize(ctx, work, disk, out[disk])
		if err != nil {
			return nil, nil, err
		}
		files, err := x.hostRead(ctx, work, n, p, log)
		if err == nil {
			x.keep(out[disk], p)
		}
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
func (x *Executor) materialize(ctx context.Context, work, disk string, d cas.Digest) (_ string, err error) {
	if d.IsZero() {
		return "", fmt.Errorf("disk %q has no snapshot", disk)
	}
	ctx, span := tracing.Tracer().Start(ctx, "materialize", trace.WithAttributes(attribute.String("vmb.disk", disk)))
	defer func() { tracing.End(span, err) }()
	p := filepath.Join(work, "disk-"+disk+".raw")
	if !x.NoWarm && x.warm.take(d, p) {
		span.SetAttributes(attribute.Bool("vmb.warm", true))
		return p, nil
	}
	x.materialized.Add(1)
	return p, x.Store.Materialize(ctx, d, p)
}

// hostRead runs a job that reads a disk on the host (hash, export) on its raw
// image at p, and returns the file it wrote.
func (x *Executor) hostRead(ctx context.Context, work string, n *graph.Node, p string, log io.Writer) (_ map[string]cas.Digest, err error) {
	ctx, span := tracing.Tracer().Start(ctx, n.Job.Kind())
	defer func() { tracing.End(span, err) }()
	switch j := n.Job.(type) {
	case *graph.Hash:
		sum, err := hashFile(p, j.Algorithm)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(log, "%s %s\n", sum, j.Disk)
		d, err := x.Store.PutBytes([]byte(sum + "  " + j.Disk + "\n"))
		return map[string]cas.Digest{j.Dest: d}, err
	case *graph.Export:
		src := p
		if j.Partition > 0 {
			var err error
			if src, err = partitionImage(p, j.Partition, filepath.Join(work, "partition.raw")); err != nil {
				return nil, fmt.Errorf("export %s: %w", j.Describe(), err)
			}
			defer os.Remove(src)
		}
		d, err := x.export(ctx, work, src, j.Format, n.Key.String(), log)
		return map[string]cas.Digest{j.Dest: d}, err
	}
	return nil, fmt.Errorf("job %s does not read a disk on the host", n.Job.Kind())
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
	var written map[string][]cas.Extent // nil: read the disks whole
	var err error
	if r, ok := n.Job.(*graph.Run); ok && r.Mode == "boot" {
		err = x.bootRun(ctx, work, n, r, names, paths, disks, log)
	} else {
		files, written, err = x.applianceJob(ctx, work, n, names, paths, nil, log)
	}
	if err != nil {
		return nil, err
	}
	if err := x.storeDisks(ctx, names, paths, disks, written, log); err != nil {
		return nil, err
	}
	for _, name := range names {
		x.keep(disks[name], paths[name])
	}
	return files, nil
}

// applianceJob runs node n's job in the appliance on the disks at paths (by name,
// attached in the order of names), and returns the files it wrote and the ranges
// of each disk it wrote (nil if not known). booted, if set, is the disk a
// boot-mode run's target booted from (see proto.Booted).
func (x *Executor) applianceJob(ctx context.Context, work string, n *graph.Node, names []string, paths map[string]string, booted *bootedDisk, log io.Writer) (map[string]cas.Digest, map[string][]cas.Extent, error) {
	s, _, err := x.newSession(ctx, work, []*graph.Node{n}, names, paths, booted)
	if err != nil {
		return nil, nil, err
	}
	defer s.release()
	files, err := s.run(ctx, 0, log)
	return files, s.written, err
}

// storeDisks stores each disk at paths after a job, as the next snapshot of the
// one in disks, and updates disks: only the ranges written says the job wrote,
// or, with written nil, the whole disk. It says in log what it read.
func (x *Executor) storeDisks(ctx context.Context, names []string, paths map[string]string, disks map[string]cas.Digest, written map[string][]cas.Extent, log io.Writer) error {
	if x.VerifyWritten && written == nil && !x.ReadAll {
		return errors.New("qemu recorded no writes (VerifyWritten)")
	}
	for _, name := range names {
		base, err := x.Store.Manifest(disks[name])
		if err != nil {
			return err
		}
		opt := cas.IngestOptions{Base: base}
		if written != nil {
			opt.Changed = written[name]
			if opt.Changed == nil {
				opt.Changed = []cas.Extent{}
			}
		}
		start := time.Now()
		ictx, span := tracing.Tracer().Start(ctx, "ingest", trace.WithAttributes(attribute.String("vmb.disk", name),
			attribute.Bool("vmb.written_ranges", opt.Changed != nil)))
		d, st, err := x.ingestStats(ictx, paths[name], opt)
		span.SetAttributes(attribute.Int64("vmb.read_bytes", st.ReadBytes), attribute.Int("vmb.new_chunks", st.NewChunks))
		tracing.End(span, err)
		if err != nil {
			return err
		}
		how := "read whole"
		if opt.Changed != nil {
			how = "the ranges the job wrote"
		}
		fmt.Fprintf(log, "vmb: stored disk %s in %.2fs: %s read (%s), %d new chunks\n", name, time.Since(start).Seconds(),
			graph.FormatSize(st.ReadBytes), how, st.NewChunks)
		if x.VerifyWritten && written != nil {
			whole, err := x.ingest(ctx, paths[name], cas.IngestOptions{Base: base})
			if err != nil {
				return err
			}
			if whole != d {
				return fmt.Errorf("disk %s: stored from the ranges qemu recorded as %s, read whole %s: a write was missed", name, d.Short(), whole.Short())
			}
		}
		disks[name] = d
	}
	return nil
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

// bootTarget boots a boot-mode run's target and waits for it to power off.
func (x *Executor) bootTarget(ctx context.Context, vm *qemu.VM, timeout time.Duration, log io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if x.Verbose {
		fmt.Fprintf(log, "+ %s\n", vm)
	}
	x.boots.Add(1)
	p, err := vm.Start(ctx)
	if err != nil {
		return err
	}
	var tail []string
	sc := bufio.NewScanner(p.Console)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := cleanLine(sc.Text())
		fmt.Fprintln(log, line)
		tail = append(tail, line)
		if len(tail) > 20 {
			tail = tail[1:]
		}
	}
	io.Copy(io.Discard, p.Console)
	werr := p.Wait()
	tailText := strings.Join(tail, "\n")
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return &JobError{Status: -1, Tail: tailText, Err: fmt.Errorf("the VM did not finish in %s: killed", timeout)}
	case ctx.Err() != nil:
		return ctx.Err()
	case werr != nil:
		return &JobError{Status: -1, Tail: tailText, Err: fmt.Errorf("the target's VM failed: %v", werr)}
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
