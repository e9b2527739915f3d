package pgtest

import (
	"net"
	"net/url"
	"testing"
)

func TestStart(t *testing.T) {
	c := Start(t)
	dsn := c.NewDatabase(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatalf("server not listening at %s: %v", u.Host, err)
	}
	conn.Close()
	if dsn2 := c.NewDatabase(t); dsn2 == dsn {
		t.Fatalf("two databases with one DSN %s", dsn)
	}
}
