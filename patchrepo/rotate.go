package patchrepo

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// RotateOptions configure Rotate.
type RotateOptions struct {
	// RootKeysDir holds the current root keys (default DIR/keys/root);
	// new root keys are written there too.
	RootKeysDir string
	Keys        int // new keys for the role (default: as many as now)
	Threshold   int // new threshold (default: unchanged, capped at Keys)
}

// RotateResult names the keys Rotate replaced and made.
type RotateResult struct {
	Role        string   `json:"role"`
	OldKeys     []string `json:"old_keys"`
	NewKeys     []string `json:"new_keys"`
	Threshold   int      `json:"threshold"`
	RootVersion int64    `json:"root_version"`
}

// Rotate replaces every key of role with new ones: a new root version
// (signed by the current root keys and, for the root role, by the new
// ones too) lists them, and the role's metadata and everything below it
// is re-signed. Hosts follow the root chain on their next update. The old
// private keys move to DIR/keys/retired.
func (r *Repo) Rotate(role string, o RotateOptions) (*RotateResult, error) {
	if !slices.Contains(Roles, role) {
		return nil, fmt.Errorf("rotate: unknown role %q; want one of %v", role, Roles)
	}
	rootDir := o.RootKeysDir
	if rootDir == "" {
		rootDir = r.keyDir(metadata.ROOT)
	}
	var res *RotateResult
	err := r.update(func(tx *txn) (err error) {
		res, err = r.rotate(tx, role, rootDir, o)
		return err
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// rotate is Rotate's change of the metadata in force.
func (r *Repo) rotate(tx *txn, role, rootDir string, o RotateOptions) (*RotateResult, error) {
	st := tx.st
	rootKeys, err := readKeys(rootDir)
	if err != nil {
		return nil, err
	}
	online, err := tx.onlineKeys()
	if err != nil {
		return nil, err
	}
	root := &st.root.Signed
	cur := root.Roles[role]
	res := &RotateResult{Role: role, OldKeys: slices.Clone(cur.KeyIDs)}
	n := o.Keys
	if n == 0 {
		n = len(cur.KeyIDs)
	}
	t := o.Threshold
	if t == 0 {
		t = min(cur.Threshold, n)
	}
	if n < 1 || t < 1 || t > n {
		return nil, fmt.Errorf("rotate %s: threshold %d of %d keys; want 1 <= threshold <= keys", role, t, n)
	}
	// The new root must verify with the current root's keys: check that
	// we hold enough of them before changing anything.
	oldRoot := *st.root
	if err := sign(&oldRoot, metadata.ROOT, root, rootKeys, rootDir); err != nil {
		return nil, fmt.Errorf("rotate %s: the current root keys are needed (--root-keys DIR): %w", role, err)
	}
	dir := r.keyDir(role)
	if role == metadata.ROOT {
		dir = rootDir
	}
	var fresh []*signingKey
	for range n {
		k, err := newKey()
		if err != nil {
			return nil, err
		}
		fresh = append(fresh, k)
	}
	for _, id := range res.OldKeys {
		if err := root.RevokeKey(id, role); err != nil {
			return nil, fmt.Errorf("rotate %s: %w", role, err)
		}
	}
	for _, k := range fresh {
		if err := root.AddKey(k.public, role); err != nil {
			return nil, fmt.Errorf("rotate %s: %w", role, err)
		}
		res.NewKeys = append(res.NewKeys, k.id)
	}
	root.Roles[role].Threshold = t
	res.Threshold = t
	root.Version++
	root.Expires = r.now().Add(r.settings.lifetime(metadata.ROOT))
	// Signed by the old root keys (the chain) and, for a root rotation,
	// by the new ones (the new root's own threshold).
	st.root.ClearSignatures()
	for _, k := range rootKeys {
		s, err := k.signer()
		if err != nil {
			return nil, err
		}
		if _, err := st.root.Sign(s); err != nil {
			return nil, fmt.Errorf("rotate %s: sign root: %w", role, err)
		}
	}
	if role == metadata.ROOT {
		for _, k := range fresh {
			s, err := k.signer()
			if err != nil {
				return nil, err
			}
			if _, err := st.root.Sign(s); err != nil {
				return nil, fmt.Errorf("rotate root: sign root: %w", err)
			}
		}
	}
	// Keys first (a crash after this leaves extra keys, never a root that
	// names keys we do not have).
	for _, k := range fresh {
		if err := writeKey(dir, k); err != nil {
			return nil, err
		}
	}
	if err := r.writeRoot(st.root); err != nil {
		return nil, err
	}
	res.RootVersion = root.Version
	retired := filepath.Join(r.Dir, "keys", "retired")
	if err := os.MkdirAll(retired, 0o700); err != nil {
		return nil, fmt.Errorf("rotate %s: %w", role, err)
	}
	old := rootKeys
	if role != metadata.ROOT {
		old = online[role]
	}
	for _, k := range old {
		if slices.Contains(res.OldKeys, k.id) {
			if err := os.Rename(k.path, filepath.Join(retired, role+"-"+k.id+".pem")); err != nil {
				return nil, fmt.Errorf("rotate %s: retire key: %w", role, err)
			}
		}
	}
	if role != metadata.ROOT {
		online[role] = fresh
	}
	tx.write, tx.targets = true, true
	return res, nil
}
