package vmexec

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/internal/tracing"
	"vmb.dev/vmb/vmexec/proto"
	"vmb.dev/vmb/vmexec/qemu"
)

// A session is one boot of the appliance that runs a list of jobs one after
// another on the same disks: one job (Run), or the jobs of a chain (RunChain).
// The job disk holds every job with its payload; after each job the agent
// unmounts and syncs the disks, says the job's result, and waits. The host then
// reads the disks, which are the job's result as they would be had the VM
// stopped there, and tells the agent to go on (proto.NextLine) or kills the VM.
// So a chain costs one boot, and each of its jobs leaves the bytes it would leave
// in a VM of its own.
type session struct {
	x       *Executor
	nodes   []*graph.Node
	jobs    []*proto.Job
	vm      *qemu.VM
	outDisk string // "" when no job writes output files

	cancel context.CancelFunc
	p      *qemu.Process
	lines  chan string // the console, a line at a time, closed at its end
	ran    int         // jobs begun
	ended  bool        // the VM has stopped and was waited for
	werr   error       // qemu's exit

	// Write tracking: qemu records which ranges of each target disk the guest
	// writes (a dirty bitmap a disk), and the host reads the record after each
	// job through qemu's monitor and NBD server, in sockets under sockDir.
	track   bool
	sockDir string
	mon     *qemu.Monitor
	names   []string // the target disks, drives 1, 2, ... of the VM
	sizes   []int64
	// written holds, after a job, the ranges it wrote of each disk; nil when
	// not known (read the whole disks).
	written map[string][]cas.Extent
}

// trackGranularity is the unit qemu records writes in.
const trackGranularity = 64 << 10

// newSession writes the job disk for the jobs of nodes, to run on the disks at
// paths (by name, attached in the order of names; booted, if set, after them),
// and describes the VM. A node whose payload could not be made ends the session's
// list before it: the session holds the jobs of nodes[:held], and err says why
// nodes[held] could not join (nil when every node did). With no job held, err is
// the first node's and the session is nil.
func (x *Executor) newSession(ctx context.Context, work string, nodes []*graph.Node, names []string, paths map[string]string, booted *bootedDisk) (s *session, held int, err error) {
	if err := x.bootFiles(); err != nil {
		return nil, 0, err
	}
	s = &session{x: x}
	output := false
	for _, n := range nodes {
		params, err := json.Marshal(n.Job)
		if err != nil {
			return nil, 0, err
		}
		nonce := make([]byte, 8)
		rand.Read(nonce)
		job := &proto.Job{Nonce: hex.EncodeToString(nonce), Kind: n.Job.Kind(), Params: params, Disks: names,
			Output: graph.Output(n.Job) != "", Epoch: proto.Epoch, Seed: n.Key.String(), Hold: !x.ReadAll}
		if booted != nil {
			job.Booted = &booted.Booted
		}
		s.jobs = append(s.jobs, job)
	}
	jobDisk := filepath.Join(work, "job.tar")
	held, err = x.writeJobDisk(ctx, jobDisk, s.jobs, nodes)
	if held == 0 {
		return nil, 0, err
	}
	s.nodes, s.jobs = nodes[:held], s.jobs[:held]
	for _, j := range s.jobs {
		output = output || j.Output
	}
	s.vm = x.newVM(jobDisk)
	for _, n := range s.nodes {
		if r, ok := n.Job.(*graph.Run); ok {
			s.vm.Network = vmNetwork[r.Network] // the same for all: see Joins
		}
	}
	var total int64
	for _, name := range names {
		fi, err := os.Stat(paths[name])
		if err != nil {
			return nil, 0, err
		}
		total += fi.Size()
		s.vm.Disks = append(s.vm.Disks, qemu.Drive{Path: paths[name]})
		s.sizes = append(s.sizes, fi.Size())
	}
	s.names = names
	if !x.ReadAll {
		// Sockets in a directory of their own under $TMPDIR: a socket's path
		// may not be longer than 107 bytes, and a work directory's can be.
		if s.sockDir, err = os.MkdirTemp("", "vmb-vm-"); err != nil {
			return nil, 0, err
		}
		s.track = true
		s.vm.Monitor, s.vm.Paused = filepath.Join(s.sockDir, "qmp"), true
	}
	if booted != nil {
		s.vm.Disks = append(s.vm.Disks, qemu.Drive{Path: booted.path, ReadOnly: true})
	}
	if output {
		s.outDisk = filepath.Join(work, "output.tar")
		f, err := os.Create(s.outDisk)
		if err != nil {
			return nil, 0, err
		}
		f.Truncate(total + 64<<20)
		f.Close()
		s.vm.Disks = append(s.vm.Disks, qemu.Drive{Path: s.outDisk})
	}
	return s, held, err
}

// run runs the session's next job, node i of its list, writing the console to
// log, and returns the files the job wrote. The first job boots the VM; each
// next one is let go after the one before it. After the last job it waits for
// the VM to stop. An error ends the session: close it.
func (s *session) run(ctx context.Context, i int, log io.Writer) (map[string]cas.Digest, error) {
	if i != s.ran || i >= len(s.jobs) {
		return nil, fmt.Errorf("session: job %d run after %d of %d", i, s.ran, len(s.jobs))
	}
	s.ran++
	n, job := s.nodes[i], s.jobs[i]
	timeout := s.x.timeout(n)
	if i == 0 {
		if s.x.Verbose {
			fmt.Fprintf(log, "+ %s\n", s.vm)
		}
		s.x.boots.Add(1)
		vctx, cancel := context.WithCancel(ctx)
		var err error
		if len(s.jobs) > 1 || job.Hold {
			s.p, err = s.vm.StartInteractive(vctx)
		} else {
			s.p, err = s.vm.Start(vctx)
		}
		if err != nil {
			cancel()
			return nil, err
		}
		s.cancel = cancel
		s.lines = make(chan string, 64)
		go func() {
			defer close(s.lines)
			sc := bufio.NewScanner(s.p.Console)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				s.lines <- cleanLine(sc.Text())
			}
			io.Copy(io.Discard, s.p.Console) // a line too long: qemu must not block
		}()
		if s.vm.Paused {
			if err := s.startTracking(vctx, log); err != nil {
				s.close() // qemu says why, if it stopped
				return nil, fmt.Errorf("%w (%v)", err, s.werr)
			}
		}
	} else if _, err := fmt.Fprintln(s.p.Stdin, proto.NextLine(s.jobs[i-1].Nonce)); err != nil {
		return nil, fmt.Errorf("the build VM did not take its next job: %w", err)
	}

	// The boot, up to the agent's ready line, then the job.
	var span trace.Span
	if i == 0 {
		_, span = tracing.Tracer().Start(ctx, "boot")
	} else {
		_, span = tracing.Tracer().Start(ctx, "job")
	}
	defer func() { span.End() }()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var tail []string
	status, got := -1, false
	s.written = nil
	// line reads the console's next line; false at its end.
	line := func() (string, bool, error) {
		select {
		case l, open := <-s.lines:
			if !open {
				s.wait()
			}
			return l, open, nil
		case <-timer.C:
			s.close()
			return "", false, &JobError{Status: -1, Tail: strings.Join(tail, "\n"), Err: fmt.Errorf("the VM did not finish in %s: killed", timeout)}
		case <-ctx.Done():
			s.close()
			return "", false, ctx.Err()
		}
	}
	logLine := func(l string) {
		fmt.Fprintln(log, l)
		tail = append(tail, l)
		if len(tail) > 20 {
			tail = tail[1:]
		}
	}
	for !got {
		l, open, err := line()
		if err != nil {
			return nil, err
		}
		if !open {
			break
		}
		if st, ok := proto.ParseResult(l, job.Nonce); ok {
			status, got = st, true
			span.SetAttributes(attribute.Int("vmb.exit_status", st))
		} else if strings.HasPrefix(l, proto.ReadyPrefix) {
			if i == 0 {
				span.End()
				_, span = tracing.Tracer().Start(ctx, "job")
			}
		} else {
			logLine(l)
		}
	}
	last := i == len(s.jobs)-1
	if got && status == 0 && (job.Hold || !last) {
		// The VM waits: read what the job wrote, then, after the last job,
		// let it power off (a next job's run lets it go on).
		s.readWritten(ctx, log)
		if last {
			if _, err := fmt.Fprintln(s.p.Stdin, proto.NextLine(job.Nonce)); err != nil {
				return nil, fmt.Errorf("the build VM did not take its last line: %w", err)
			}
		}
	}
	for last && !s.ended {
		l, open, err := line()
		if err != nil {
			return nil, err
		}
		if open {
			logLine(l)
		}
	}
	tailText := strings.Join(tail, "\n")
	switch {
	case !got && strings.Contains(tailText, "Kernel panic"):
		return nil, &JobError{Status: -1, Tail: tailText, Err: errors.New("the build VM's kernel panicked")}
	case !got:
		return nil, &JobError{Status: -1, Tail: tailText, Err: fmt.Errorf("the build VM stopped without a result (%v)", s.werr)}
	case status != 0:
		return nil, &JobError{Status: status, Tail: tailText, Err: fmt.Errorf("exit status %d", status)}
	}
	files := map[string]cas.Digest{}
	if job.Output {
		if err := s.x.readOutputs(s.outDisk, files); err != nil {
			return nil, err
		}
		if _, ok := files[graph.Output(n.Job)]; !ok {
			return nil, &JobError{Status: -1, Err: fmt.Errorf("the job wrote no output %q", graph.Output(n.Job))}
		}
	}
	return files, nil
}

// startTracking makes qemu record the guest's writes to the target disks, and
// starts the paused VM. Where qemu cannot, the VM runs without: the disks are
// read whole after each job.
func (s *session) startTracking(ctx context.Context, log io.Writer) error {
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	mon, err := qemu.DialMonitor(dctx, s.vm.Monitor)
	if err != nil {
		return fmt.Errorf("the build VM's monitor: %w", err)
	}
	s.mon = mon
	drives := make([]int, len(s.names))
	for k := range drives {
		drives[k] = k + 1 // after the job disk
	}
	if err := mon.TrackWrites(drives, trackGranularity, filepath.Join(s.sockDir, "nbd")); err != nil {
		fmt.Fprintf(log, "vmb: qemu does not record writes (%v): the disks are read whole\n", err)
		s.track = false
	}
	return mon.Do("cont", nil, nil)
}

// readWritten reads which ranges of each disk the job that just ended wrote,
// into s.written; where qemu cannot tell, it leaves s.written nil and says so.
func (s *session) readWritten(ctx context.Context, log io.Writer) {
	if !s.track {
		return
	}
	written := map[string][]cas.Extent{}
	for k, name := range s.names {
		ext, err := s.mon.Written(ctx, k+1, s.sizes[k], filepath.Join(s.sockDir, "nbd"))
		if err != nil {
			fmt.Fprintf(log, "vmb: what the job wrote to %s is not known (%v): the disks are read whole\n", name, err)
			s.track = false
			return
		}
		written[name] = make([]cas.Extent, 0, len(ext))
		for _, e := range ext {
			written[name] = append(written[name], cas.Extent{Off: e.Off, Len: e.Len})
		}
	}
	s.written = written
}

// wait waits for the stopped VM.
func (s *session) wait() {
	if !s.ended {
		s.werr = s.p.Wait()
		s.ended = true
	}
}

// close stops the VM if it still runs and waits for it: nothing of the session
// runs after it.
func (s *session) close() {
	if s == nil || s.p == nil || s.ended {
		return
	}
	s.cancel()
	for range s.lines {
	}
	s.wait()
}

// release closes the monitor and removes the sockets; the VM has stopped.
func (s *session) release() {
	if s == nil {
		return
	}
	s.close()
	if s.mon != nil {
		s.mon.Close()
	}
	if s.sockDir != "" {
		os.RemoveAll(s.sockDir)
	}
}

// writeJobDisk writes the job disk: for each job, its job.json then the payload
// of its node (nodes nil: none). It returns how many jobs it holds: a node whose
// payload cannot be made (a source changed since the build began, a fetch that
// fails) ends the disk before it, and err says why.
func (x *Executor) writeJobDisk(ctx context.Context, path string, jobs []*proto.Job, nodes []*graph.Node) (held int, err error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	mtime := time.Unix(proto.Epoch, 0)
	for i, job := range jobs {
		start, _ := f.Seek(0, io.SeekCurrent)
		jb, _ := json.Marshal(job)
		err = tw.WriteHeader(&tar.Header{Name: proto.JobFile, Mode: 0o644, Size: int64(len(jb)), ModTime: mtime, Typeflag: tar.TypeReg})
		if err == nil {
			_, err = tw.Write(jb)
		}
		if err == nil && nodes != nil {
			err = x.addPayload(ctx, tw, nodes[i], filepath.Dir(path), mtime)
		}
		if err == nil {
			err = tw.Flush()
		}
		if err != nil {
			// The disk ends before this job.
			if terr := f.Truncate(start); terr != nil {
				return 0, terr
			}
			f.Seek(start, io.SeekStart)
			tw = tar.NewWriter(f)
			break
		}
		held++
	}
	if cerr := tw.Close(); cerr != nil {
		return 0, cerr
	}
	fi, serr := f.Stat()
	if serr != nil {
		return 0, serr
	}
	if terr := f.Truncate(max(fi.Size(), 1<<20)); terr != nil {
		return 0, terr
	}
	return held, err
}

// addPayload adds what node n's job needs on the job disk, under proto.PayloadSrc.
func (x *Executor) addPayload(ctx context.Context, tw *tar.Writer, n *graph.Node, work string, mtime time.Time) error {
	switch j := n.Job.(type) {
	case *graph.Fetch:
		p, err := x.fetch(ctx, j)
		if err == nil {
			_, err = addTree(tw, p, proto.PayloadSrc, mtime)
		}
		return err
	case *graph.ImageIn:
		p, err := x.flattenImage(ctx, n, j, work)
		if err == nil {
			_, err = addTree(tw, p, proto.PayloadSrc, mtime)
		}
		return err
	}
	if src := n.Job.Uses().Src; src != nil {
		return x.addSrc(tw, n, *src, mtime)
	}
	return nil
}
