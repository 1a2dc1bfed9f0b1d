// Package priority raises the CPU scheduling priority of this process, the
// way a reader of kernel events keeps up with them (auditd does the same:
// priority_boost). The events come from the very processes that compete
// with the reader for the CPUs: on a saturated host a reader with a fair
// share only falls behind for seconds at a time, the ring buffer fills,
// and the kernel drops what it cannot write. Its work is bounded by the
// event rate, so a higher priority takes no more CPU than the events cost;
// it takes it when they come.
package priority

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// DefaultBoost is how much tcptrail lowers its nice value by default: as
// much as auditd does. Under the churn bench (six busy threads on two
// CPUs, ~350k events/s) it took a capture from losing events in half its
// rounds to losing none.
const DefaultBoost = 4

// Nice returns the nice value of the calling thread.
func Nice() (int, error) {
	n, err := niceOf(0)
	if err != nil {
		return 0, fmt.Errorf("getpriority: %w", err)
	}
	return n, nil
}

// niceOf returns the nice value of thread tid (0: the calling one).
func niceOf(tid int) (int, error) {
	// The system call returns 20 - nice, so that no value is negative.
	p, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	return 20 - p, err
}

// Raise lowers the nice value of every thread of the process by boost
// (down to -20) and returns the nice value before and after. Linux keeps
// a nice value per thread and a new thread inherits its creator's: once
// every thread has it, the Go runtime's later threads have it too. It needs
// CAP_SYS_NICE (or an RLIMIT_NICE that allows it); without, the process
// keeps its nice value and the error says why.
func Raise(boost int) (from, to int, err error) {
	from, err = Nice()
	if err != nil || boost <= 0 {
		return from, from, err
	}
	to = max(from-boost, -20)
	// Every thread sets its own, with no thread made meanwhile (the
	// runtime stops the world for it). Not in programs built with cgo.
	_, _, errno := syscall.AllThreadsSyscall(syscall.SYS_SETPRIORITY, unix.PRIO_PROCESS, 0, uintptr(to))
	switch errno {
	case 0:
		return from, to, nil
	case syscall.ENOTSUP:
		if err := setEveryThread(to); err != nil {
			setEveryThread(from) // raising a nice value needs no privilege
			return from, from, err
		}
		return from, to, nil
	default:
		return from, from, fmt.Errorf("setpriority to nice %d: %w", to, errno)
	}
}

// setEveryThread sets the nice value of each thread listed in /proc, until
// a pass finds none to change: a thread made during a pass may have
// inherited the old value from one not yet changed.
func setEveryThread(nice int) error {
	for range 100 {
		tids, err := threads()
		if err != nil {
			return err
		}
		changed := false
		for _, tid := range tids {
			n, err := niceOf(tid)
			if err == unix.ESRCH { // the thread has ended
				continue
			}
			if err != nil {
				return fmt.Errorf("getpriority: %w", err)
			}
			if n == nice {
				continue
			}
			changed = true
			if err := unix.Setpriority(unix.PRIO_PROCESS, tid, nice); err != nil && err != unix.ESRCH {
				return fmt.Errorf("setpriority to nice %d: %w", nice, err)
			}
		}
		if !changed {
			return nil
		}
	}
	return fmt.Errorf("setpriority to nice %d: threads kept coming", nice)
}

// NiceOfThreads returns the nice value of each thread of process pid, by
// thread id, as /proc shows them.
func NiceOfThreads(pid int) (map[int]int, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tids, err := threadsIn(dir)
	if err != nil {
		return nil, err
	}
	nice := make(map[int]int, len(tids))
	for _, tid := range tids {
		b, err := os.ReadFile(fmt.Sprintf("%s/%d/stat", dir, tid))
		if err != nil {
			continue // the thread has ended
		}
		// The command name, in parentheses, may hold anything: fields
		// are counted from the last ')', which ends field 2; nice is
		// field 19.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 19-2 {
			return nil, fmt.Errorf("%s/%d/stat: %d fields", dir, tid, len(f)+2)
		}
		if nice[tid], err = strconv.Atoi(f[19-3]); err != nil {
			return nil, fmt.Errorf("%s/%d/stat: nice %q", dir, tid, f[19-3])
		}
	}
	return nice, nil
}

// threads lists the ids of this process's threads.
func threads() ([]int, error) { return threadsIn("/proc/self/task") }

func threadsIn(dir string) ([]int, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	tids := make([]int, 0, len(names))
	for _, n := range names {
		if tid, err := strconv.Atoi(n); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}
