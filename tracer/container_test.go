package tracer_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tcptrail/tcptrail/internal/testwait"
	"github.com/tcptrail/tcptrail/tracer"
	"github.com/tcptrail/tcptrail/tracer/container"
	"github.com/tcptrail/tcptrail/tracer/kernel"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/scope"
)

// dockerScope makes a cgroup the way Docker's systemd driver names a
// container's: /system.slice/docker-<64 hex>.scope (cgroup v2).
func dockerScope(t *testing.T) (id, path, dir string) {
	t.Helper()
	root, err := container.Cgroup2Mount()
	if err != nil {
		t.Fatalf("no cgroup v2 mount: %v", err)
	}
	var b [32]byte
	rand.Read(b[:])
	id = hex.EncodeToString(b[:])
	path = "/system.slice/docker-" + id + ".scope"
	dir = filepath.Join(root, path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		testwait.Until(t, 5*time.Second, "the container's cgroup to empty", func() bool { return os.Remove(dir) == nil })
	})
	return id, path, dir
}

// TestContainerOwnersAndFilter runs the story's buggy client inside a
// container's cgroup and traces that container only: its socket is
// reported, owned by a process of that container; the server's, made
// outside it, are not traced.
func TestContainerOwnersAndFilter(t *testing.T) {
	requirePrivileges(t)
	id, _, dir := dockerScope(t)
	startServer(t)
	got, cgroups, err := scope.Container(id[:12])
	if err != nil || got != id {
		t.Fatalf("container %s: %v, %v", id[:12], got, err)
	}
	s := startSession(t, tracer.Config{LeakAfter: 300 * time.Millisecond, Kernel: kernel.Config{Cgroups: cgroups}},
		storyServer.Port(), storyClient.Port())

	// The client joins the cgroup before it runs, as a container's
	// processes do.
	var errBuf bytes.Buffer
	cl := exec.Command("sh", "-c", `echo $$ > "$1/cgroup.procs" && exec "$2" -server "$3" -local "$4"`, "sh",
		dir, filepath.Join(demoBin, "demo-client"), storyServer.String(), storyClient.String())
	cl.Stderr = &errBuf
	cl.Run()
	if cl.ProcessState == nil || cl.ProcessState.ExitCode() != 1 || !strings.Contains(errBuf.String(), "address already in use") {
		t.Fatalf("client in the container: %v\n%s", cl.ProcessState, errBuf.String())
	}
	var leaks []*record.Leak
	s.rec.waitFor(t, 5*time.Second, "the container's leak", func() bool {
		leaks = find(s.rec.Records(), func(l *record.Leak) bool { return l.Lport == storyClient.Port() })
		return len(leaks) == 2
	})
	if len(leaks[0].Owners) != 1 || leaks[0].Owners[0].PID != uint32(cl.Process.Pid) || leaks[0].Owners[0].Container != id {
		t.Errorf("leak owners %+v: want pid %d in container %s", leaks[0].Owners, cl.Process.Pid, id)
	}
	s.rec.waitFor(t, 5*time.Second, "the container's socket's five steps", func() bool {
		return len(s.rec.Steps(func(st Step) bool { return isClient(st) })) == 5
	})
	for _, st := range s.rec.Steps(func(Step) bool { return true }) {
		if st.Local.Port() == storyServer.Port() {
			t.Errorf("a socket made outside the container was traced: %v", st)
		}
	}
}
