package kbuild

import (
	"context"
	"io"
)

// HeaderUnits exposes headerUnits to the external tests, which take the
// tree lock themselves through BuildPair's callers; here the caller must
// not hold it.
func (tr *Tree) HeaderUnits(ctx context.Context, headers []string, log io.Writer) ([]string, []string, error) {
	unlock, err := tr.acquire(ctx, log)
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	return tr.headerUnits(ctx, headers, log)
}
