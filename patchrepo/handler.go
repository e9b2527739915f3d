package patchrepo

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"os"
	"path"
	"strings"
	"sync"
	"time"
)

// Handler serves a repository directory (DIR/repository) read-only:
// metadata/ and targets/ below the handler's root. Metadata files are
// kept in memory and carry a strong ETag, so that the agents' frequent
// conditional requests for timestamp.json cost a stat and a 304. Mount it
// with http.StripPrefix to serve it below a path such as /repo/.
func Handler(repoDir string) http.Handler {
	return &handler{dir: repoDir, cache: map[string]*cached{}}
}

type handler struct {
	dir   string
	mu    sync.RWMutex
	cache map[string]*cached
}

type cached struct {
	mod  time.Time
	size int64
	data []byte
	etag string
}

// maxCached bounds a metadata file kept in memory.
const maxCached = 8 << 20

func (h *handler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name := path.Clean("/" + req.URL.Path)
	if strings.Contains(name, "/.") || !(strings.HasPrefix(name, "/metadata/") || strings.HasPrefix(name, "/targets/")) {
		http.NotFound(w, req)
		return
	}
	full := h.dir + name
	fi, err := os.Stat(full)
	if err != nil || !fi.Mode().IsRegular() {
		http.NotFound(w, req)
		return
	}
	if strings.HasPrefix(name, "/metadata/") && fi.Size() <= maxCached {
		c := h.get(name, full, fi)
		if c == nil {
			http.Error(w, "cannot read "+name, http.StatusInternalServerError)
			return
		}
		w.Header().Set("ETag", c.etag)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeContent(w, req, "", c.mod, bytes.NewReader(c.data))
		return
	}
	f, err := os.Open(full)
	if err != nil {
		http.NotFound(w, req)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	// Target files are content-addressed: their names never change content.
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	http.ServeContent(w, req, "", fi.ModTime(), f)
}

func (h *handler) get(name, full string, fi os.FileInfo) *cached {
	h.mu.RLock()
	c := h.cache[name]
	h.mu.RUnlock()
	if c != nil && c.mod.Equal(fi.ModTime()) && c.size == fi.Size() {
		return c
	}
	data, err := os.ReadFile(full)
	if err != nil {
		return nil
	}
	sum := sha256.Sum256(data)
	c = &cached{mod: fi.ModTime(), size: int64(len(data)), data: data, etag: `"` + hex.EncodeToString(sum[:16]) + `"`}
	h.mu.Lock()
	h.cache[name] = c
	h.mu.Unlock()
	return c
}
