// Package user holds end-to-end tests of userspace live patching through
// the command-line tools: livefix-build user builds a patch for a real
// open-source library (the SQLite amalgamation, fetched from the Go module
// proxy at test time), and livefix process patches a program using it
// while it runs.
package user
