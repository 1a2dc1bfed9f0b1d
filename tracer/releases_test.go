package tracer_test

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcptrail/tcptrail/tracer"
	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/kernel"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

// The calls below close a socket's last fd without naming it, and the
// kernel releases the socket after the call returned (task_work on the way
// back to user space, on every kernel). Each transition must still name the
// call.

// rawConnect connects a socket the Go runtime knows nothing about (so that
// the tests may close its fd behind the runtime's back) and returns its fd
// and local address.
func rawConnect(t *testing.T, addr netip.AddrPort, flags int) (int, netip.AddrPort) {
	t.Helper()
	fd, local, err := connectRaw(addr, flags)
	if err != nil {
		t.Fatal(err)
	}
	return fd, local
}

func connectRaw(addr netip.AddrPort, flags int) (int, netip.AddrPort, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|flags, unix.IPPROTO_TCP)
	if err != nil {
		return -1, netip.AddrPort{}, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}); err != nil {
		unix.Close(fd)
		return -1, netip.AddrPort{}, fmt.Errorf("connect %v: %w", addr, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return -1, netip.AddrPort{}, fmt.Errorf("getsockname: %w", err)
	}
	in4 := sa.(*unix.SockaddrInet4)
	return fd, netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port)), nil
}

func TestCauseDup2OverSocket(t *testing.T) {
	t.Parallel()
	s := startSession(t, tracer.Config{}, 17111)
	addr, _ := loopbackServer(t, 17111)
	fd, local := rawConnect(t, addr, 0)
	null, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(null)
	if err := unix.Dup3(null, fd, unix.O_CLOEXEC); err != nil { // the socket's only fd now holds /dev/null
		t.Fatal(err)
	}
	defer unix.Close(fd)
	st := waitStep(t, s.rec, local, event.Established, event.FinWait1)
	want := fmt.Sprintf("dup2 over fd %d", fd)
	if st.CauseKind != timeline.CauseClose || st.Cause != want || st.CausePID != uint32(os.Getpid()) {
		t.Fatalf("got %v, want cause %q in pid %d", st, want, os.Getpid())
	}
}

func TestCauseCloseRange(t *testing.T) {
	t.Parallel()
	s := startSession(t, tracer.Config{}, 17112)
	addr, _ := loopbackServer(t, 17112)
	fd, local := rawConnect(t, addr, unix.SOCK_CLOEXEC)
	if err := unix.CloseRange(uint(fd), uint(fd), 0); err != nil {
		t.Fatalf("close_range: %v", err)
	}
	st := waitStep(t, s.rec, local, event.Established, event.FinWait1)
	want := fmt.Sprintf("close_range(fd %d-%d)", fd, fd)
	if st.CauseKind != timeline.CauseClose || st.Cause != want || st.CausePID != uint32(os.Getpid()) {
		t.Fatalf("got %v, want cause %q in pid %d", st, want, os.Getpid())
	}
	// The fd is gone from the socket's owners after the call.
	next := waitStep(t, s.rec, local, event.FinWait1, event.FinWait2)
	if next.Owners != timeline.OwnersText(nil) {
		t.Fatalf("owners after close_range: %s, want none", next.Owners)
	}
}

func init() {
	// The exec helper's main goroutine stays on the main thread, the
	// leader: "exec from the leader" means it.
	if os.Getenv("TCPTRAIL_TEST_HELPER") == "exec" {
		runtime.LockOSThread()
	}
}

// execHelper (TCPTRAIL_TEST_HELPER=exec) connects a close-on-exec socket to
// TCPTRAIL_TEST_ADDR, prints its local address, and on a line from stdin
// executes itself as a "hold" helper, which closes the socket. With
// TCPTRAIL_TEST_EXEC_THREAD=other it executes from a thread other than the
// leader, which the kernel turns into the leader during execve.
func execHelper() {
	fd, local, err := connectRaw(netip.MustParseAddrPort(os.Getenv("TCPTRAIL_TEST_ADDR")), unix.SOCK_CLOEXEC)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("%s %d\n", local, fd)
	bufio.NewReader(os.Stdin).ReadString('\n')
	if os.Getenv("TCPTRAIL_TEST_EXEC_THREAD") != "other" {
		execHold()
	}
	// The main goroutine holds the leader thread: a goroutine locked to
	// its own thread runs elsewhere.
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			fmt.Fprintln(os.Stderr, "exec helper: not on another thread")
			os.Exit(1)
		}
		execHold()
	}()
	select {}
}

func execHold() {
	env := append(os.Environ(), "TCPTRAIL_TEST_HELPER=hold")
	err := unix.Exec(os.Args[0], []string{os.Args[0], "-test.run=^$"}, env)
	fmt.Fprintln(os.Stderr, "exec:", err)
	os.Exit(1)
}

func TestCauseCloseOnExec(t *testing.T) {
	t.Parallel()
	s := startSession(t, tracer.Config{}, 17113)
	addr, _ := loopbackServer(t, 17113)
	for _, thread := range []string{"leader", "other"} {
		t.Run(thread, func(t *testing.T) {
			child := exec.Command(os.Args[0], "-test.run=^$")
			child.Env = append(os.Environ(), "TCPTRAIL_TEST_HELPER=exec", "TCPTRAIL_TEST_ADDR="+addr.String(),
				"TCPTRAIL_TEST_EXEC_THREAD="+thread)
			child.Stderr = os.Stderr
			stdin, err := child.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := child.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := child.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { stdin.Close(); child.Process.Kill(); child.Wait() })
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if err != nil {
				t.Fatalf("helper: %v", err)
			}
			fields := strings.Fields(line)
			local := netip.MustParseAddrPort(fields[0])
			if _, err := strconv.Atoi(fields[1]); err != nil {
				t.Fatalf("helper said %q", line)
			}
			fmt.Fprintln(stdin, "exec")
			st := waitStep(t, s.rec, local, event.Established, event.FinWait1)
			if st.CauseKind != timeline.CauseClose || st.Cause != "execve (close-on-exec)" || st.CausePID != uint32(child.Process.Pid) {
				t.Fatalf("got %v, want cause execve (close-on-exec) in pid %d", st, child.Process.Pid)
			}
		})
	}
}

// TestSyscallHooks ties a connect and a close to their calls through each
// way of hooking the syscalls the kernel offers: functions (fentry/fexit)
// where it can, the syscall tracepoints and the raw_syscalls tracepoints
// everywhere.
func TestSyscallHooks(t *testing.T) {
	requirePrivileges(t)
	feat, err := kernel.ProbeFeatures()
	if err != nil {
		t.Fatal(err)
	}
	hooks := []kernel.Hooks{kernel.HooksTracepoint, kernel.HooksSyscallTracepoint}
	if feat.FunctionTracing {
		hooks = append(hooks, kernel.HooksFunction)
	} else {
		t.Logf("this kernel cannot hook syscall functions: tracepoints only")
	}
	for i, h := range hooks {
		t.Run(string(h), func(t *testing.T) {
			port := uint16(17120 + i)
			s := startSession(t, tracer.Config{Kernel: kernel.Config{SyscallHooks: h}}, port)
			addr, _ := loopbackServer(t, port)
			fd, local := rawConnect(t, addr, unix.SOCK_CLOEXEC)
			if err := unix.Close(fd); err != nil {
				t.Fatal(err)
			}
			// An ephemeral port is chosen after CLOSE->SYN_SENT: the
			// remote address is what names this connection's first step.
			var conn Step
			s.rec.waitFor(t, 5*time.Second, "CLOSE->SYN_SENT to "+addr.String(), func() bool {
				steps := s.rec.Steps(func(st Step) bool { return st.Remote == addr && st.New == event.SynSent })
				if len(steps) > 0 {
					conn = steps[0]
				}
				return len(steps) > 0
			})
			closed := waitStep(t, s.rec, local, event.Established, event.FinWait1)
			if want := fmt.Sprintf("connect(fd %d)", fd); conn.Cause != want {
				t.Errorf("%v: want %s", conn, want)
			}
			if want := fmt.Sprintf("close(fd %d)", fd); closed.Cause != want || closed.CausePID != uint32(os.Getpid()) {
				t.Errorf("%v: want %s in pid %d", closed, want, os.Getpid())
			}
		})
	}
}
