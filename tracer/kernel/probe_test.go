package kernel

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/tcptrail/tcptrail/internal/privtest"
	"github.com/tcptrail/tcptrail/internal/testwait"
)

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestLoadCloseLeavesNothing loads and attaches the real programs, then
// checks that Close (twice) removes every program from the kernel and
// releases every fd.
func TestLoadCloseLeavesNothing(t *testing.T) {
	privtest.Require(t)
	before := openFDs(t)
	p, err := Load(Config{Ports: []uint16{7070}})
	if err != nil {
		t.Fatalf("%+v", err)
	}
	ids := p.ProgramIDs()
	// Transitions (and those its program skipped), the kernel's own
	// resets, fork, exec and exit, plus the syscall hooks: two raw
	// tracepoint programs, three programs on an entry and an exit
	// tracepoint per syscall, or an fentry/fexit pair per hooked function.
	want, attached := 8, 8
	switch p.Hooks {
	case HooksSyscallTracepoint:
		events, err := findSyscallEvents()
		if err != nil {
			t.Fatal(err)
		}
		want, attached = 9, 6+len(events)
	case HooksFunction:
		kspec, err := btf.LoadKernelSpec()
		if err != nil {
			t.Fatal(err)
		}
		plan, _, err := planFunctionHooks(kspec)
		if err != nil {
			t.Fatal(err)
		}
		want = 6 + 2*len(plan)
		attached = want
	}
	if len(ids) != want || len(p.links) != attached {
		t.Fatalf("want %d programs loaded, %d links (%s hooks), got %d loaded, %d links", want, attached, p.Hooks, len(ids), len(p.links))
	}
	c, err := p.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c != (Counters{}) {
		t.Fatalf("fresh counters not zero: %+v", c)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// The kernel frees programs after an RCU grace period: wait for it.
	for _, id := range ids {
		testwait.Until(t, 5*time.Second, fmt.Sprintf("program %d to leave the kernel", id), func() bool {
			prog, err := ebpf.NewProgramFromID(id)
			if err == nil {
				prog.Close()
				return false
			}
			if !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("program %d: %v", id, err)
			}
			return true
		})
	}
	if after := openFDs(t); after != before {
		t.Fatalf("%d fds open before Load, %d after Close", before, after)
	}
}

func TestConfigRejectsBadRingSize(t *testing.T) {
	spec, err := loadTcptrail()
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{1000, 4096 * 3} {
		if err := configure(spec, Config{RingBytes: size}, Features{}); err == nil {
			t.Errorf("ring size %d accepted", size)
		}
	}
}
