// Command dashget logs in to a livefix-server dashboard as an operator,
// the way a browser does (the login form's CSRF token and cookie, then
// the session cookie), and prints the HTML of one page:
//
//	dashget URL USER PASSWORD-FILE PATH
//
// The VM test runs it inside the guest to read the dashboard over the
// guest's loopback. It exits non-zero, saying why, when the login is
// refused or the page does not answer 200.
package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strings"
)

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: dashget URL USER PASSWORD-FILE PATH")
		os.Exit(2)
	}
	base, user, pwFile, path := strings.TrimRight(os.Args[1], "/"), os.Args[2], os.Args[3], os.Args[4]
	pw, err := os.ReadFile(pwFile)
	if err != nil {
		fail("%v", err)
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	page := fetch(c, "GET", base+"/login", nil)
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		fail("no CSRF token in the login page")
	}
	page = fetch(c, "POST", base+"/login", url.Values{"csrf": {m[1]}, "user": {user},
		"password": {strings.TrimRight(string(pw), "\n")}, "next": {path}})
	if strings.Contains(page, `class="error"`) {
		fail("login refused:\n%s", page)
	}
	fmt.Print(fetch(c, "GET", base+path, nil))
}

func fetch(c *http.Client, method, u string, form url.Values) string {
	var resp *http.Response
	var err error
	if method == "POST" {
		resp, err = c.PostForm(u, form)
	} else {
		resp, err = c.Get(u)
	}
	if err != nil {
		fail("%v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		fail("%s %s: %v", method, u, err)
	}
	if resp.StatusCode != http.StatusOK {
		fail("%s %s: %s\n%s", method, u, resp.Status, b)
	}
	return string(b)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "dashget: "+format+"\n", args...)
	os.Exit(1)
}
