// Package proto is the wire protocol between the host (vmexec) and the agent that
// runs inside the build VM (cmd/vmb-agent): the job the host writes on the job
// disk, and the lines the agent writes on the serial console.
//
// The host passes only virtual disks and reads only the serial console:
//
//	/dev/vda   the job disk: a tar stream holding job.json (JobFile), then the
//	           payload under src (PayloadSrc: the file or tree a copy-in, tar-in
//	           or fetch needs)
//	/dev/vdb…  the target disks, in the order of Job.Disks
//	last       the output disk, if Job.Output is set: the agent writes a tar stream
//	           of the job's output files onto it
//
// The agent streams the job's log on the console and ends with exactly one line
// "VMB-RESULT <nonce> <exit status>", the nonce being the job's, so that nothing a
// job prints can be taken for a result. Lines "VMB-READY <nonce>" (the agent has
// started) and "VMB-ERROR <nonce> <message>" (the agent could not run the job) are
// the only other protocol lines.
//
// A job disk may hold several jobs, each job.json followed by its payload: a
// chain, run in one boot. After a job that another follows, and that succeeded,
// the agent has unmounted and synced the target disks when it says the result,
// and then waits for the host to read them: it runs the next job when the host
// writes the line "VMB-NEXT <nonce>" (NextLine, the nonce of the job that ended)
// on the console. After the last job, or one that failed, it powers off; after
// the last with Job.Hold set, once the host has written that line.
package proto

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"lukechampine.com/blake3"
)

// Version is the protocol version; it is part of the executor identity, so it
// enters every key. Change it whenever the agent's behaviour changes.
//
// 2: identifiers (filesystem UUIDs and serials, image format IDs) derived by
// Derive, the same in the agent and in exports.
// 3: the guest clock stands at the epoch while a job runs; ext2/3/4 place every
// file by the stream goal (mb_stream_req 0).
//
// 4: a job disk holds a chain of jobs, run one after another in one boot, the
// agent waiting for the host (NextLine) after each; Job.Hold. The bytes a job
// leaves are those of 3.
const Version = 4

// Epoch is the time every build's guest clock and SOURCE_DATE_EPOCH say
// (2020-01-01T00:00:00Z). Changing it changes Version.
const Epoch = 1577836800

// Names on the job disk.
const (
	JobFile    = "job.json"
	PayloadSrc = "src"
)

// Job is job.json on the job disk.
type Job struct {
	Nonce string `json:"nonce"`
	// Kind is the graph job kind; Params its parameters as graph encodes them.
	Kind   string          `json:"kind"`
	Params json.RawMessage `json:"params"`
	// Disks names the target disks, attached as /dev/vdb, /dev/vdc, ... in this order.
	Disks []string `json:"disks"`
	// Output is set when the job writes output files: the agent writes them as a
	// tar stream onto the last disk.
	Output bool `json:"output,omitempty"`
	// Epoch is the time, in seconds since 1970, that the guest clock is set to and
	// that SOURCE_DATE_EPOCH says.
	Epoch int64 `json:"epoch"`
	// Seed is a hex string derived from the node's key, from which filesystem UUIDs
	// and hash seeds are made.
	Seed string `json:"seed"`
	// Hold makes the agent wait for the host's NextLine after the job, when it
	// succeeded, even if no job follows (it then powers off): the host reads from
	// qemu which ranges the job wrote while the VM still runs.
	Hold bool `json:"hold,omitempty"`
	// Booted, when set, ends a boot-mode run (Kind and Params are the run): the
	// disk the target booted from is attached read-only right after the target
	// disks, and the agent carries what the boot changed over to the run's disk
	// as it was before the boot (see Booted).
	Booted *Booted `json:"booted,omitempty"`
	// Shell, when set, is a debugging session (vmb shell): the agent mounts every
	// filesystem of the target disks under /mnt/target and runs an interactive shell
	// on the console instead of the job. Kind and Params, if set, are the step the
	// session stands before: the agent prepares what that step would use and says
	// where it is.
	Shell bool `json:"shell,omitempty"`
	// Rows, Cols and Term describe the user's terminal in a shell session.
	Rows int    `json:"rows,omitempty"`
	Cols int    `json:"cols,omitempty"`
	Term string `json:"term,omitempty"`
}

// Booted says how to carry a boot-mode run's changes over: the root filesystem
// file by file, except the paths that match Exclude (filepath.Match patterns of
// absolute paths in the target, a directory with its tree) and those listed in
// the booted root's MadeList; the rest of the disk block by block.
type Booted struct {
	Exclude []string `json:"exclude"`
}

// MadeList is the file, in a booted target's root, that lists what vmb made in it
// for the boot (one absolute path a line): the unit, and the directories it
// created for it.
const MadeList = "/var/lib/vmb-boot/made"

// Derive returns n bytes for the identifier named what, derived from seed (a
// node's key): the one derivation of every UUID, serial and signature vmb writes,
// so that the same node makes the same identifiers on every machine.
func Derive(seed, what string, n int) []byte {
	h := blake3.New(n, nil)
	h.Write([]byte("vmb " + what + "\x00" + seed))
	return h.Sum(nil)
}

// DeriveUUID returns a version 4 (random-looking) UUID derived as Derive does, in
// the byte order it is written.
func DeriveUUID(seed, what string) []byte {
	u := Derive(seed, what, 16)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

// Result lines.
const (
	ReadyPrefix  = "VMB-READY "
	ResultPrefix = "VMB-RESULT "
	ErrorPrefix  = "VMB-ERROR "
)

// NextPrefix starts the line the host writes to let the agent run the next job.
const NextPrefix = "VMB-NEXT "

// NextLine is the line that lets the agent run the job after the one with nonce.
func NextLine(nonce string) string { return NextPrefix + nonce }

// ResultLine is the line that ends a job.
func ResultLine(nonce string, status int) string {
	return fmt.Sprintf("%s%s %d", ResultPrefix, nonce, status)
}

// ParseResult reads a result line; ok is false if line is not one for nonce.
func ParseResult(line, nonce string) (status int, ok bool) {
	rest, found := strings.CutPrefix(strings.TrimRight(line, "\r\n"), ResultPrefix+nonce+" ")
	if !found {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	return n, err == nil
}
