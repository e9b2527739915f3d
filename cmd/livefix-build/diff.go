package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/livefix/livefix/elfobj"
	"github.com/livefix/livefix/internal/cli"
	"github.com/livefix/livefix/objdiff"
)

const diffUsage = `usage: livefix-build diff ORIG.o PATCHED.o [--json] [-o OUT.o] [-v] [--explain]

Compares one translation unit compiled before (ORIG.o) and after
(PATCHED.o) a source patch, both with -ffunction-sections -fdata-sections,
and reports the functions that changed, what is new, and what cannot be
live patched. With -o, writes the parts a live patch must carry. With
--explain, says per symbol what was decided and why.

exit status: 0 patchable changes, 3 something refused, 4 no functional
change, 2 bad input.`

func runDiff(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("diff", diffUsage, stderr)
	asJSON := fs.Bool("json", false, "print the change set as one JSON object")
	out := fs.String("o", "", "write the included parts to this relocatable object")
	verbose := fs.Bool("v", false, "say why each function counts as changed")
	explain := fs.Bool("explain", false, "print every decision per symbol: changed, escalated, new, copied, line-only, refused")
	pos, err := cli.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		return exitBadInput
	}
	if len(pos) != 2 {
		fmt.Fprintln(stderr, "livefix-build diff: need exactly two objects, ORIG.o and PATCHED.o (see --help)")
		return exitBadInput
	}
	orig, err := elfobj.Open(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "livefix-build diff: %v\n", err)
		return exitBadInput
	}
	patched, err := elfobj.Open(pos[1])
	if err != nil {
		fmt.Fprintf(stderr, "livefix-build diff: %v\n", err)
		return exitBadInput
	}
	res, err := objdiff.Diff(orig, patched, objdiff.Options{})
	if err != nil {
		fmt.Fprintf(stderr, "livefix-build diff %s: %v\n", pos[1], err)
		return exitFailure
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		if err := enc.Encode(res.ChangeSet); err != nil {
			fmt.Fprintf(stderr, "livefix-build diff: %v\n", err)
			return exitFailure
		}
	} else if *explain {
		if err := objdiff.WriteExplanation(stdout, pos[1], res); err != nil {
			fmt.Fprintf(stderr, "livefix-build diff: %v\n", err)
			return exitFailure
		}
	} else {
		printChangeSet(stdout, res, *verbose)
	}
	switch {
	case len(res.Refused) > 0:
		return exitRefused
	case res.NoFunctionalChange:
		return exitNoChange
	}
	if *out != "" {
		if err := res.Output.WriteFile(*out); err != nil {
			fmt.Fprintf(stderr, "livefix-build diff: write %s: %v\n", *out, err)
			return exitFailure
		}
	}
	return exitOK
}

func printChangeSet(w io.Writer, res *objdiff.Result, verbose bool) {
	if res.NoFunctionalChange {
		fmt.Fprintln(w, "no functional change")
		return
	}
	why := make(map[string]string)
	for _, f := range res.Funcs {
		why[f.Name] = f.Reason
	}
	list := func(label string, names []string, detail bool) {
		if len(names) == 0 {
			return
		}
		if !detail || !verbose {
			fmt.Fprintf(w, "%-10s %s\n", label+":", strings.Join(names, ", "))
			return
		}
		fmt.Fprintf(w, "%s:\n", label)
		for _, n := range names {
			fmt.Fprintf(w, "  %s: %s\n", n, why[n])
		}
	}
	list("changed", res.Changed, true)
	list("new", res.New, false)
	list("new data", res.NewData, false)
	for _, r := range res.Refused {
		fmt.Fprintf(w, "refused:   %s: %s\n", r.Symbol, r.Reason)
	}
}
