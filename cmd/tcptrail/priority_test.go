package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcptrail/tcptrail/internal/priority"
	"github.com/tcptrail/tcptrail/internal/privtest"
	"github.com/tcptrail/tcptrail/internal/syncbuf"
	"github.com/tcptrail/tcptrail/internal/testwait"
)

// dropSysNiceEnv has the test binary drop CAP_SYS_NICE and exec the
// command given in its arguments.
const dropSysNiceEnv = "TCPTRAIL_TEST_DROP_SYS_NICE"

// childNice is the nice value the command starts with there.
const childNice = 10

// execWithoutSysNice runs os.Args[1:] without CAP_SYS_NICE, even as root:
// root's exec grants what the bounding set and the inheritable and
// ambient sets hold, so it goes from all three; RLIMIT_NICE 0 allows no
// lower nice value without it.
func execWithoutSysNice() {
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
		os.Exit(125)
	}
	// Capability sets belong to a thread: change them in the one that
	// execs.
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_CAPBSET_DROP, unix.CAP_SYS_NICE, 0, 0, 0); err != nil {
		fail("drop CAP_SYS_NICE from the bounding set", err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		fail("clear the ambient capabilities", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		fail("capget", err)
	}
	data[unix.CAP_SYS_NICE/32].Inheritable &^= 1 << (unix.CAP_SYS_NICE % 32)
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		fail("drop CAP_SYS_NICE from the inheritable set", err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_NICE, &unix.Rlimit{}); err != nil {
		fail("RLIMIT_NICE", err)
	}
	// Start at nice 10 (raising one's nice value needs no privilege):
	// however low the test ran, a boost of 4 is then a change it refuses.
	if err := unix.Setpriority(unix.PRIO_PROCESS, 0, childNice); err != nil {
		fail("nice 10", err)
	}
	env := []string{}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, dropSysNiceEnv+"=") {
			env = append(env, e)
		}
	}
	err := unix.Exec(os.Args[1], os.Args[1:], env)
	fmt.Fprintln(os.Stderr, "exec:", err)
	os.Exit(125)
}

// TestPriorityBoost: every thread of a running tracer has the nice value
// --priority-boost asks for; without CAP_SYS_NICE it says so in one line
// and traces all the same.
func TestPriorityBoost(t *testing.T) {
	privtest.Require(t)
	own, err := priority.Nice()
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	for _, tt := range []struct {
		args []string
		want int
	}{
		{[]string{"trace"}, max(own-4, -20)},
		{[]string{"trace", "--priority-boost", "7"}, max(own-7, -20)},
		{[]string{"trace", "--priority-boost", "0"}, own},
		{[]string{"watch"}, max(own-4, -20)},
	} {
		t.Run(fmt.Sprint(tt.args), func(t *testing.T) {
			ready := filepath.Join(t.TempDir(), "ready")
			cmd := exec.Command(binary, append(tt.args, "--port", fmt.Sprint(port), "--ready-file", ready)...)
			var errb syncbuf.Buffer
			cmd.Stdout, cmd.Stderr = io.Discard, &errb
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			testwait.Until(t, 60*time.Second, "the ready file", func() bool {
				_, err := os.Stat(ready)
				return err == nil
			})
			// Its reader and its other goroutines run on the threads
			// there are by now.
			oneConnection(t, port)
			nice, err := priority.NiceOfThreads(cmd.Process.Pid)
			if err != nil {
				t.Fatal(err)
			}
			for tid, n := range nice {
				if n != tt.want {
					t.Errorf("thread %d of tcptrail has nice %d, want %d", tid, n, tt.want)
				}
			}
			cmd.Process.Signal(syscall.SIGTERM)
			if err := waitExit(t, cmd, 30*time.Second, "SIGTERM"); err != nil {
				t.Fatalf("exit after SIGTERM: %v\n%s", err, errb.String())
			}
			if strings.Contains(errb.String(), "priority-boost") {
				t.Errorf("stderr mentions the priority:\n%s", errb.String())
			}
		})
	}

	t.Run("without CAP_SYS_NICE", func(t *testing.T) {
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		ready := filepath.Join(t.TempDir(), "ready")
		cmd := exec.Command(self, binary, "trace", "--port", fmt.Sprint(port), "--ready-file", ready, "--duration", "1s")
		cmd.Env = append(os.Environ(), dropSysNiceEnv+"=1")
		r := runBinary(t, cmd)
		if r.code != 0 {
			t.Fatalf("exit %d without CAP_SYS_NICE, want 0 (tracing goes on); stderr:\n%s", r.code, r.stderr)
		}
		if _, err := os.Stat(ready); err != nil {
			t.Errorf("never ready: %v", err)
		}
		var warnings []string
		for _, l := range strings.Split(r.stderr, "\n") {
			if strings.Contains(l, "priority-boost") {
				warnings = append(warnings, l)
			}
		}
		want := fmt.Sprintf("tcptrail: warning: --priority-boost 4: setpriority to nice %d: permission denied: on a saturated host tcptrail may fall behind the events and lose some (they are counted)", childNice-4)
		if len(warnings) != 1 || warnings[0] != want {
			t.Errorf("warning lines %q, want exactly\n%q", warnings, want)
		}
	})
}
