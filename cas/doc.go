// Package cas is vmb's content-addressed store: blobs named by the BLAKE3-256 hash
// of their content, disk snapshots made of such blobs, and action records that map
// the key of a job to what it produced. The model is cmd/go's build cache (action
// ID -> output ID); the difference is that outputs are whole disks, stored as chunks
// so that what two disks share is stored once.
//
// # On disk
//
//	<dir>/objects/ab/ab12…   a blob: the zstd frame(s) of its content, named by the
//	                         BLAKE3-256 of the uncompressed content (64 hex digits,
//	                         fanned out by the first two)
//	<dir>/actions/cd/cd34…   an action record: JSON {outputs, log, duration, executor,
//	                         created}, named by the job's key (graph.Key). vmb also
//	                         records each fetched file here, under the hash of
//	                         "vmb fetch <pinned digest>", with the blob as output "file"
//	<dir>/refs/NAME          a ref, a gc root: JSON {outputs, actions}, the blobs
//	                         (snapshots with their chunks) and records it keeps.
//	                         NAME is slash-separated words of a-z 0-9 - _. vmb's:
//	                         refs/appliance (the build VM) and refs/last/<hash> (the
//	                         last build of an image: its preimages, final record and
//	                         output records). Other files there are an older vmb's
//	<dir>/scratch/NAME/      a named place for a user of the cache (Scratch): derived
//	                         or disposable files the store never reads. vmb's:
//	                         fetch/ (fetched files written out for a job),
//	                         appliance-boot/<digest>/ (kernel and initramfs for
//	                         qemu, checked against their blobs on use),
//	                         appliance-work/ (packages the appliance is built from),
//	                         lang/stat-cache.json (digests of local inputs by stat),
//	                         lang/graph/<hash> (compiled graphs: one for each
//	                         repository, executor and tags, with the key it is valid
//	                         under; lang trims what 30 days did not use)
//	<dir>/trim.txt           when the cache last trimmed itself (Trim), in seconds
//	                         since 1970
//	<dir>/tmp/               staging: files are written here and renamed into place
//	<dir>/quarantine/        what verify found corrupt, moved out of the way
//
// Caches written by an older vmb may also hold fetch/, appliance-boot/,
// appliance-work/ and lang/ at the top: nothing reads them any more, and gc removes
// them. gc also removes fetched files written out for jobs (scratch/fetch) an hour
// after their last use; the other scratch places are their owners' to keep.
//
// A disk snapshot is a blob holding a manifest in text:
//
//	vmb-snapshot 1
//	size 10737418240
//	chunk-size 262144
//	0 3f2a…                  one line per chunk that is not all zeros: its byte
//	262144 91bc…             offset and the digest of its content, in offset order
//
// Chunks not listed are zero; each chunk is chunk-size long except the last of the
// disk. The snapshot's digest is the digest of that text, so equal disks (at one
// chunk size) have equal snapshot digests.
//
// # Guarantees
//
// A blob is verified on every read: content that does not hash to its name is an
// error (*CorruptError) naming the digest and the file, never data. A file appears
// under its name only whole: single writes go temp file, fsync, rename; an ingest
// stages its chunks, flushes them with one syncfs, then renames them. An action
// record is written last, after every blob it reaches, so while a record is present
// its blobs are (gc removes records before blobs, verify quarantines a record with
// its corrupt blob). Refs are roots: gc keeps whatever a ref reaches first, whatever
// its age and the budget, and only then the records that fit. The cache trims itself
// (Trim): at most once a day, a solve collects to a budget (DefaultBudget unless
// the user sets one). Writers on many processes or machines may share a directory:
// writing the same blob twice is harmless, and gc leaves files younger than its
// grace period alone. Usage is tracked by mtimes, bumped at most every ten minutes
// so that reads rarely write.
//
// # Remotes
//
// A remote (remote.go) holds the same layout elsewhere: another directory, an HTTP
// server (GET, HEAD, PUT) or an S3 bucket, behind the Backend interface. Push
// uploads blobs, then records (signed with an ed25519 key, sign.go), then refs, and
// never replaces a blob or record; Pull verifies every blob by its name and accepts
// a record only when a trusted key signed it. Remotes is a solve's view: look-ups
// that pull a record's manifests and check by HEAD that the remote has its chunks,
// which Store.SetFetch brings in when a disk is materialized; such a record enters
// the store only once the store has all it reaches, so the invariant above holds.
//
// cas imports nothing of vmb's but internal/atomicfile, a leaf of the standard
// library's kind: the one way vmb writes a file atomically.
package cas
