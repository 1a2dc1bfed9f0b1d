package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/tcptrail/tcptrail/internal/privtest"
	"github.com/tcptrail/tcptrail/internal/syncbuf"
	"github.com/tcptrail/tcptrail/internal/testwait"
	"github.com/tcptrail/tcptrail/tracer/socktable"
)

// binary is tcptrail built once for the end-to-end tests (or prebuilt).
var binary string

func TestMain(m *testing.M) {
	// The test binary as a launcher: it drops CAP_SYS_NICE and runs the
	// command after it (see TestPriorityBoost).
	if os.Getenv(dropSysNiceEnv) != "" {
		execWithoutSysNice()
	}
	// TCPTRAIL_TEST_BINDIR: a prebuilt tcptrail, for machines that run the
	// compiled tests without a Go toolchain (the kernel matrix, vm/).
	if dir := os.Getenv("TCPTRAIL_TEST_BINDIR"); dir != "" {
		binary = filepath.Join(dir, "tcptrail")
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "tcptrail-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "tcptrail")
	// The demo programs beside it: the watch tests run the story.
	for _, b := range [][2]string{{binary, "."}, {filepath.Join(dir, "demo-server"), "../../demo/server"}, {filepath.Join(dir, "demo-client"), "../../demo/client"}} {
		if out, err := exec.Command("go", "build", "-o", b[0], b[1]).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", b[1], err, out)
			os.Exit(1)
		}
	}
	// World-traversable so that the unprivileged test can run it.
	os.Chmod(dir, 0o755)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

func runBinary(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if cmd.ProcessState == nil {
		t.Fatalf("run %v: %v", cmd.Args, err)
	}
	return result{cmd.ProcessState.ExitCode(), out.String(), errb.String()}
}

// checkCleanError asserts a clear one-line error and exit code 2.
func checkCleanError(t *testing.T, r result, want string) {
	t.Helper()
	if r.code != 2 {
		t.Errorf("exit code %d, want 2 (stderr %q)", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, want) {
		t.Errorf("stderr %q does not say %q", r.stderr, want)
	}
	if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic") {
		t.Errorf("stack trace on bad input:\n%s", r.stderr)
	}
}

func TestBadInput(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"trace", "--port", "0"}, "port 0 is out of range (1-65535)"},
		{[]string{"trace", "--port", "70000"}, "port 70000 is out of range (1-65535)"},
		{[]string{"trace", "--port", "abc"}, `"abc" is not a port number`},
		{[]string{"trace", "--port", "80,"}, "empty port"},
		{[]string{"trace", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"trace", "extra"}, `unexpected argument "extra"`},
		{[]string{"trace", "--pid", "-3"}, "is not a process id"},
		{[]string{"trace", "--pid", "99999999"}, "is not a process id"},
		{[]string{"trace", "--pid", "4000000"}, "no such process"},
		{[]string{"trace", "--duration", "soon"}, "invalid argument"},
		{[]string{"trace", "--ring-size", "3000"}, "power of two"},
		{[]string{"trace", "--priority-boost", "-1"}, "--priority-boost -1: want 0 to 39"},
		{[]string{"watch", "--priority-boost", "40"}, "--priority-boost 40: want 0 to 39"},
		{[]string{"watch", "--leak-after", "0s"}, "--leak-after must be positive"},
		{[]string{"watch", "--port", "65536"}, "port 65536 is out of range (1-65535)"},
		{[]string{"watch", "now"}, `unexpected argument "now"`},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{nil, "Usage"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			checkCleanError(t, runBinary(t, exec.Command(binary, tt.args...)), tt.want)
		})
	}
}

func TestHelp(t *testing.T) {
	r := runBinary(t, exec.Command(binary, "trace", "--help"))
	if r.code != 0 || !strings.Contains(r.stderr, "--port") || !strings.Contains(r.stderr, "Examples:") {
		t.Fatalf("trace --help: exit %d\n%s", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "wakeup-size") {
		t.Error("internal tuning flags must stay hidden")
	}
	r = runBinary(t, exec.Command(binary, "watch", "--help"))
	if r.code != 0 || !strings.Contains(r.stderr, "--metrics") || !strings.Contains(r.stderr, "SIGHUP") {
		t.Fatalf("watch --help: exit %d\n%s", r.code, r.stderr)
	}
}

func TestNotRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		r := runBinary(t, exec.Command(binary, "trace", "--port", "7070"))
		checkCleanError(t, r, "needs CAP_BPF and CAP_PERFMON")
		return
	}
	cmd := exec.Command(binary, "trace", "--port", "7070")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	checkCleanError(t, runBinary(t, cmd), "tcptrail needs CAP_BPF and CAP_PERFMON (or root): run it with sudo")
}

func TestNoBTF(t *testing.T) {
	cmd := exec.Command(binary, "trace", "--port", "7070")
	cmd.Env = append(os.Environ(), "TCPTRAIL_KERNEL_BTF=/nonexistent/vmlinux")
	checkCleanError(t, runBinary(t, cmd), "kernel BTF not found")
}

func TestUnwritableOutput(t *testing.T) {
	privtest.Require(t)
	r := runBinary(t, exec.Command(binary, "trace", "--port", "7070", "-o", "/nonexistent/dir/cap.jsonl"))
	checkCleanError(t, r, "cannot write the capture file /nonexistent/dir/cap.jsonl: no such file or directory")
}

// programsOf lists the BPF programs process pid holds, from the prog_id
// lines of its fds' fdinfo: exact even when other tracers run alongside.
func programsOf(t *testing.T, pid int) []ebpf.ProgramID {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ids []ebpf.ProgramID
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			var id uint32
			if _, err := fmt.Sscanf(line, "prog_id:\t%d", &id); err == nil {
				ids = append(ids, ebpf.ProgramID(id))
			}
		}
	}
	return ids
}

// loaded reports whether a program with this ID is still in the kernel.
func loaded(id ebpf.ProgramID) bool {
	prog, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return false
	}
	prog.Close()
	return true
}

// startTracer starts the binary's trace and waits for its ready file.
func startTracer(t *testing.T, args ...string) (*exec.Cmd, *syncbuf.Buffer, *syncbuf.Buffer) {
	t.Helper()
	return startCommand(t, "trace", args...)
}

// startCommand starts the binary's command sub (trace or watch) and waits
// for its ready file. Its output may be read while it runs.
func startCommand(t *testing.T, sub string, args ...string) (*exec.Cmd, *syncbuf.Buffer, *syncbuf.Buffer) {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	cmd := exec.Command(binary, append([]string{sub, "--ready-file", ready}, args...)...)
	var out, errb syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// A deadline, not a wait: an emulated guest running several tests at
	// once takes seconds to probe the kernel and load the programs.
	testwait.Until(t, 60*time.Second, "the tracer's ready file", func() bool {
		if cmd.ProcessState != nil {
			t.Fatalf("tracer exited before it was ready; stderr:\n%s", errb.String())
		}
		_, err := os.Stat(ready)
		return err == nil
	})
	return cmd, &out, &errb
}

// oneConnection opens and closes one loopback connection on port.
func oneConnection(t *testing.T, port int) {
	t.Helper()
	ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	connectAndClose(t, ln)
	// The last ACKs may be processed a little later (timers, softirqs on
	// another CPU): wait until the kernel is done with both ends, so that
	// whatever the tracer misses is its own doing. Its ring buffer may
	// still hold the events: that is the drain under test.
	waitConnectionsClosed(t, port)
}

// connectAndClose makes one connection to ln and closes both ends.
func connectAndClose(t *testing.T, ln net.Listener) {
	t.Helper()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	s.Close()
}

// waitConnectionsClosed waits until no connection of port is left but in
// FIN_WAIT2, TIME_WAIT or CLOSE (listeners aside).
func waitConnectionsClosed(t *testing.T, port int) {
	t.Helper()
	busy := uint32(socktable.AllStates &^ (1<<5 | 1<<6 | 1<<7 | 1<<10)) // not FIN_WAIT2, TIME_WAIT, CLOSE, LISTEN
	testwait.Until(t, 10*time.Second, "the connections' ends to close", func() bool {
		left, err := socktable.DumpFunc(syscall.AF_INET, busy, func(e *socktable.Entry) bool {
			return e.Local.Port() == uint16(port) || e.Remote.Port() == uint16(port)
		})
		return err == nil && len(left) == 0
	})
}

// TestSignalLeavesCompleteCapture: SIGTERM and SIGINT detach, drain, write
// the summary and exit 0, the capture is valid and private, and no program
// stays in the kernel.
func TestSignalLeavesCompleteCapture(t *testing.T) {
	privtest.Require(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			capPath := filepath.Join(t.TempDir(), "cap.jsonl")
			cmd, out, errb := startTracer(t, "--port", "17201", "-o", capPath)
			mine := programsOf(t, cmd.Process.Pid)
			if len(mine) < 5 {
				t.Fatalf("tracer holds %d programs, want 5", len(mine))
			}
			// Signal at once: the events still in the ring buffer must be
			// drained into the capture (counted below).
			oneConnection(t, 17201)
			cmd.Process.Signal(sig)
			if err := cmd.Wait(); err != nil {
				t.Fatalf("exit after %v: %v\n%s", sig, err, errb.String())
			}
			if !strings.Contains(out.String(), "12 transitions") {
				t.Errorf("no summary on stdout:\n%s", out.String())
			}
			lines := readJSONLines(t, capPath)
			if lines[0]["type"] != "header" || lines[len(lines)-1]["type"] != "summary" {
				t.Fatalf("capture must open with a header and end with a summary: first %v, last %v", lines[0]["type"], lines[len(lines)-1]["type"])
			}
			n := 0
			for _, l := range lines {
				if l["type"] == "transition" {
					n++
				}
			}
			// The listener's CLOSE->LISTEN and LISTEN->CLOSE, and 5 per end.
			if n != 12 {
				t.Errorf("%d transitions in the capture, want 12", n)
			}
			if sum := lines[len(lines)-1]; sum["transitions"] != float64(12) {
				t.Errorf("summary counts %v transitions", sum["transitions"])
			}
			fi, _ := os.Stat(capPath)
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("capture mode %v, want 0600", fi.Mode().Perm())
			}
			for _, id := range mine {
				testwait.Until(t, 5*time.Second, fmt.Sprintf("program %d to leave the kernel", id),
					func() bool { return !loaded(id) })
			}
		})
	}
}

// waitExit waits up to timeout for cmd to exit and returns how it ended;
// still running at the deadline fails the test, naming what should have
// ended it.
func waitExit(t *testing.T, cmd *exec.Cmd, timeout time.Duration, what string) error {
	t.Helper()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		return err
	case <-time.After(timeout):
		t.Fatalf("%s: still running after %s", what, timeout)
		return nil
	}
}

func readJSONLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", len(out)+1, err, sc.Text())
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		t.Fatal("empty capture")
	}
	return out
}

// TestDurationAndJSONStdout: --duration ends the trace by itself; --json
// prints JSON Lines on stdout and the summary on stderr.
func TestDurationAndJSONStdout(t *testing.T) {
	privtest.Require(t)
	cmd, out, errb := startTracer(t, "--port", "17202", "--json", "--duration", "1500ms")
	ready := time.Now()
	oneConnection(t, 17202)
	if err := waitExit(t, cmd, 15*time.Second, "--duration 1500ms"); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	if d := time.Since(ready); d < 1400*time.Millisecond {
		t.Errorf("exited %v after it was ready, before its --duration", d)
	}
	var types []string
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("stdout line is not JSON: %q", line)
		}
		types = append(types, m["type"].(string))
	}
	if types[0] != "header" || types[len(types)-1] != "summary" {
		t.Fatalf("record types %v", types)
	}
	if !strings.Contains(errb.String(), "12 transitions") {
		t.Errorf("summary on stderr missing: %s", errb.String())
	}
}

// TestKilledTracerLeavesReadableCapture: after SIGKILL the capture holds
// whole lines up to the kill, and report tells the story and says the
// summary is missing.
func TestKilledTracerLeavesReadableCapture(t *testing.T) {
	privtest.Require(t)
	capPath := filepath.Join(t.TempDir(), "cap.jsonl")
	cmd, _, _ := startTracer(t, "--port", "17203", "-o", capPath, "--quiet")
	oneConnection(t, 17203)
	// The writer flushes whenever the event stream goes quiet: wait until
	// the last transition is on disk, then kill without warning.
	testwait.Until(t, 5*time.Second, "12 transitions on disk", func() bool {
		b, _ := os.ReadFile(capPath)
		return strings.Count(string(b), `"type":"transition"`) == 12
	})
	cmd.Process.Kill()
	cmd.Wait()

	r := runBinary(t, exec.Command(binary, "report", capPath))
	if !strings.Contains(r.stderr, "has no summary record") {
		t.Errorf("report does not say the summary is missing: %q", r.stderr)
	}
	if !strings.Contains(r.stdout, "CUT SHORT") || !strings.Contains(r.stdout, "127.0.0.1:17203") {
		t.Errorf("report of the killed capture:\n%s", r.stdout)
	}
}

// TestRingFullSaysHow: when the reader falls behind and the kernel drops
// events, trace and watch say so while they run, with the one thing the
// user can do about it (watch once, in its LOST line), and the summary
// counts them. The tracer is stopped
// (SIGSTOP) while connections come, so that its one-page ring fills.
func TestRingFullSaysHow(t *testing.T) {
	privtest.Require(t)
	page := os.Getpagesize()
	// The same hint on the line each reports losses with.
	hint := fmt.Sprintf("the reader fell behind the kernel; a larger ring buffer (--ring-size, now %d KiB) holds more", page>>10)
	for _, c := range []struct{ sub, line string }{
		{"trace", "tcptrail: warning: "},
		{"watch", " LOST "},
	} {
		t.Run(c.sub, func(t *testing.T) {
			capPath := filepath.Join(t.TempDir(), "cap.jsonl")
			args := []string{"--port", "17206", "--ring-size", strconv.Itoa(page), "-o", capPath}
			if c.sub == "trace" {
				args = append(args, "-q")
			}
			cmd, _, errb := startCommand(t, c.sub, args...)
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("stderr:\n%s", errb.String())
				}
			})
			ln, err := net.Listen("tcp4", "127.0.0.1:17206")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			// 12 transitions a connection, 128 bytes each: far more than a page.
			for range 20 {
				connectAndClose(t, ln)
			}
			waitConnectionsClosed(t, 17206)
			if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			testwait.Until(t, 30*time.Second, "the warning of a full ring buffer", func() bool {
				for _, l := range strings.Split(errb.String(), "\n") {
					if strings.Contains(l, c.line) && strings.Contains(l, "lost so far") && strings.HasSuffix(l, hint) {
						return true
					}
				}
				return false
			})
			cmd.Process.Signal(syscall.SIGINT)
			if err := waitExit(t, cmd, 30*time.Second, "SIGINT"); err != nil {
				t.Fatalf("exit: %v\n%s", err, errb.String())
			}
			lines := readJSONLines(t, capPath)
			sum := lines[len(lines)-1]
			lost, _ := sum["lost"].(map[string]any)
			if full, _ := lost["ringbuf_full"].(float64); sum["type"] != "summary" || full == 0 {
				t.Fatalf("the summary does not count the events the full ring buffer lost: %v", sum)
			}
			// Each loss told once: watch's LOST lines, not the
			// session's warning as well.
			for _, l := range strings.Split(errb.String(), "\n") {
				if c.sub == "watch" && strings.Contains(l, "warning:") && strings.Contains(l, "events lost so far") {
					t.Errorf("watch told the loss in a warning besides its LOST line: %s", l)
				}
			}
		})
	}
}
