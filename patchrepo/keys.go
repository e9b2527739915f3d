package patchrepo

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Roles are the TUF top-level roles, in the order keys are made.
var Roles = []string{metadata.ROOT, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP}

// signingKey is one private key of a role.
type signingKey struct {
	id     string
	path   string
	priv   ed25519.PrivateKey
	public *metadata.Key
}

func (k *signingKey) signer() (signature.Signer, error) {
	return signature.LoadED25519Signer(k.priv)
}

// newKey makes an ed25519 key.
func newKey() (*signingKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return keyFromPrivate(priv, pub)
}

func keyFromPrivate(priv ed25519.PrivateKey, pub ed25519.PublicKey) (*signingKey, error) {
	k, err := metadata.KeyFromPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("tuf key: %w", err)
	}
	id, err := k.ID()
	if err != nil {
		return nil, fmt.Errorf("tuf key id: %w", err)
	}
	return &signingKey{id: id, priv: priv, public: k}, nil
}

// writeKey stores k as DIR/KEYID.pem, mode 0600, never overwriting.
func writeKey(dir string, k *signingKey) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("key directory: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		return fmt.Errorf("encode key: %w", err)
	}
	k.path = filepath.Join(dir, k.id+".pem")
	f, err := os.OpenFile(k.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return fmt.Errorf("write key %s: %w", k.path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write key %s: %w", k.path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write key %s: %w", k.path, err)
	}
	return syncDir(dir)
}

// readKeys loads every DIR/*.pem.
func readKeys(dir string) ([]*signingKey, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read keys: %w", err)
	}
	var keys []*signingKey
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".pem") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read key: %w", err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != "PRIVATE KEY" {
			return nil, fmt.Errorf("read key %s: not a PEM private key", p)
		}
		any, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("read key %s: %w", p, err)
		}
		priv, ok := any.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("read key %s: not an ed25519 key", p)
		}
		k, err := keyFromPrivate(priv, priv.Public().(ed25519.PublicKey))
		if err != nil {
			return nil, err
		}
		k.path = p
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].id < keys[j].id })
	return keys, nil
}

// sign signs m with the keys of role that root lists, and checks that the
// threshold is met, so that an incomplete key set fails here and not on
// every host.
func sign[T metadata.Roles](m *metadata.Metadata[T], role string, root *metadata.RootType, keys []*signingKey, keyDir string) error {
	r := root.Roles[role]
	if r == nil {
		return fmt.Errorf("sign %s: root has no such role", role)
	}
	m.ClearSignatures()
	n := 0
	for _, k := range keys {
		listed := false
		for _, id := range r.KeyIDs {
			if id == k.id {
				listed = true
			}
		}
		if !listed {
			continue
		}
		s, err := k.signer()
		if err != nil {
			return fmt.Errorf("sign %s: %w", role, err)
		}
		if _, err := m.Sign(s); err != nil {
			return fmt.Errorf("sign %s: %w", role, err)
		}
		n++
	}
	if n < r.Threshold {
		return fmt.Errorf("sign %s: %d of the role's keys found in %s, its threshold is %d; "+
			"bring the missing keys there (or rotate the role's keys)", role, n, keyDir, r.Threshold)
	}
	return nil
}
