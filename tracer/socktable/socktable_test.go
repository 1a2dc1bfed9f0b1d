package socktable

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcptrail/tcptrail/internal/privtest"
	"github.com/tcptrail/tcptrail/internal/testwait"
)

const (
	stateEstablished = 1
	stateListen      = 10
)

// TestDumpLookupOwners asks the real socket table about a real connection.
func TestDumpLookupOwners(t *testing.T) {
	privtest.Require(t) // /proc fd links of every process need root
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	server := netip.MustParseAddrPort(ln.Addr().String())
	client := netip.MustParseAddrPort(c.LocalAddr().String())

	ents, err := DumpFunc(unix.AF_INET, AllStates, func(e *Entry) bool { return e.Local.Port() == server.Port() })
	if err != nil {
		t.Fatal(err)
	}
	var listener, accepted *Entry
	for i := range ents {
		switch {
		case ents[i].State == stateListen:
			listener = &ents[i]
		case ents[i].Remote == client:
			accepted = &ents[i]
		}
	}
	if listener == nil || accepted == nil || len(ents) != 2 {
		t.Fatalf("dump filtered to port %d: %+v", server.Port(), ents)
	}
	if accepted.State != stateEstablished || accepted.Cookie == 0 || accepted.Inode == 0 {
		t.Fatalf("accepted socket: %+v", accepted)
	}

	got, err := Lookup(server, client)
	if err != nil || got == nil || got.Cookie != accepted.Cookie {
		t.Fatalf("lookup of the accepted socket: %+v, %v; want cookie %d", got, err, accepted.Cookie)
	}
	// A four-tuple that does not exist falls back to the listener.
	none := netip.MustParseAddrPort("127.0.0.1:1")
	got, err = Lookup(server, none)
	if err != nil || (got != nil && got.Remote == none) {
		t.Fatalf("lookup of a missing four-tuple: %+v, %v", got, err)
	}

	var fd int32
	raw, _ := s.(*net.TCPConn).SyscallConn()
	raw.Control(func(f uintptr) { fd = int32(f) })
	self, _ := os.ReadFile("/proc/self/comm")
	me := FDOwner{PID: uint32(os.Getpid()), FD: fd, Comm: strings.TrimSpace(string(self))}
	owners := OwnersOf(map[uint32]bool{accepted.Inode: true})[accepted.Inode]
	if len(owners) != 1 || owners[0] != me {
		t.Fatalf("owners of the accepted socket: %+v, want %+v", owners, me)
	}

	// A child that inherits it as its fd 3: two owners.
	f, err := s.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	child := exec.Command("sleep", "30")
	child.ExtraFiles = []*os.File{f}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Wait()
	defer child.Process.Kill()
	var dupFD int32
	fraw, _ := f.SyscallConn()
	fraw.Control(func(x uintptr) { dupFD = int32(x) })
	want := []FDOwner{me, {PID: uint32(os.Getpid()), FD: dupFD, Comm: me.Comm}, {PID: uint32(child.Process.Pid), FD: 3, Comm: "sleep"}}
	testwait.Until(t, 5*time.Second, "the child to hold the socket", func() bool {
		owners = OwnersOf(map[uint32]bool{accepted.Inode: true})[accepted.Inode]
		return len(owners) == 3 && slices.ContainsFunc(owners, func(o FDOwner) bool { return o.Comm == "sleep" })
	})
	for _, w := range want {
		if !slices.Contains(owners, w) {
			t.Fatalf("owners %+v, want %+v", owners, want)
		}
	}
}
