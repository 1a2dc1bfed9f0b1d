package kernel

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
)

// Features is what the running kernel offers tcptrail, found by loading
// small probe programs: never by its version number, which distributions
// backport around.
type Features struct {
	// CookieHelper: bpf_get_socket_cookie() works in tracing programs
	// (Linux 5.12). Without it the programs make up socket identities,
	// which sock_diag does not know.
	CookieHelper bool
	// TaskBTF: bpf_get_current_task_btf() exists (Linux 5.11). Without it
	// the current task is read through probe reads, a little slower.
	TaskBTF bool
	// FunctionTracing: fentry/fexit programs attach to the syscall
	// functions, and the kernel keeps a trampoline alive while a task
	// sleeps in the function it traces (a blocking accept): Linux 5.12's
	// bpf_tramp_image. Without it the syscalls are hooked through the
	// raw_syscalls tracepoints, which every syscall on the host pays for.
	FunctionTracing bool
	// FunctionTracingErr says why FunctionTracing is false.
	FunctionTracingErr error
}

// ErrUnsupportedKernel wraps what a kernel lacks that tcptrail cannot do
// without.
var ErrUnsupportedKernel = errors.New("this kernel cannot run tcptrail")

// Probe results are stable for the life of the process.
var probed struct {
	done bool
	f    Features
	err  error
}

// ProbeFeatures finds out what the running kernel offers. It returns an
// error wrapping ErrUnsupportedKernel, in one sentence naming what is
// missing, when tcptrail cannot run at all.
func ProbeFeatures() (Features, error) {
	return probeFeatures(btf.NewCache())
}

// probeFeatures is ProbeFeatures with the kernel's BTF parsed once, into
// types, for every probe and for whoever loads after them: a parse costs
// tens of milliseconds of CPU and megabytes of garbage each time.
func probeFeatures(types *btf.Cache) (Features, error) {
	if probed.done {
		return probed.f, probed.err
	}
	probed.f, probed.err = runProbes(types)
	probed.done = true
	return probed.f, probed.err
}

func runProbes(types *btf.Cache) (Features, error) {
	var f Features
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		return f, unsupported("BPF ring buffers (Linux 5.8)", err)
	}
	if err := probeTracing(types, nil); err != nil {
		return f, unsupported("BTF-typed tracepoints (tp_btf, Linux 5.5)", err)
	}
	f.CookieHelper = probeTracing(types, asm.Instructions{
		asm.LoadMem(asm.R1, asm.R1, 0, asm.DWord), // the tracepoint's sk
		asm.FnGetSocketCookie.Call(),
	}) == nil
	f.TaskBTF = probeTracing(types, asm.Instructions{asm.FnGetCurrentTaskBtf.Call()}) == nil
	f.FunctionTracingErr = probeFunctionTracing(types)
	f.FunctionTracing = f.FunctionTracingErr == nil
	return f, nil
}

// loadProbeProgram loads one program with the kernel types of types:
// through a collection, since a lone program would parse the kernel's BTF
// again to find its attach target.
func loadProbeProgram(types *btf.Cache, spec *ebpf.ProgramSpec) (*ebpf.Program, error) {
	coll, err := ebpf.NewCollectionWithOptions(&ebpf.CollectionSpec{
		Programs: map[string]*ebpf.ProgramSpec{"probe": spec},
	}, ebpf.CollectionOptions{Cache: types, Programs: ebpf.ProgramOptions{LogDisabled: true}})
	if err != nil {
		// Without the collection's "program probe: ", as a lone program
		// would say it.
		if inner := errors.Unwrap(err); inner != nil {
			err = inner
		}
		return nil, err
	}
	defer coll.Close()
	return coll.DetachProgram("probe"), nil
}

// probeFunctionTracing checks that every syscall tcptrail needs can be
// hooked as a function, then attaches an empty fexit program to the first
// of them and detaches it.
func probeFunctionTracing(types *btf.Cache) error {
	kspec, err := types.Kernel()
	if err != nil {
		return err
	}
	if _, err := kspec.AnyTypeByName("bpf_tramp_image"); err != nil {
		return errNoTrampolineImages
	}
	plan, _, err := planFunctionHooks(kspec)
	if err != nil {
		return err
	}
	prog, err := loadProbeProgram(types, &ebpf.ProgramSpec{
		Type:         ebpf.Tracing,
		AttachType:   ebpf.AttachTraceFExit,
		AttachTo:     plan[0].target,
		License:      "Dual BSD/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return err
	}
	defer prog.Close()
	l, err := link.AttachTracing(link.TracingOptions{Program: prog})
	if err != nil {
		return err
	}
	return l.Close()
}

func unsupported(what string, err error) error {
	if errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("%w: it lacks %s", ErrUnsupportedKernel, what)
	}
	return fmt.Errorf("%w: it lacks %s (%v)", ErrUnsupportedKernel, what, err)
}

// probeTracing loads (without attaching) a tp_btf program on
// sock:inet_sock_set_state made of body followed by "return 0".
func probeTracing(types *btf.Cache, body asm.Instructions) error {
	insns := append(body, asm.Mov.Imm(asm.R0, 0), asm.Return())
	prog, err := loadProbeProgram(types, &ebpf.ProgramSpec{
		Type:         ebpf.Tracing,
		AttachType:   ebpf.AttachTraceRawTp,
		AttachTo:     "inet_sock_set_state",
		License:      "Dual BSD/GPL",
		Instructions: insns,
	})
	if err != nil {
		return err
	}
	return prog.Close()
}

// Degraded lists, one phrase each, what tcptrail does less well on this
// kernel. Empty when nothing is.
func (f Features) Degraded() []string {
	var d []string
	if !f.CookieHelper {
		d = append(d, "no socket cookies in tracing programs (Linux 5.12): tcptrail names sockets itself and matches them with the socket table by address")
	}
	if !f.TaskBTF {
		d = append(d, "no BTF-typed current task (Linux 5.11): reads it through probe reads")
	}
	return d
}
