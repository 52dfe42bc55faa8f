package main

import (
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// holdPeriod is how often holdClock sets the clock back to the epoch: far less
// than the second the kernel and most programs count time in. Setting the clock is
// not free under emulation: every 5 ms it slowed a shell loop in the build VM by
// about 70%, every 100 ms by 6%.
const holdPeriod = 200 * time.Millisecond

// holdClock keeps the guest clock at epoch while a job runs: a thread of its own,
// scheduled before every other (SCHED_FIFO), sets it back every holdPeriod, so
// that what reads the time to the second reads the epoch whenever it reads it.
//
// A running clock makes a build depend on how fast it runs. ext2/3/4 without a
// journal, as vmb mounts them, do not reuse an inode freed within the last
// minute unless it was freed in the current second (recently_deleted in
// fs/ext4/ialloc.c): whether a file removed and the next one created fall in the
// same second decides the new file's inode number, and so the directory and
// inode table. vmb check found an apt install numbered from there on differently
// in every rebuild. Log lines, archive headers and caches stamped with the time
// are the same whatever the job's pace too.
//
// Time still passes for timeouts and sleeps, which count on the monotonic clock.
// The returned function stops holding; the clock then runs from the epoch.
func holdClock(epoch int64) (release func()) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // the thread dies with the goroutine: its policy goes with it
		attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: 50}
		if err := unix.SchedSetAttr(0, &attr, 0); err != nil {
			fmt.Printf("vmb-agent: hold the clock: no real-time priority: %v\n", err)
		}
		at := unix.Timespec{Sec: epoch}
		tick := time.NewTicker(holdPeriod)
		defer tick.Stop()
		for {
			if err := unix.ClockSettime(unix.CLOCK_REALTIME, &at); err != nil {
				fmt.Printf("vmb-agent: hold the clock: %v\n", err)
				return
			}
			// Woken by release too: a sleep it could not cut short cost every
			// job half a period on average before its result went out.
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return func() {
		close(stop)
		<-done
	}
}
