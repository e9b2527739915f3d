// Command hostbench runs a command in the guest and prints its wall time,
// peak resident set size and exit status on one line:
//
//	hostbench LABEL CMD [ARGS...]
//	LABEL wall_ns=N maxrss_kib=N rc=N
//
// The child is started with vfork semantics (os/exec), so ru_maxrss is
// the child's own peak, not inherited from this process.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: hostbench LABEL CMD [ARGS...]")
		os.Exit(2)
	}
	cmd := exec.Command(os.Args[2], os.Args[3:]...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	rc := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		rc = ee.ExitCode()
	} else if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	fmt.Printf("%s wall_ns=%d maxrss_kib=%d rc=%d\n", os.Args[1], wall.Nanoseconds(), ru.Maxrss, rc)
}
