// Command lockholder takes the livefix state lock through hoststate, the
// code every livefix command uses, and holds it until a release file
// appears, so that a test can run a second livefix against a held lock
// without racing a real command's duration:
//
//	lockholder STATE-DIR HELD-FILE RELEASE-FILE
//
// It creates HELD-FILE once the lock is held (and its pid written into
// the lock file, as livefix does), waits for RELEASE-FILE, then unlocks.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/livefix/livefix/hoststate"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: lockholder STATE-DIR HELD-FILE RELEASE-FILE")
		os.Exit(2)
	}
	l, err := hoststate.Open(os.Args[1]).Lock(context.Background(), 10*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lockholder:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(os.Args[2], nil, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "lockholder:", err)
		os.Exit(1)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(os.Args[3]); err == nil {
			break
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, "lockholder: no release file after 2 minutes")
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := l.Unlock(); err != nil {
		fmt.Fprintln(os.Stderr, "lockholder:", err)
		os.Exit(1)
	}
}
