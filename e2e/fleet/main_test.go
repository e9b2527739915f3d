// Package fleet holds the fleet server's end-to-end tests: the real
// livefix-server and livefix programs, a throwaway PostgreSQL shared by
// two serve processes, and headless Chromium driving the dashboard.
package fleet

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/livefix/livefix/internal/e2etest"
)

// tools builds livefix-server and livefix once for the package and
// returns the directory holding them.
func tools(t testing.TB) string { return e2etest.Build(t, "livefix-server", "livefix") }

func TestMain(m *testing.M) { os.Exit(e2etest.Main(m)) }

// run runs a built program and returns its standard output.
func run(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(tools(t), name), args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// serve starts `livefix-server serve` and waits until it answers.
func serve(t *testing.T, args ...string) string {
	t.Helper()
	addr := freeAddr(t)
	var logs bytes.Buffer
	cmd := exec.Command(filepath.Join(tools(t), "livefix-server"), append([]string{"serve", "--listen", addr}, args...)...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("serve %s log:\n%s", addr, logs.String())
		}
	})
	url := "http://" + addr
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve on %s did not come up:\n%s", addr, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "PLAIN HTTP") {
		t.Errorf("serve without TLS did not warn about plain HTTP:\n%s", logs.String())
	}
	return url
}

var keyRE = regexp.MustCompile(`lfo_[A-Za-z0-9_-]+`)

func orgKey(t *testing.T, out string) string {
	k := keyRE.FindString(out)
	if k == "" {
		t.Fatalf("no key in %q", out)
	}
	return k
}

// get fetches a page with the client (nil: http.DefaultClient).
func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// postForm posts a form and returns the status and page.
func postForm(t *testing.T, c *http.Client, url string, v map[string][]string) (int, string) {
	t.Helper()
	resp, err := c.PostForm(url, v)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var _ = context.Background
