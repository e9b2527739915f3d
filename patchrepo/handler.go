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
	"sync/atomic"
	"syscall"
	"time"
)

// Handler serves a repository directory (DIR/repository) read-only:
// metadata/ and targets/ below the handler's root. Metadata files are
// kept in memory and carry a strong ETag, so that the agents' frequent
// conditional requests for timestamp.json cost a stat and a 304. Mount it
// with http.StripPrefix to serve it below a path such as /repo/.
func Handler(repoDir string) http.Handler { return NewHandler(repoDir, HandlerOptions{}) }

// HandlerOptions tune NewHandler.
type HandlerOptions struct {
	// Revalidate is how long a conditional request (an agent's poll,
	// If-None-Match) may be answered from memory without checking the
	// file again; 0 checks it at every request. A publish then reaches
	// polls at most this much later; requests without If-None-Match (the
	// agents' verified refresh) always see the current file.
	Revalidate time.Duration
}

// NewHandler is Handler with options.
func NewHandler(repoDir string, o HandlerOptions) http.Handler {
	return &handler{dir: repoDir, revalidate: o.Revalidate, cache: map[string]*cached{}, now: sinceStart}
}

type handler struct {
	dir        string
	revalidate time.Duration
	mu         sync.RWMutex
	cache      map[string]*cached
	now        func() int64 // monotonic ns (tests replace it)
}

type cached struct {
	mod  time.Time
	size int64
	// id is the file's identity beyond mtime and size, which a rewrite
	// within one tick of the file-time clock (4 ms at HZ=250) to the same
	// length keeps: the inode (the repository renames a new file over
	// each metadata file, so each version has its own) and the change
	// time.
	id   fileID
	data []byte
	etag string
	// Header values, made once: a 304 allocates nothing for them.
	etagHdr []string
	checked atomic.Int64 // when the file was last found unchanged (ns since start)
}

// maxCached bounds a metadata file kept in memory.
const maxCached = 8 << 20

var (
	start           = time.Now()
	jsonType        = []string{"application/json"}
	noCache         = []string{"no-cache"}
	immutable       = []string{"public, max-age=31536000, immutable"}
	octetStreamType = []string{"application/octet-stream"}
)

func sinceStart() int64 { return int64(time.Since(start)) }

type fileID struct {
	dev, ino uint64
	ctime    int64
}

func idOf(fi os.FileInfo) fileID {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}
	}
	return fileID{uint64(st.Dev), st.Ino, st.Ctim.Nano()}
}

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
	inm := req.Header["If-None-Match"]
	if strings.HasPrefix(name, "/metadata/") && len(inm) == 1 && h.revalidate > 0 {
		// A poll: answered from memory when the file was seen unchanged
		// within the revalidation time.
		h.mu.RLock()
		c := h.cache[name]
		h.mu.RUnlock()
		if c != nil && h.now()-c.checked.Load() < int64(h.revalidate) {
			h.serveMetadata(w, req, c, inm)
			return
		}
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
		h.serveMetadata(w, req, c, inm)
		return
	}
	f, err := os.Open(full)
	if err != nil {
		http.NotFound(w, req)
		return
	}
	defer f.Close()
	hdr := w.Header()
	hdr["Content-Type"] = octetStreamType
	// Target files are content-addressed: their names never change content.
	hdr["Cache-Control"] = immutable
	http.ServeContent(w, req, "", fi.ModTime(), f)
}

// serveMetadata answers from a cached metadata file: 304 at once when the
// request names exactly its ETag, else through http.ServeContent (ranges,
// other preconditions, HEAD).
func (h *handler) serveMetadata(w http.ResponseWriter, req *http.Request, c *cached, inm []string) {
	hdr := w.Header()
	hdr["Etag"] = c.etagHdr
	hdr["Cache-Control"] = noCache
	if len(inm) == 1 && inm[0] == c.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	hdr["Content-Type"] = jsonType
	http.ServeContent(w, req, "", c.mod, bytes.NewReader(c.data))
}

func (h *handler) get(name, full string, fi os.FileInfo) *cached {
	h.mu.RLock()
	c := h.cache[name]
	h.mu.RUnlock()
	if c != nil && c.mod.Equal(fi.ModTime()) && c.size == fi.Size() && c.id == idOf(fi) {
		c.checked.Store(h.now())
		return c
	}
	data, err := os.ReadFile(full)
	if err != nil {
		return nil
	}
	sum := sha256.Sum256(data)
	etag := `"` + hex.EncodeToString(sum[:16]) + `"`
	c = &cached{mod: fi.ModTime(), size: int64(len(data)), id: idOf(fi), data: data, etag: etag, etagHdr: []string{etag}}
	c.checked.Store(h.now())
	h.mu.Lock()
	h.cache[name] = c
	h.mu.Unlock()
	return c
}
