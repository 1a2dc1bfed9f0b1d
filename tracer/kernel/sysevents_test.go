package kernel

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/tcptrail/tcptrail/internal/privtest"
	"golang.org/x/sys/unix"
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

// TestSyscallTracepointsRefusedBySeccomp runs, in a child process whose
// seccomp filter refuses perf_event_open (as systemd's @system-service
// does), what Load does to choose the hooks: the syscall tracepoints are
// found unusable before anything is loaded, saying why, and a kernel that
// cannot hook functions gets the raw_syscalls tracepoints instead of a
// failed attach.
func TestSyscallTracepointsRefusedBySeccomp(t *testing.T) {
	privtest.Require(t)
	if os.Getenv("TCPTRAIL_TEST_SECCOMP_CHILD") == "1" {
		seccompChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSyscallTracepointsRefusedBySeccomp$", "-test.v")
	cmd.Env = append(os.Environ(), "TCPTRAIL_TEST_SECCOMP_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func seccompChild(t *testing.T) {
	// Every thread of the process: nr == perf_event_open -> EPERM.
	filter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.SYS_PERF_EVENT_OPEN},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog))); errno != 0 {
		t.Fatalf("seccomp: %v", errno)
	}
	_, err := findSyscallEvents()
	if err == nil || !strings.Contains(err.Error(), "perf_event_open") {
		t.Fatalf("syscall tracepoints under a filter refusing perf_event_open: %v", err)
	}
	feat, err := ProbeFeatures()
	if err != nil {
		t.Fatal(err)
	}
	if feat.FunctionTracing {
		t.Log("this kernel hooks functions: auto does not come to the syscall tracepoints")
		return
	}
	p, err := Load(Config{Ports: []uint16{7070}})
	if err != nil {
		t.Fatalf("Load under the filter: %v", err)
	}
	defer p.Close()
	if p.Hooks != HooksTracepoint || p.NoSyscallTracepoints == nil {
		t.Fatalf("hooks %q (why not the syscall tracepoints: %v), want the raw_syscalls tracepoints and a reason", p.Hooks, p.NoSyscallTracepoints)
	}
	if !strings.Contains(p.String(), "no syscall tracepoints: perf_event_open refused") {
		t.Fatalf("String() does not say why: %s", p)
	}
}
