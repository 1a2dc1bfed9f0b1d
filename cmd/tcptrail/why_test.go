package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tcptrail/tcptrail/internal/privtest"
)

// TestWhy asks who holds an address: a socket left in CLOSE_WAIT by this
// process, a listener, and an address nobody holds.
func TestWhy(t *testing.T) {
	privtest.Require(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:17301")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	closed := time.Now()
	srv.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil { // EOF: the peer's FIN is in, c is in CLOSE_WAIT
		t.Fatal(err)
	}
	var fd int
	raw, _ := c.(*net.TCPConn).SyscallConn()
	raw.Control(func(f uintptr) { fd = int(f) })
	local := netip.MustParseAddrPort(c.LocalAddr().String())

	r := runBinary(t, exec.Command(binary, "why", local.String()))
	since := time.Since(closed)
	owner := fmt.Sprintf("[%d] fd %d", os.Getpid(), fd)
	m := regexp.MustCompile(regexp.QuoteMeta(local.String()+" → 127.0.0.1:17301 is in CLOSE_WAIT for at least ") + `(\S+), held by `).FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil || !strings.Contains(r.stdout, owner) || !strings.Contains(r.stdout, fmt.Sprintf("never called close(fd %d)", fd)) {
		t.Fatalf("why %s: exit %d\n%s%s\nwant the CLOSE_WAIT socket, how long at least, held by %s", local, r.code, r.stdout, r.stderr, owner)
	}
	// The kernel counts in jiffies (at least 1 ms each, at most 10 ms).
	if d, err := time.ParseDuration(m[1]); err != nil || d > since+10*time.Millisecond {
		t.Errorf("why says CLOSE_WAIT for at least %s, but the peer closed %v ago", m[1], since)
	}

	r = runBinary(t, exec.Command(binary, "why", "17301", "--json"))
	states := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var h struct {
			State string `json:"state"`
			NetNS uint32 `json:"netns"`
			Why   string `json:"why"`
		}
		if err := json.Unmarshal([]byte(line), &h); err != nil {
			t.Fatalf("why --json: %q: %v", line, err)
		}
		if h.NetNS == 0 || h.Why == "" {
			t.Errorf("why --json: %q has no namespace or no reason", line)
		}
		states[h.State] = true
	}
	if r.code != 0 || !states["LISTEN"] {
		t.Errorf("why 17301 --json: exit %d, states %v, want the listener\n%s", r.code, states, r.stderr)
	}

	if r := runBinary(t, exec.Command(binary, "why", "127.0.0.1:17302")); r.code != 1 || !strings.Contains(r.stdout, "nothing holds") {
		t.Errorf("why of a free address: exit %d, %q", r.code, r.stdout)
	}
	for _, bad := range [][]string{{"why"}, {"why", "0"}, {"why", "65536"}, {"why", "localhost:80"}, {"why", "1", "2"}} {
		if r := runBinary(t, exec.Command(binary, bad...)); r.code != 2 || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%v: exit %d, stderr %q: want one line and status 2", bad, r.code, r.stderr)
		}
	}
}
