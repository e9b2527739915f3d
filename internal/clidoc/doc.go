// Package clidoc turns the help text livefix's programs print (through
// internal/cli: a "usage:" synopsis, description paragraphs, a
// "commands:" list, an "options:" list in the flag package's format)
// into a command tree, and renders that tree as a man page and as a bash
// completion script.
//
// The tree is read from the built programs themselves (Walk runs
// "PROG [SUBCOMMAND...] --help" for every command it finds), so the
// documentation shipped in the packages is the help the binaries print,
// never a copy maintained by hand.
package clidoc
