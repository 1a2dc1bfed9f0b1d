package tracer_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcptrail/tcptrail/internal/testprog"
	"github.com/tcptrail/tcptrail/internal/testwait"
	"github.com/tcptrail/tcptrail/tracer"
	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

// TestNginx traces a real nginx that started before the trace: its
// listener is shared by the master and the worker it forked, a request's
// socket belongs to the worker, and the worker's close() ends it.
func TestNginx(t *testing.T) {
	t.Parallel()
	requirePrivileges(t)
	bin := testprog.Require(t, "nginx")
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	ng := testprog.Nginx(t, bin, dir, 17300, "")
	ng.Stderr = os.Stderr
	if err := ng.Start(); err != nil {
		t.Fatal(err)
	}
	// SIGTERM: nginx's master stops its workers (SIGKILL would orphan them,
	// listening on).
	t.Cleanup(func() { ng.Process.Signal(syscall.SIGTERM); ng.Wait() })
	master := ng.Process.Pid
	worker := waitForChild(t, master)
	t.Cleanup(func() { syscall.Kill(worker, syscall.SIGKILL) })
	testprog.WaitListening(t, "127.0.0.1:17300")

	s := startSession(t, tracer.Config{}, 17300)
	listeners := find(s.rec.Records(), func(r *record.Snapshot) bool { return r.Reason == "start" && r.State == "LISTEN" })
	if len(listeners) != 1 {
		t.Fatalf("want nginx's listener at start: %v", listeners)
	}
	pids := map[uint32]bool{}
	for _, o := range listeners[0].Owners {
		pids[o.PID] = true
	}
	if !pids[uint32(master)] || !pids[uint32(worker)] || len(pids) != 2 {
		t.Fatalf("listener owners %+v, want master %d and worker %d", listeners[0].Owners, master, worker)
	}

	c, err := net.Dial("tcp4", "127.0.0.1:17300")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET / HTTP/1.0\r\n\r\n")
	reply, _ := io.ReadAll(c)
	c.Close()
	if !strings.Contains(string(reply), "200 OK") {
		t.Fatalf("nginx replied %q", reply)
	}
	serverEnd := netip.MustParseAddrPort("127.0.0.1:17300")
	st := waitStep(t, s.rec, serverEnd, event.Established, event.FinWait1)
	want := fmt.Sprintf("nginx[%d] fd ", worker)
	if st.CauseKind != timeline.CauseClose || st.PID != uint32(worker) || !strings.HasPrefix(st.Owners, want) {
		t.Fatalf("nginx's close: %v, want close(fd) by the worker %d", st, worker)
	}
	if st.Remote != localOf(c) {
		t.Fatalf("wrong connection: %v", st)
	}
}

// waitForChild returns the first child of pid.
func waitForChild(t *testing.T, pid int) int {
	t.Helper()
	child := 0
	testwait.Until(t, 10*time.Second, fmt.Sprintf("a child of process %d", pid), func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if f := strings.Fields(string(b)); len(f) > 0 {
			child, _ = strconv.Atoi(f[0])
		}
		return child > 0
	})
	return child
}

// TestRedis traces a real Redis that started before the trace: the
// client closes first, Redis's socket goes to CLOSE_WAIT in the client's
// close(), and Redis's own close(fd) ends it (the passive side of the
// story, done right).
func TestRedis(t *testing.T) {
	t.Parallel()
	requirePrivileges(t)
	bin := testprog.Require(t, "redis-server")
	dir := t.TempDir()
	rs := exec.Command(bin, "--port", "17400", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--daemonize", "no", "--protected-mode", "yes")
	rs.Stdout, rs.Stderr = io.Discard, os.Stderr
	if err := rs.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Process.Kill(); rs.Wait() })
	testprog.WaitListening(t, "127.0.0.1:17400")

	s := startSession(t, tracer.Config{}, 17400)
	c, err := net.Dial("tcp4", "127.0.0.1:17400")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "PING\r\n")
	buf := make([]byte, 16)
	n, _ := c.Read(buf)
	if !strings.HasPrefix(string(buf[:n]), "+PONG") {
		t.Fatalf("redis replied %q", buf[:n])
	}
	clientEnd := localOf(c)
	c.Close()

	redisEnd := netip.MustParseAddrPort("127.0.0.1:17400")
	cw := waitStep(t, s.rec, redisEnd, event.Established, event.CloseWait)
	if cw.Remote != clientEnd || cw.CauseKind != timeline.CausePeerFIN {
		t.Fatalf("redis end: %v, want peer FIN from %v", cw, clientEnd)
	}
	la := waitStep(t, s.rec, redisEnd, event.CloseWait, event.LastAck)
	want := fmt.Sprintf("redis-server[%d] fd ", rs.Process.Pid)
	if la.CauseKind != timeline.CauseClose || la.PID != uint32(rs.Process.Pid) || !strings.HasPrefix(la.Owners, want) {
		t.Fatalf("redis's close: %v, want close(fd) by redis-server[%d]", la, rs.Process.Pid)
	}
	if l := find(s.rec.Records(), func(*record.Leak) bool { return true }); len(l) != 0 {
		t.Fatalf("a prompt close reported as a leak: %v", l)
	}
}
