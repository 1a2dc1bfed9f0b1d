package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf/link"
)

// disturbance says what, besides the setup under test, made syscalls
// slower while a measurement ran, or "" if nothing did: run-time
// statistics of BPF programs (kernel.bpf_stats_enabled, which makes every
// program run read the clock twice more), and BPF programs of others on the
// raw_syscalls tracepoints (every syscall then takes the traced path, in
// the untraced measurements too). ours is how many programs the setup
// itself has there. Measurements that were disturbed are left out of the
// summary.
func disturbance(ours int) string {
	var why []string
	if b, err := os.ReadFile("/proc/sys/kernel/bpf_stats_enabled"); err == nil && strings.TrimSpace(string(b)) == "1" {
		why = append(why, "kernel.bpf_stats_enabled=1")
	}
	if os.Geteuid() == 0 {
		n, err := syscallHooks()
		switch {
		case err != nil:
			why = append(why, fmt.Sprintf("BPF links not listed: %v", err))
		case n > ours:
			why = append(why, fmt.Sprintf("%d other programs on raw_syscalls", n-ours))
		}
	}
	return strings.Join(why, ", ")
}

// syscallHooks counts the BPF programs attached to the raw_syscalls
// tracepoints (tp_btf and raw_tp links alike).
func syscallHooks() (int, error) {
	var it link.Iterator
	defer it.Close()
	n := 0
	for it.Next() {
		info, err := it.Link.Info()
		if err != nil {
			continue
		}
		if rt := info.RawTracepoint(); rt != nil && (rt.Name == "sys_enter" || rt.Name == "sys_exit") {
			n++
		}
	}
	return n, it.Err()
}
