package kernel

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/cilium/ebpf/btf"
)

// A functionHook is one fentry/fexit pair of the BPF object and the kernel
// function it attaches to.
type functionHook struct {
	enter, exit string // program names
	target      string // kernel function
}

// hookChoice is one way to hook a syscall: a kernel function and the
// programs written for its arguments.
type hookChoice struct {
	target      string
	enter, exit string
	params      int  // how many parameters target takes
	wrapper     bool // target is the architecture's syscall wrapper: one "regs" parameter
}

// wrapper is the syscall's architecture wrapper, which takes the user's
// registers.
func wrapper(call string) hookChoice {
	prefix := "__x64_sys_"
	if runtime.GOARCH == "arm64" {
		prefix = "__arm64_sys_"
	}
	return hookChoice{target: prefix + call, enter: "enter_" + call, exit: "exit_" + call, params: 1, wrapper: true}
}

// inner is the __sys_<call> function behind a socket syscall, which takes
// the arguments themselves.
func inner(call string, params int) hookChoice {
	return hookChoice{target: "__sys_" + call, enter: "enter_sys_" + call, exit: "exit_sys_" + call, params: params}
}

// syscallHook lists, for each syscall tcptrail correlates, the ways to hook
// it, best first. Kernel BTF often lacks the socket syscalls' wrappers (or
// describes only their not-implemented stubs), so those go through the
// functions behind them.
type syscallHook struct {
	name     string
	choices  [][]hookChoice // each choice may need several hooks
	optional bool           // tcptrail can do without it (a rarely used call)
}

func syscallHooks() []syscallHook {
	hooks := []syscallHook{
		{name: "close", choices: [][]hookChoice{{wrapper("close")}}},
		{name: "close_range", choices: [][]hookChoice{{wrapper("close_range")}}},
		{name: "dup", choices: [][]hookChoice{{wrapper("dup")}}},
		{name: "dup3", choices: [][]hookChoice{{wrapper("dup3")}}},
		{name: "execve", choices: [][]hookChoice{{wrapper("execve")}}},
		{name: "execveat", choices: [][]hookChoice{{wrapper("execveat")}}, optional: true},
		{name: "connect", choices: [][]hookChoice{{inner("connect", 3)}, {wrapper("connect")}}},
		{name: "bind", choices: [][]hookChoice{{inner("bind", 3)}, {wrapper("bind")}}},
		{name: "listen", choices: [][]hookChoice{{inner("listen", 2)}, {wrapper("listen")}}},
		{name: "shutdown", choices: [][]hookChoice{{inner("shutdown", 2)}, {wrapper("shutdown")}}},
		{name: "accept", choices: [][]hookChoice{{inner("accept4", 4)}, {wrapper("accept"), wrapper("accept4")}}},
	}
	if runtime.GOARCH == "amd64" {
		hooks = append(hooks, syscallHook{name: "dup2", choices: [][]hookChoice{{wrapper("dup2")}}}) // arm64 has dup3 only
	}
	return hooks
}

// planFunctionHooks picks, from the kernel's BTF, the functions to hook for
// every syscall. It fails, naming the syscall, when one tcptrail needs
// cannot be hooked. Skipped lists the optional ones left out.
func planFunctionHooks(kspec *btf.Spec) (plan []functionHook, skipped []string, err error) {
	for _, sc := range syscallHooks() {
		var chosen []hookChoice
		for _, choice := range sc.choices {
			ok := true
			for _, c := range choice {
				ok = ok && hookable(kspec, c)
			}
			if ok {
				chosen = choice
				break
			}
		}
		if chosen == nil {
			if sc.optional {
				skipped = append(skipped, sc.name)
				continue
			}
			return nil, nil, fmt.Errorf("no function behind %s(2) in the kernel's BTF", sc.name)
		}
		for _, c := range chosen {
			plan = append(plan, functionHook{enter: c.enter, exit: c.exit, target: c.target})
		}
	}
	return plan, skipped, nil
}

// hookable reports whether the kernel's BTF has c's function with the
// parameters its programs expect. A wrapper must name its parameter
// "regs": the not-implemented stubs of the same name take "__unused".
func hookable(kspec *btf.Spec, c hookChoice) bool {
	var fn *btf.Func
	if err := kspec.TypeByName(c.target, &fn); err != nil {
		return false
	}
	proto, ok := fn.Type.(*btf.FuncProto)
	if !ok || len(proto.Params) != c.params {
		return false
	}
	return !c.wrapper || proto.Params[0].Name == "regs"
}

var errNoTrampolineImages = errors.New("the kernel cannot keep a trampoline while a task sleeps in the traced function (Linux 5.12)")
