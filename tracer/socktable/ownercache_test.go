package socktable

import (
	"net"
	"os"
	"strconv"
	"testing"
	"time"
)

// TestOwnerCache: a second question within MaxAge is answered without a
// scan, and still right; an fd closed since sends it to a scan, which no
// longer finds it; past MaxAge it scans again.
func TestOwnerCache(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ino := inodeOf(t, int(f.Fd()))
	now := time.Unix(1000, 0)
	c := &OwnerCache{MaxAge: 2 * time.Second, now: func() time.Time { return now }}

	first := c.Of(map[uint32]bool{ino: true})[ino]
	if len(first) != 2 {
		t.Fatalf("owners %+v, want this process's two fds", first)
	}
	// Within MaxAge: the cached answer, checked fd by fd.
	now = now.Add(time.Second)
	if k := c.known[ino]; k.at != time.Unix(1000, 0) {
		t.Fatalf("not cached: %+v", c.known)
	}
	if got := c.Of(map[uint32]bool{ino: true})[ino]; len(got) != 2 || c.known[ino].at != time.Unix(1000, 0) {
		t.Fatalf("second answer %+v, cached at %v: want the first scan's", got, c.known[ino].at)
	}
	// One fd closed: the check fails and a scan finds the one left.
	fd := f.Fd()
	f.Close()
	got := c.Of(map[uint32]bool{ino: true})[ino]
	if len(got) != 1 || got[0].FD == int32(fd) || got[0].PID != uint32(os.Getpid()) || c.known[ino].at != now {
		t.Fatalf("after closing fd %d: %+v (cached at %v)", fd, got, c.known[ino].at)
	}
	// Past MaxAge: forgotten, scanned again.
	now = now.Add(2 * time.Second)
	if got := c.Of(map[uint32]bool{ino: true})[ino]; len(got) != 1 || c.known[ino].at != now {
		t.Fatalf("past MaxAge: %+v, cached at %v", got, c.known[ino].at)
	}
}

func inodeOf(t *testing.T, fd int) uint32 {
	t.Helper()
	link, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		t.Fatal(err)
	}
	ino, ok := socketLinkInode([]byte(link))
	if !ok {
		t.Fatalf("fd %d: %q", fd, link)
	}
	return ino
}
