// Command mkdeb builds livefix's Debian packages (make deb):
//
//	go run ./packaging/mkdeb [-o DIR] [-version V]
//
// It prints the path of each package it writes.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/livefix/livefix/packaging"
)

func main() {
	out := flag.String("o", "dist", "directory the .deb files are written to")
	version := flag.String("version", os.Getenv("VERSION"), "package version (default $VERSION, else from git describe)")
	repo := flag.String("C", ".", "the livefix source tree")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: mkdeb [-o DIR] [-version V] [-C DIR]")
		os.Exit(2)
	}
	res, err := packaging.Build(context.Background(), packaging.Options{Repo: *repo, Out: *out, Version: *version, Log: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkdeb:", err)
		os.Exit(1)
	}
	for _, r := range res {
		fmt.Println(r.Path)
	}
}
