package kernel

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tcptrail/tcptrail/internal/privtest"
)

func tracefsMounts(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var mounts []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, " - tracefs ") {
			mounts = append(mounts, line)
		}
	}
	return mounts
}

// TestSyscallTracepointsLeaveTheHostAsFound attaches through the syscall
// tracepoints (TestSyscallHooks checks what they report) and checks that a
// tracefs tcptrail mounted to name them is gone again: a host without
// tracefs mounted has none after tcptrail started.
func TestSyscallTracepointsLeaveTheHostAsFound(t *testing.T) {
	privtest.Require(t)
	before := tracefsMounts(t)
	p, err := Load(Config{Ports: []uint16{7070}, SyscallHooks: HooksSyscallTracepoint})
	if err != nil {
		t.Fatalf("%+v", err)
	}
	defer p.Close()
	if p.Hooks != HooksSyscallTracepoint {
		t.Fatalf("hooks %q, want %q", p.Hooks, HooksSyscallTracepoint)
	}
	if after := tracefsMounts(t); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("tracefs mounts before Load:\n%s\nafter:\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
	}
	left, _ := filepath.Glob(filepath.Join(os.TempDir(), "tcptrail-tracefs-*"))
	if len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
	if !strings.Contains(p.String(), "syscall tracepoints") {
		t.Fatalf("String() does not say how the syscalls are hooked: %s", p)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}
