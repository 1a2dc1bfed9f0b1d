package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// A floor is the least any tracer hooked on the raw_syscalls tracepoints
// can cost: programs that return at once, attached by systax itself to
// sys_enter, sys_exit or both, as tp_btf (BTF-typed, what tcptrail uses) or
// as raw_tp programs. Once a program is attached to either tracepoint,
// every syscall of every task takes the kernel's traced entry and exit path;
// the floor measures that path plus the tracepoints' dispatch to BPF, and
// the difference between it and tcptrail is what tcptrail's programs and
// its other hooks add on top.
//
// The syscall-tp floor is the same for tcptrail's syscall tracepoints: empty
// programs on close's entry and exit tracepoints (syscalls:sys_enter_close,
// sys_exit_close). Every other syscall then takes the traced path without
// running a program; close runs them through the perf event machinery.
type floor struct {
	name      string   // as -floor takes it: tp_btf, raw_tp, tp_btf-enter, ..., syscall-tp
	btf       bool     // tp_btf (BTF-typed) rather than raw_tp
	syscallTP bool     // tracepoint programs on the syscall tracepoints of hooks
	hooks     []string // raw_syscalls tracepoints, or syscall tracepoints
}

// floors are the floors systax knows, the one like tcptrail's first.
func floors() []floor {
	var fs []floor
	for _, kind := range []string{"tp_btf", "raw_tp"} {
		fs = append(fs,
			floor{name: kind, btf: kind == "tp_btf", hooks: []string{"sys_enter", "sys_exit"}},
			floor{name: kind + "-enter", btf: kind == "tp_btf", hooks: []string{"sys_enter"}},
			floor{name: kind + "-exit", btf: kind == "tp_btf", hooks: []string{"sys_exit"}})
	}
	return append(fs, floor{name: "syscall-tp", syscallTP: true, hooks: []string{"sys_enter_close", "sys_exit_close"}})
}

// mountTracefs mounts tracefs in dir when none is mounted, for the
// syscall-tp floor to find its tracepoints, and returns how to unmount it.
// cilium/ebpf looks for tracefs once, in mountinfo: this must come first.
func mountTracefs(dir string) (func(), error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err == nil && strings.Contains(string(b), " - tracefs ") {
		return func() {}, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := unix.Mount("nodev", dir, "tracefs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return nil, fmt.Errorf("mount tracefs for the syscall-tp floor: %w", err)
	}
	return func() { unix.Unmount(dir, unix.MNT_DETACH) }, nil
}

// pickFloors parses -floor: a comma-separated list of floor names, or all.
func pickFloors(arg string) ([]floor, error) {
	if arg == "" {
		return nil, nil
	}
	if arg == "all" {
		return floors(), nil
	}
	var picked []floor
	for _, name := range strings.Split(arg, ",") {
		i := slices.IndexFunc(floors(), func(f floor) bool { return f.name == name })
		if i < 0 {
			var names []string
			for _, f := range floors() {
				names = append(names, f.name)
			}
			return nil, fmt.Errorf("-floor: no floor %q (there are: %s, all)", name, strings.Join(names, ", "))
		}
		picked = append(picked, floors()[i])
	}
	return picked, nil
}

// label names the floor in the results.
func (f floor) label() string {
	if f.syscallTP {
		return "floor: empty syscalls:" + strings.Join(f.hooks, "+")
	}
	kind := "raw_tp"
	if f.btf {
		kind = "tp_btf"
	}
	on := "sys_enter+sys_exit"
	if len(f.hooks) == 1 {
		on = f.hooks[0]
	}
	return "floor: empty " + kind + " " + on
}

// emptyProgram returns 0 and does nothing else.
func (f floor) emptyProgram(hook string) *ebpf.ProgramSpec {
	spec := &ebpf.ProgramSpec{
		Name:    "systax_floor",
		License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		},
	}
	switch {
	case f.syscallTP:
		spec.Type = ebpf.TracePoint
	case f.btf:
		spec.Type = ebpf.Tracing
		spec.AttachType = ebpf.AttachTraceRawTp
		spec.AttachTo = hook
	default:
		spec.Type = ebpf.RawTracepoint
	}
	return spec
}

// attachedFloor is a floor's programs, loaded and attached.
type attachedFloor struct {
	syscallTP bool
	progs     []*ebpf.Program
	links     []link.Link
}

func (f floor) attach() (*attachedFloor, error) {
	a := &attachedFloor{syscallTP: f.syscallTP}
	for _, hook := range f.hooks {
		prog, err := ebpf.NewProgram(f.emptyProgram(hook))
		if err != nil {
			a.close()
			return nil, fmt.Errorf("%s: load program for %s: %w", f.label(), hook, err)
		}
		a.progs = append(a.progs, prog)
		var l link.Link
		switch {
		case f.syscallTP:
			l, err = link.Tracepoint("syscalls", hook, prog, nil)
		case f.btf:
			l, err = link.AttachTracing(link.TracingOptions{Program: prog})
		default:
			l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: hook, Program: prog})
		}
		if err != nil {
			a.close()
			return nil, fmt.Errorf("%s: attach to %s: %w", f.label(), hook, err)
		}
		a.links = append(a.links, l)
	}
	return a, nil
}

func (a *attachedFloor) alive() error { return nil }

// syscallHooks counts the programs on the raw_syscalls tracepoints: the
// syscall-tp floor has none there.
func (a *attachedFloor) syscallHooks() int {
	if a.syscallTP {
		return 0
	}
	return len(a.links)
}

func (a *attachedFloor) stop() error { return a.close() }

func (a *attachedFloor) close() error {
	var errs []error
	for _, l := range a.links {
		errs = append(errs, l.Close())
	}
	for _, p := range a.progs {
		errs = append(errs, p.Close())
	}
	a.links, a.progs = nil, nil
	return errors.Join(errs...)
}
