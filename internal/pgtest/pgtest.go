// Package pgtest starts a throwaway PostgreSQL cluster for tests: initdb
// into a temporary directory, a server listening on loopback only (its
// unix socket in the same directory), run as an unprivileged user.
//
// Without the PostgreSQL binaries (Debian's postgresql package, installed
// by `make setup`) a test skips and says why; with LIVEFIX_REQUIRE_VM=1
// (set by `make test`, hence CI) it fails instead, so CI cannot pass by
// skipping the database tests.
package pgtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/kerneltest"
)

// Cluster is a running throwaway PostgreSQL server.
type Cluster struct {
	dir  string
	port int
	bin  string
	cred *syscall.Credential
	mu   sync.Mutex
	dbs  int
}

// binDir finds the directory holding initdb and pg_ctl: the newest
// /usr/lib/postgresql/*/bin (Debian keeps them off PATH), else PATH.
func binDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err == nil {
			return d, nil
		}
	}
	p, err := exec.LookPath("pg_ctl")
	if err != nil {
		return "", fmt.Errorf("PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or on PATH; run `make setup` (Debian package postgresql)")
	}
	return filepath.Dir(p), nil
}

// Start starts a cluster for the test (and its subtests) and stops it and
// removes its files when the test ends. It runs with fsync off: tests
// need no durability across a power cut.
func Start(t testing.TB) *Cluster { return start1(t, false) }

// StartDurable is Start with PostgreSQL's default fsync and
// synchronous_commit, for benchmarks of persisted writes.
func StartDurable(t testing.TB) *Cluster { return start1(t, true) }

func start1(t testing.TB, durable bool) *Cluster {
	t.Helper()
	c, err := start(durable)
	if err != nil {
		if kerneltest.Required() {
			t.Fatalf("pgtest: %v", err)
		}
		t.Skipf("pgtest: cannot start PostgreSQL: %v", err)
	}
	t.Cleanup(c.stop)
	return c
}

func start(durable bool) (*Cluster, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	c := &Cluster{bin: bin}
	// The temp dir may sit below a directory the unprivileged user cannot
	// enter, so the cluster gets its own directory under /tmp.
	c.dir, err = os.MkdirTemp("", "livefix-pg-")
	if err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root: run it as the postgres system
		// user (created by the package) or nobody.
		var u *user.User
		for _, name := range []string{"postgres", "nobody"} {
			if u, err = user.Lookup(name); err == nil {
				break
			}
		}
		if u == nil {
			return nil, fmt.Errorf("running as root and neither user postgres nor nobody exists")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(c.dir, uid, gid); err != nil {
			return nil, err
		}
	}
	if err := os.Chmod(c.dir, 0o700); err != nil {
		return nil, err
	}
	data := filepath.Join(c.dir, "data")
	if out, err := c.run("initdb", "-D", data, "-A", "trust", "-U", "livefix", "-E", "UTF8", "--no-sync", "--no-instructions"); err != nil {
		os.RemoveAll(c.dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	for attempt := 0; ; attempt++ {
		c.port, err = freePort()
		if err != nil {
			return nil, err
		}
		opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c max_connections=200", c.port, c.dir)
		if !durable {
			opts += " -c fsync=off"
		}
		out, err := c.run("pg_ctl", "-D", data, "-l", filepath.Join(c.dir, "log"), "-o", opts, "-w", "-t", "60", "start")
		if err == nil {
			break
		}
		if attempt == 2 {
			log, _ := os.ReadFile(filepath.Join(c.dir, "log"))
			os.RemoveAll(c.dir)
			return nil, fmt.Errorf("pg_ctl start: %v\n%s\n%s", err, out, log)
		}
	}
	return c, nil
}

func (c *Cluster) run(tool string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(c.bin, tool), args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

func (c *Cluster) stop() {
	c.run("pg_ctl", "-D", filepath.Join(c.dir, "data"), "-m", "immediate", "-w", "stop")
	os.RemoveAll(c.dir)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// NewDatabase creates a new empty database in the cluster and returns its
// DSN (postgres://...), so that each test starts from nothing.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	c.mu.Lock()
	c.dbs++
	name := fmt.Sprintf("db%d_%d", c.dbs, time.Now().UnixNano()%1e6)
	c.mu.Unlock()
	if out, err := c.run("createdb", "-h", "127.0.0.1", "-p", strconv.Itoa(c.port), "-U", "livefix", name); err != nil {
		t.Fatalf("pgtest: createdb: %v\n%s", err, out)
	}
	return fmt.Sprintf("postgres://livefix@127.0.0.1:%d/%s?sslmode=disable", c.port, name)
}

// CPU returns the CPU time (user and system) the server's processes have
// used so far: the postmaster with its reaped children, and every live
// backend and auxiliary process. Benchmarks subtract two readings to
// charge PostgreSQL's own work to what they measure.
func (c *Cluster) CPU() (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(c.dir, "data", "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("postgres cpu: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		return 0, fmt.Errorf("postgres cpu: postmaster.pid: %w", err)
	}
	// Fields after the command's closing parenthesis: state is field 3;
	// ppid 4, utime 14, stime 15, cutime 16, cstime 17 (proc(5)).
	stat := func(p string) []string {
		b, err := os.ReadFile(filepath.Join("/proc", p, "stat"))
		if err != nil {
			return nil
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			return nil
		}
		return append([]string{p, ""}, strings.Fields(string(b[i+1:]))...)
	}
	ticks := func(f []string, idx ...int) int64 {
		var n int64
		for _, i := range idx {
			if i < len(f) {
				v, _ := strconv.ParseInt(f[i-1], 10, 64)
				n += v
			}
		}
		return n
	}
	var total int64
	if f := stat(strconv.Itoa(pid)); f != nil {
		total += ticks(f, 14, 15, 16, 17)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("postgres cpu: %w", err)
	}
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		if f := stat(e.Name()); len(f) > 4 && f[3] == strconv.Itoa(pid) {
			total += ticks(f, 14, 15)
		}
	}
	// USER_HZ is 100 on every Linux architecture Debian ships.
	return time.Duration(total) * 10 * time.Millisecond, nil
}
