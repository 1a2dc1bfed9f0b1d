package kernel

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/tcptrail/tcptrail/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// The syscall tracepoints (syscalls:sys_enter_close, ...) are the hooks of
// kernels that cannot hook functions. Unlike the raw_syscalls tracepoints,
// which run tcptrail's programs for every syscall on the host, they run
// them only for the syscalls tcptrail asks for; the others still take the
// kernel's traced entry and exit path, where a bit test sends them on.
//
// The events are named in tracefs. tcptrail reads their ids where tracefs
// is mounted: in its own mount namespace, or else in the host's (through
// /proc/1/root, from a container that sees the host's processes). Where
// neither has it, tcptrail mounts it in a directory of its own for as long
// as it takes to read the ids. tracefs is one instance per kernel, each
// mount another view of it: the mount asks for nothing (no read-only flag,
// no options) that could change the instance for others.

// syscallEvent is one syscall whose tracepoints tcptrail attaches to.
type syscallEvent struct {
	name     string
	fdOnly   bool // takes one argument: its record ends after the fd
	optional bool // tcptrail can do without it (a rarely used call, or one older kernels lack)
}

func syscallEvents() []syscallEvent {
	events := []syscallEvent{
		{name: "close", fdOnly: true}, {name: "close_range", optional: true},
		{name: "dup", fdOnly: true}, {name: "dup3"},
		{name: "execve"}, {name: "execveat", optional: true},
		{name: "connect"}, {name: "bind"}, {name: "listen"}, {name: "shutdown"},
		{name: "accept"}, {name: "accept4"},
	}
	if runtime.GOARCH == "amd64" {
		events = append(events, syscallEvent{name: "dup2"}) // arm64 has dup3 only
	}
	return events
}

// syscallEventIDs are the tracepoint ids of the syscalls' entries and
// exits, by event name (sys_enter_close, sys_exit_close, ...).
type syscallEventIDs map[string]uint64

// findSyscallEvents reads the ids of the syscall tracepoints tcptrail
// needs. It fails, saying why in a sentence, when the kernel has no syscall
// tracepoints or tracefs cannot be found nor mounted.
func findSyscallEvents() (syscallEventIDs, error) {
	if err := perfEventsAllowed(); err != nil {
		return nil, err
	}
	dir, release, err := openTracefs()
	if err != nil {
		return nil, err
	}
	defer release()
	ids := syscallEventIDs{}
	for _, sc := range syscallEvents() {
		for _, ev := range []string{"sys_enter_" + sc.name, "sys_exit_" + sc.name} {
			id, err := readEventID(filepath.Join(dir, "events", "syscalls", ev, "id"))
			if err != nil {
				if sc.optional && errors.Is(err, os.ErrNotExist) {
					continue
				}
				return nil, fmt.Errorf("syscall tracepoint %s: %w", ev, err)
			}
			ids[ev] = id
		}
	}
	return ids, nil
}

// perfEventsAllowed reports whether this process may open perf events,
// which attach programs to the syscall tracepoints: a seccomp filter may
// refuse the call (systemd's SystemCallFilter=@system-service does, a
// container runtime's profile may). It asks without attributes, which the
// kernel refuses (EFAULT) before doing anything.
func perfEventsAllowed() error {
	_, _, errno := unix.Syscall6(unix.SYS_PERF_EVENT_OPEN, 0, ^uintptr(0), ^uintptr(0), ^uintptr(0), 0, 0)
	switch errno {
	case unix.EFAULT, unix.EINVAL, unix.E2BIG:
		return nil
	}
	return fmt.Errorf("perf_event_open refused: %w", errno)
}

func readEventID(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// openTracefs returns the root of a mounted tracefs, or mounts one in a
// directory of its own until release is called.
func openTracefs() (dir string, release func(), err error) {
	if dir := mountedTracefs("/proc/self/mountinfo", "/"); dir != "" {
		return dir, func() {}, nil
	}
	if dir := mountedTracefs("/proc/1/mountinfo", "/proc/1/root"); dir != "" {
		return dir, func() {}, nil
	}
	tmp, err := os.MkdirTemp("", "tcptrail-tracefs-")
	if err != nil {
		return "", nil, fmt.Errorf("no tracefs mounted, and no directory to mount one: %w", err)
	}
	// MS_NOSUID, MS_NODEV and MS_NOEXEC are this mount's own; MS_RDONLY
	// or options would reconfigure the one tracefs instance for everyone
	// (some kernels do on a second mount).
	if err := unix.Mount("nodev", tmp, "tracefs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		os.Remove(tmp)
		return "", nil, fmt.Errorf("no tracefs mounted, and mounting one failed: %w", err)
	}
	return tmp, func() {
		unix.Unmount(tmp, unix.MNT_DETACH)
		os.Remove(tmp)
	}, nil
}

// mountedTracefs is where tracefs is mounted (the whole of it, not a bind
// mount of a part) in the mount namespace mountinfo describes, as seen
// from root, or under debugfs on kernels that keep it there, or "". The
// place must hold the events.
func mountedTracefs(mountinfoPath, root string) string {
	mounts, err := mountinfo.Read(mountinfoPath)
	if err != nil {
		return ""
	}
	has := func(dir string) bool {
		_, err := os.Stat(filepath.Join(dir, "events", "syscalls"))
		return err == nil
	}
	var debugfs string
	for _, m := range mounts {
		switch {
		case m.Root != "/":
		case m.FSType == "tracefs":
			if dir := filepath.Join(root, m.Point); has(dir) {
				return dir
			}
		case m.FSType == "debugfs" && debugfs == "":
			debugfs = filepath.Join(root, m.Point, "tracing")
		}
	}
	if debugfs != "" && has(debugfs) {
		return debugfs
	}
	return ""
}

// syscallPrograms are the programs for the syscall tracepoints.
type syscallPrograms struct {
	enter   *ebpf.Program // reads the first two arguments
	enterFD *ebpf.Program // reads the first alone
	exit    *ebpf.Program
}

// attachSyscallEvents attaches the programs to the entry and the exit of
// every syscall in ids.
func attachSyscallEvents(progs syscallPrograms, ids syscallEventIDs) ([]*perfEventLink, error) {
	var links []*perfEventLink
	for _, sc := range syscallEvents() {
		enter := progs.enter
		if sc.fdOnly {
			enter = progs.enterFD
		}
		for _, hook := range []struct {
			event string
			prog  *ebpf.Program
		}{{"sys_enter_" + sc.name, enter}, {"sys_exit_" + sc.name, progs.exit}} {
			id, ok := ids[hook.event]
			if !ok {
				continue // an optional call this kernel does not have
			}
			l, err := attachPerfEvent(hook.prog, id)
			if err != nil {
				closeAll(links)
				return nil, fmt.Errorf("attach %s to syscalls:%s: %w", hook.prog, hook.event, err)
			}
			links = append(links, l)
		}
	}
	return links, nil
}

// perfEventLink is a program attached to a tracepoint through a perf event:
// by a BPF link (Linux 5.15) or, before, by the perf event itself.
type perfEventLink struct {
	fd   int
	link link.Link // nil when the perf event holds the program
}

// attachPerfEvent opens the tracepoint id as a perf event, on all tasks
// (one event serves every CPU: the program hangs on the tracepoint), and
// attaches prog to it.
func attachPerfEvent(prog *ebpf.Program, id uint64) (*perfEventLink, error) {
	attr := unix.PerfEventAttr{
		Type:        unix.PERF_TYPE_TRACEPOINT,
		Config:      id,
		Sample_type: unix.PERF_SAMPLE_RAW,
		Sample:      1,
		Wakeup:      1,
	}
	fd, err := unix.PerfEventOpen(&attr, -1, 0, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("open the tracepoint's perf event: %w", err)
	}
	l, linkErr := link.AttachRawLink(link.RawLinkOptions{Target: fd, Program: prog, Attach: ebpf.AttachPerfEvent})
	if linkErr == nil {
		return &perfEventLink{fd: fd, link: l}, nil
	}
	// Before Linux 5.15 BPF links cannot hold perf events (EINVAL): the
	// perf event holds the program. Any other refusal is the answer.
	if !errors.Is(linkErr, unix.EINVAL) {
		unix.Close(fd)
		return nil, fmt.Errorf("attach through a BPF link: %w", linkErr)
	}
	if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_SET_BPF, prog.FD()); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set the perf event's program: %w (BPF link: %v)", err, linkErr)
	}
	if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_ENABLE, 0); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("enable the perf event: %w", err)
	}
	return &perfEventLink{fd: fd}, nil
}

// Close detaches the program.
func (l *perfEventLink) Close() error {
	var err error
	if l.link != nil {
		err = l.link.Close()
	}
	return errors.Join(err, unix.Close(l.fd))
}

// closeAll closes links concurrently.
func closeAll(links []*perfEventLink) error {
	errs := make([]error, len(links))
	var wg sync.WaitGroup
	for i, l := range links {
		wg.Go(func() { errs[i] = l.Close() })
	}
	wg.Wait()
	return errors.Join(errs...)
}
