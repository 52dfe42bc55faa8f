// Command vmb-agent runs inside the build VM as PID 1 of the appliance: it reads
// the job from the job disk, runs it, streams its log on the serial console and
// ends with one protocol line carrying the exit status. Installed into a target
// image it is that image's first-run command interface.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "vmb-agent: not yet implemented")
	os.Exit(1)
}
