// Command applybench runs inside the benchmark guest. It times applying a
// live patch two ways, alternately, REPS times each:
//
//	livefix: `livefix kernel load FILE.ko`, start to exit (the command
//	         returns once the transition is complete);
//	insmod:  `insmod FILE.ko`, then polling
//	         /sys/kernel/livepatch/NAME/transition every 1ms until it reads 0.
//
// After each run the patch is removed with `livefix kernel unload` (not
// timed). The kernel finishes a transition that the first attempt could
// not complete from a delayed work rounded to whole seconds, so every run
// starts at the same phase of the uptime second, which keeps the two
// variants comparable. It prints one line per run: "VARIANT NANOSECONDS".
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

func main() {
	ko := flag.String("ko", "", "live patch module")
	name := flag.String("name", "", "its name")
	reps := flag.Int("reps", 5, "runs per variant")
	phase := flag.Duration("phase", 300*time.Millisecond, "start each run at this offset into an uptime second")
	flag.Parse()
	if *ko == "" || *name == "" {
		fmt.Fprintln(os.Stderr, "usage: applybench -ko FILE.ko -name NAME [-reps N]")
		os.Exit(2)
	}
	for i := 0; i < *reps; i++ {
		for _, v := range []string{"livefix", "insmod"} {
			align(*phase)
			d, err := run(v, *ko, *name)
			if err != nil {
				fmt.Fprintf(os.Stderr, "applybench: %s run %d: %v\n", v, i, err)
				os.Exit(1)
			}
			fmt.Printf("%s %d\n", v, d.Nanoseconds())
			if out, err := exec.Command("livefix", "kernel", "unload", *name).CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "applybench: unload: %v\n%s", err, out)
				os.Exit(1)
			}
		}
	}
}

func run(variant, ko, name string) (time.Duration, error) {
	start := time.Now()
	if variant == "livefix" {
		if out, err := exec.Command("livefix", "kernel", "load", ko).CombinedOutput(); err != nil {
			return 0, fmt.Errorf("%v\n%s", err, out)
		}
		return time.Since(start), nil
	}
	if out, err := exec.Command("insmod", ko).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("insmod: %v\n%s", err, out)
	}
	path := "/sys/kernel/livepatch/" + name + "/transition"
	for {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, err
		}
		if bytes.Equal(bytes.TrimSpace(b), []byte("0")) {
			return time.Since(start), nil
		}
		time.Sleep(time.Millisecond)
	}
}

// align sleeps until the next time the uptime's fractional second is at
// phase (10ms resolution, as /proc/uptime has).
func align(phase time.Duration) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return
	}
	up, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return
	}
	now := time.Duration(up * float64(time.Second))
	frac := now % time.Second
	wait := phase - frac
	if wait < 200*time.Millisecond {
		wait += time.Second
	}
	time.Sleep(wait)
}
