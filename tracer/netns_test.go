package tracer_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tcptrail/tcptrail/internal/netnstest"
	"github.com/tcptrail/tcptrail/internal/testwait"
	"github.com/tcptrail/tcptrail/tracer"
	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
)

// The story inside network namespaces, traced from the host's: the
// namespace is part of each socket's identity, and the socket table is
// asked inside it.

// nsStory is the story's server and buggy client run in a namespace.
type nsStory struct {
	ns        *netnstest.NS
	server    *exec.Cmd
	clientPID int
	clientErr string
}

func startStoryServerIn(t *testing.T, ns *netnstest.NS) *nsStory {
	t.Helper()
	buildDemo(t)
	ready := filepath.Join(t.TempDir(), "server.ready")
	srv := ns.Command(filepath.Join(demoBin, "demo-server"), "-listen", storyServer.String(), "-ready-file", ready)
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		t.Fatalf("demo-server in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	testwait.File(t, 10*time.Second, "the demo server in "+ns.Name, ready)
	return &nsStory{ns: ns, server: srv}
}

// runClient runs the buggy client to its end; its retry must fail.
func (st *nsStory) runClient(t *testing.T) {
	var errBuf bytes.Buffer
	cl := st.ns.Command(filepath.Join(demoBin, "demo-client"), "-server", storyServer.String(), "-local", storyClient.String())
	cl.Stderr = &errBuf
	cl.Run()
	if cl.ProcessState == nil {
		t.Errorf("client in %s did not run", st.ns.Name)
		return
	}
	st.clientPID, st.clientErr = cl.Process.Pid, errBuf.String()
	if cl.ProcessState.ExitCode() != 1 || !strings.Contains(st.clientErr, "address already in use") {
		t.Errorf("client in %s: exit %d, want 1 with EADDRINUSE:\n%s", st.ns.Name, cl.ProcessState.ExitCode(), st.clientErr)
	}
}

// checkStory checks what the trace says of the story in st.ns: its leak
// and its bind conflict, both in that namespace, owned by its client.
func checkStory(t *testing.T, s *session, st *nsStory) {
	t.Helper()
	owner := fmt.Sprintf("demo-client[%d] fd ", st.clientPID)
	var leaks []*record.Leak
	s.rec.waitFor(t, 5*time.Second, "the leak in "+st.ns.Name+" to end", func() bool {
		leaks = find(s.rec.Records(), func(l *record.Leak) bool { return l.NetNS == st.ns.Inode })
		return len(leaks) == 2
	})
	if leaks[0].Phase != "stuck" || leaks[0].Unconfirmed || !strings.Contains(leaks[0].Message, owner) ||
		leaks[1].Phase != "closed_by_exit" {
		t.Errorf("leaks in %s: %q (%s, unconfirmed %v), %q (%s); want a confirmed stuck leak held by %s, closed by its exit",
			st.ns.Name, leaks[0].Message, leaks[0].Phase, leaks[0].Unconfirmed, leaks[1].Message, leaks[1].Phase, owner)
	}
	var binds []*record.BindConflict
	s.rec.waitFor(t, 5*time.Second, "the bind conflict in "+st.ns.Name, func() bool {
		binds = find(s.rec.Records(), func(b *record.BindConflict) bool { return b.PID == uint32(st.clientPID) })
		return len(binds) > 0
	})
	if len(binds) != 1 || len(binds[0].Holders) != 1 {
		t.Fatalf("bind conflicts of the client in %s: %v", st.ns.Name, binds)
	}
	h := binds[0].Holders[0]
	if h.NetNS != st.ns.Inode || h.State != "CLOSE_WAIT" || h.Cookie != leaks[0].Cookie || len(h.Owners) != 1 || h.Owners[0].PID != uint32(st.clientPID) {
		t.Errorf("holder in %s: %+v; want its CLOSE_WAIT socket (#%d), owned by pid %d", st.ns.Name, h, leaks[0].Cookie, st.clientPID)
	}
	// Both ends of its connection, each with its five steps and no gaps.
	s.rec.waitFor(t, 5*time.Second, "the client's LAST_ACK->CLOSE in "+st.ns.Name, func() bool {
		return len(s.rec.Steps(func(x Step) bool {
			return x.NetNS == st.ns.Inode && x.Local == storyClient && x.New == event.Close
		})) == 1
	})
	steps := s.rec.Steps(func(x Step) bool {
		return x.NetNS == st.ns.Inode && (x.Local == storyClient || x.Remote == storyClient)
	})
	order, socks := byCookie(steps)
	if len(order) != 2 || !equalPairs(statesOf(socks[order[0]]), clientLife) || !equalPairs(statesOf(socks[order[1]]), serverLife) {
		t.Errorf("connection in %s:\n%s", st.ns.Name, s.rec.dump())
	}
	for _, x := range steps {
		if x.Gap {
			t.Errorf("gap in %s: %v", st.ns.Name, x)
		}
	}
}

func TestStoryInNamespace(t *testing.T) {
	s := startSession(t, tracer.Config{LeakAfter: 300 * time.Millisecond}, storyServer.Port(), storyClient.Port())
	st := startStoryServerIn(t, netnstest.New(t))
	st.runClient(t)
	checkStory(t, s, st)
}

// TestStoryInTwoNamespaces runs the story twice at once, with the same
// addresses: two stories, nothing crossed.
func TestStoryInTwoNamespaces(t *testing.T) {
	s := startSession(t, tracer.Config{LeakAfter: 300 * time.Millisecond}, storyServer.Port(), storyClient.Port())
	stories := []*nsStory{startStoryServerIn(t, netnstest.New(t)), startStoryServerIn(t, netnstest.New(t))}
	var wg sync.WaitGroup
	for _, st := range stories {
		wg.Add(1)
		go func() { defer wg.Done(); st.runClient(t) }()
	}
	wg.Wait()
	for _, st := range stories {
		checkStory(t, s, st)
	}
}

// TestNamespaceDeletedWhileTracing: a namespace goes, with the timewait
// socket the tracer follows in it. The tracer says so; it does not call it
// expired, and it counts the queries that failed.
func TestNamespaceDeletedWhileTracing(t *testing.T) {
	s := startSession(t, tracer.Config{LeakAfter: 300 * time.Millisecond}, storyServer.Port(), storyClient.Port())
	ns := netnstest.New(t)
	st := startStoryServerIn(t, ns)
	st.runClient(t)
	var hand []*record.Snapshot
	s.rec.waitFor(t, 5*time.Second, "the server end's timewait socket in "+ns.Name, func() bool {
		hand = find(s.rec.Records(), func(r *record.Snapshot) bool { return r.NetNS == ns.Inode && r.Reason == "timewait" })
		return len(hand) > 0
	})
	st.server.Process.Kill()
	st.server.Wait()
	ns.Delete()
	s.rec.waitFor(t, 10*time.Second, "the timewait socket gone with its namespace", func() bool {
		return len(find(s.rec.Records(), func(r *record.Snapshot) bool {
			return r.Cookie == hand[0].Cookie && r.Reason == "timewait_gone"
		})) > 0
	})
	gone := find(s.rec.Records(), func(r *record.Snapshot) bool { return r.Cookie == hand[0].Cookie && r.Reason == "timewait_gone" })[0]
	if gone.Note != "its network namespace was deleted" {
		t.Errorf("timewait socket of a deleted namespace: %q", gone.Note)
	}
	if sum := s.stop(t); sum.QueriesFailed == 0 {
		t.Errorf("no failed socket-table query counted")
	}
}
