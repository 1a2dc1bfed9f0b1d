package tracer_test

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tcptrail/tcptrail/internal/privtest"
	"github.com/tcptrail/tcptrail/internal/testwait"
	"github.com/tcptrail/tcptrail/tracer"
	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

// demoBin holds the demo programs, built once by buildDemo (or prebuilt).
var demoBin string

func TestMain(m *testing.M) {
	// Re-executed as a helper process that holds inherited fds until its
	// stdin closes: a real second owner for the fork tests.
	switch os.Getenv("TCPTRAIL_TEST_HELPER") {
	case "hold":
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	case "exec":
		execHelper()
	}
	// TCPTRAIL_TEST_BINDIR: prebuilt demo-server and demo-client, for
	// machines that run the compiled tests without a Go toolchain (the
	// kernel matrix, vm/). Nothing to build then.
	if dir := os.Getenv("TCPTRAIL_TEST_BINDIR"); dir != "" {
		demoBin = dir
		buildOnce.Do(func() {})
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "tcptrail-demo")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	demoBin = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var buildOnce sync.Once
var buildErr error

// buildDemo builds demo/server and demo/client into demoBin.
func buildDemo(t *testing.T) {
	t.Helper()
	buildOnce.Do(func() {
		for _, p := range []string{"server", "client"} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(demoBin, "demo-"+p), "../demo/"+p).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("build demo/%s: %v\n%s", p, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

func requirePrivileges(t *testing.T) { privtest.Require(t) }

// Step is a transition as a test sees it (the tracker reuses its own).
type Step struct {
	Cookie      uint64
	NetNS       uint32
	Local       netip.AddrPort
	Remote      netip.AddrPort
	Old, New    event.State
	Cause       string
	CauseKind   timeline.CauseKind
	CausePID    uint32
	Owners      string
	PID         uint32
	Gap         bool
	PrevStateNs int64
	MonoNs      uint64
	ArrivedNs   uint64 // when the sink got it (monotonic)
}

func (s Step) String() string {
	return fmt.Sprintf("#%d %v->%v %v->%v (%s; owners %s; ctx %d)", s.Cookie, s.Local, s.Remote, s.Old, s.New, s.Cause, s.Owners, s.PID)
}

// recorder is a sink that keeps everything for the test to inspect.
type recorder struct {
	mu     sync.Mutex
	steps  []Step
	recs   []any
	header *record.Header
	wake   chan struct{}
}

func newRecorder() *recorder { return &recorder{wake: make(chan struct{}, 1)} }

func (r *recorder) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *recorder) Begin(h *record.Header) error { r.header = h; return nil }
func (r *recorder) Transition(t *timeline.Transition, _ int64) error {
	e := t.Event
	s := Step{Cookie: e.Cookie, NetNS: e.NetNS, Local: e.Local, Remote: e.Remote, Old: e.Old, New: e.New,
		Cause: string(t.Cause.AppendText(nil)), CauseKind: t.Cause.Kind, CausePID: t.Cause.PID,
		Owners: timeline.OwnersText(t.Owners), PID: e.PID, Gap: t.Gap, PrevStateNs: t.PrevStateNs, MonoNs: e.MonoNs,
		ArrivedNs: tracer.MonoNow()}
	r.mu.Lock()
	r.steps = append(r.steps, s)
	r.recs = append(r.recs, s)
	r.mu.Unlock()
	r.signal()
	return nil
}
func (r *recorder) Record(rec any) error {
	r.mu.Lock()
	r.recs = append(r.recs, rec)
	r.mu.Unlock()
	r.signal()
	return nil
}
func (r *recorder) Flush() error              { return nil }
func (r *recorder) End(*record.Summary) error { return nil }

// Steps returns the transitions matching keep, in order.
func (r *recorder) Steps(keep func(Step) bool) []Step {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Step
	for _, s := range r.steps {
		if keep(s) {
			out = append(out, s)
		}
	}
	return out
}

// Records returns every record (Steps included), in order.
func (r *recorder) Records() []any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]any(nil), r.recs...)
}

// waitFor waits until cond holds, failing the test at the deadline.
func (r *recorder) waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-r.wake:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s; saw:\n%s", timeout, what, r.dump())
		}
	}
}

func (r *recorder) dump() string {
	var b strings.Builder
	for _, rec := range r.Records() {
		fmt.Fprintf(&b, "  %v\n", describe(rec))
	}
	return b.String()
}

func describe(rec any) string {
	switch r := rec.(type) {
	case Step:
		return r.String()
	case *record.Call:
		return fmt.Sprintf("call %s fd=%d ret=%d %s:%d->%s:%d pid=%d note=%q", r.Call, r.FD, r.Ret, r.Laddr, r.Lport, r.Raddr, r.Rport, r.PID, r.Note)
	case *record.Leak:
		return "leak " + r.Phase + ": " + r.Message
	case *record.BindConflict:
		return "bind_conflict: " + r.Message
	case *record.ConnectFail:
		return "connect_failed: " + r.Message
	case *record.Snapshot:
		return fmt.Sprintf("snapshot %s #%d %s:%d->%s:%d %s %s", r.Reason, r.Cookie, r.Laddr, r.Lport, r.Raddr, r.Rport, r.State, r.Note)
	case *record.Exit:
		return fmt.Sprintf("exit %s[%d]", r.Comm, r.PID)
	}
	return fmt.Sprintf("%T %+v", rec, rec)
}

// session is a running tracer.
type session struct {
	rec    *recorder
	cancel context.CancelFunc
	done   chan struct{}
	sum    *record.Summary
	err    error
}

// startSession starts a tracer on ports and waits until it is attached.
func startSession(t *testing.T, cfg tracer.Config, ports ...uint16) *session {
	t.Helper()
	return startSessionWith(t, cfg, nil, ports...)
}

// startSessionWith is startSession with more sinks beside the recorder.
func startSessionWith(t *testing.T, cfg tracer.Config, sinks []tracer.Sink, ports ...uint16) *session {
	t.Helper()
	requirePrivileges(t)
	cfg.Kernel.Ports = ports
	cfg.ReadyFile = filepath.Join(t.TempDir(), "ready")
	ctx, cancel := context.WithCancel(context.Background())
	s := &session{rec: newRecorder(), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.sum, s.err = tracer.Run(ctx, cfg, append([]tracer.Sink{s.rec}, sinks...)...)
	}()
	// A deadline, not a wait: an emulated guest running several tests at
	// once takes seconds to probe the kernel and load the programs.
	testwait.Until(t, 60*time.Second, "the tracer's ready file", func() bool {
		select {
		case <-s.done:
			t.Fatalf("tracer stopped before it was ready: %v", s.err)
		default:
		}
		_, err := os.Stat(cfg.ReadyFile)
		return err == nil
	})
	t.Cleanup(func() { s.stop(t) })
	return s
}

// stop ends the session and returns its summary.
func (s *session) stop(t *testing.T) *record.Summary {
	t.Helper()
	s.cancel()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("tracer did not stop within 10s")
	}
	if s.err != nil {
		t.Fatalf("tracer: %v", s.err)
	}
	return s.sum
}

// find returns the records of type T matching keep.
func find[T any](recs []any, keep func(T) bool) []T {
	var out []T
	for _, r := range recs {
		if v, ok := r.(T); ok && keep(v) {
			out = append(out, v)
		}
	}
	return out
}
