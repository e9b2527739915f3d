package kbuild

import (
	"context"
	"errors"
	"io"
)

// HeaderUnits exposes headerUnits to the external tests, which take the
// tree lock themselves through BuildPair's callers; here the caller must
// not hold it.
func (tr *Tree) HeaderUnits(ctx context.Context, headers []string, log io.Writer) ([]string, []string, error) {
	if log == nil {
		log = io.Discard
	}
	unlock, err := tr.acquire(ctx, log)
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	return tr.headerUnits(ctx, headers, log)
}

// CompileUnits compiles units of the pristine tree into outDir the way
// BuildPair compiles one side: one make run, as many jobs as CPUs. It is
// the compile floor the header benchmark compares against.
func (tr *Tree) CompileUnits(ctx context.Context, units []string, outDir string) error {
	v, err := tr.openView(ctx, nil, io.Discard)
	if err != nil {
		return err
	}
	v.releaseTree()
	var ts []buildTarget
	for _, u := range units {
		obj := u[:len(u)-len(".c")] + ".o"
		ts = append(ts, buildTarget{src: u, make: obj, dst: outDir + "/" + obj})
	}
	err = tr.buildTargets(ctx, v, ts, "floor", io.Discard)
	return errors.Join(err, v.close(ts))
}
