package main

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tcptrail/tcptrail/bench/internal/procfs"

	"github.com/cilium/ebpf"
)

// cpuTimes is the first line of /proc/stat: busy and total jiffies.
type cpuTimes struct{ busy, total uint64 }

func readCPUTimes() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var c cpuTimes
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i >= 8 { // guest time is already in user
			break
		}
		c.total += n
		if i != 3 && i != 4 { // idle, iowait
			c.busy += n
		}
	}
	return c
}

// busyFraction is the share of all CPUs' time spent busy between a and b.
func busyFraction(a, b cpuTimes) float64 {
	if b.total <= a.total {
		return 0
	}
	return float64(b.busy-a.busy) / float64(b.total-a.total)
}

// sysctls sets kernel parameters and remembers the old values to restore.
type sysctls struct {
	saved []sysctlValue
}

type sysctlValue struct{ name, value string }

func sysctlPath(name string) string {
	return "/proc/sys/" + strings.ReplaceAll(name, ".", "/")
}

func readSysctl(name string) (string, error) {
	b, err := os.ReadFile(sysctlPath(name))
	return strings.TrimSpace(string(b)), err
}

func (s *sysctls) set(name, value string) error {
	old, err := readSysctl(name)
	if err != nil {
		return err
	}
	if old == value {
		return nil
	}
	if err := os.WriteFile(sysctlPath(name), []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", name, value, err)
	}
	s.saved = append(s.saved, sysctlValue{name, old})
	return nil
}

func (s *sysctls) restore() {
	for i := len(s.saved) - 1; i >= 0; i-- {
		v := s.saved[i]
		if err := os.WriteFile(sysctlPath(v.name), []byte(v.value), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "churn: restore %s=%s: %v\n", v.name, v.value, err)
		}
	}
	s.saved = nil
}

// progIDsOf lists the BPF programs process pid holds, from its fdinfo.
func progIDsOf(pid int) map[ebpf.ProgramID]bool {
	ids := map[ebpf.ProgramID]bool{}
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return ids
	}
	for _, e := range ents {
		b, err := os.ReadFile(dir + "/" + e.Name())
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "prog_id:"); ok {
				if id, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32); err == nil {
					ids[ebpf.ProgramID(id)] = true
				}
			}
		}
	}
	return ids
}

// bpfWatch follows the run time of the tracer's programs
// (kernel.bpf_stats_enabled must be 1).
type bpfWatch struct {
	progs []*ebpf.Program
	names []string
	start []ebpf.ProgramStats
}

type bpfDelta struct {
	ok      bool
	runtime time.Duration
	runs    uint64
	misses  uint64
	byProg  map[string]time.Duration
	missBy  map[string]uint64
}

// watchPrograms opens the programs process pid holds and notes their
// statistics so far.
func watchPrograms(pid int) *bpfWatch {
	w := &bpfWatch{}
	for id := range progIDsOf(pid) {
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		info, err := p.Info()
		if err != nil || !strings.HasPrefix(info.Name, "handle_") {
			p.Close()
			continue
		}
		st, err := p.Stats()
		if err != nil {
			p.Close()
			continue
		}
		w.progs = append(w.progs, p)
		w.names = append(w.names, info.Name)
		w.start = append(w.start, *st)
	}
	return w
}

func (w *bpfWatch) delta() bpfDelta {
	d := bpfDelta{ok: len(w.progs) > 0, byProg: map[string]time.Duration{}, missBy: map[string]uint64{}}
	for i, p := range w.progs {
		st, err := p.Stats()
		if err != nil {
			d.ok = false
			continue
		}
		rt := st.Runtime - w.start[i].Runtime
		d.runtime += rt
		d.runs += st.RunCount - w.start[i].RunCount
		d.misses += st.RecursionMisses - w.start[i].RecursionMisses
		d.byProg[w.names[i]] += rt
		if m := st.RecursionMisses - w.start[i].RecursionMisses; m > 0 {
			d.missBy[w.names[i]] += m
		}
	}
	return d
}

func (w *bpfWatch) close() {
	for _, p := range w.progs {
		p.Close()
	}
	w.progs = nil
}

// irqWork is the number of IRQ work interrupts so far, all CPUs: a BPF
// ring buffer wakes its reader through one (a self-IPI, a VM exit in a
// guest), so their count shows how often the programs asked for a wakeup.
func irqWork() uint64 {
	b, err := os.ReadFile("/proc/interrupts")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "IWI:" {
			continue
		}
		var n uint64
		for _, v := range f[1:] {
			x, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				break
			}
			n += x
		}
		return n
	}
	return 0
}

// foreignPrograms counts loaded BPF programs that look like another
// tcptrail's (tests or a second tracer): they would tax the untraced
// rounds too.
func foreignPrograms(own map[ebpf.ProgramID]bool) int {
	n := 0
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return n
		}
		id = next
		if own[id] {
			continue
		}
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		if info, err := p.Info(); err == nil && strings.HasPrefix(info.Name, "handle_") {
			n++
		}
		p.Close()
	}
}

// procSnapshot is every process's CPU time so far, to name who else used
// the CPUs during a round.
type procSnapshot map[int]procCPUEntry

type procCPUEntry struct {
	comm string
	cpu  time.Duration
}

func snapshotProcs() procSnapshot {
	s := procSnapshot{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return s
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cpu, err := procfs.CPU(pid)
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		s[pid] = procCPUEntry{strings.TrimSpace(string(comm)), cpu}
	}
	return s
}

// topOthers names the processes other than skip that used the most CPU
// between a and b (processes that appeared meanwhile count from zero).
func topOthers(a, b procSnapshot, skip map[int]bool, n int) (string, time.Duration) {
	type use struct {
		name string
		cpu  time.Duration
	}
	var uses []use
	var total time.Duration
	for pid, e := range b {
		if skip[pid] {
			continue
		}
		d := e.cpu - a[pid].cpu
		total += d
		if d >= 20*time.Millisecond {
			uses = append(uses, use{fmt.Sprintf("%s[%d]", e.comm, pid), d})
		}
	}
	sort.Slice(uses, func(i, j int) bool { return uses[i].cpu > uses[j].cpu })
	var parts []string
	for i, u := range uses {
		if i == n {
			break
		}
		parts = append(parts, fmt.Sprintf("%s %.2fs", u.name, u.cpu.Seconds()))
	}
	return strings.Join(parts, ", "), total
}
