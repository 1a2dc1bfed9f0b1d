package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcptrail/tcptrail/internal/privtest"
	"github.com/tcptrail/tcptrail/internal/syncbuf"
	"github.com/tcptrail/tcptrail/internal/testwait"
)

// watcher is a running 'tcptrail watch'.
type watcher struct {
	cmd         *exec.Cmd
	done        chan struct{} // closed once it exited
	out, errb   *syncbuf.Buffer
	metricsAddr string // host:port, when --metrics was given
}

// startWatch starts 'tcptrail watch' and waits until its programs are
// attached. With metrics, it serves them on a free port of 127.0.0.1.
func startWatch(t *testing.T, metrics bool, args ...string) *watcher {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	args = append([]string{"watch", "--ready-file", ready}, args...)
	if metrics {
		args = append(args, "--metrics", "127.0.0.1:0")
	}
	w := &watcher{cmd: exec.Command(binary, args...), done: make(chan struct{}), out: &syncbuf.Buffer{}, errb: &syncbuf.Buffer{}}
	w.cmd.Stdout, w.cmd.Stderr = w.out, w.errb
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.cmd.Wait(); close(w.done) }()
	t.Cleanup(func() { w.cmd.Process.Kill(); <-w.done })
	testwait.Until(t, 60*time.Second, "watch's ready file", func() bool {
		select {
		case <-w.done:
			t.Fatalf("watch exited before it was ready; stderr:\n%s", w.errb.String())
		default:
		}
		_, err := os.Stat(ready)
		return err == nil
	})
	if metrics {
		m := regexp.MustCompile(`metrics at http://([^/]+)/metrics`).FindStringSubmatch(w.errb.String())
		if m == nil {
			t.Fatalf("watch did not say where its metrics are; stderr:\n%s", w.errb.String())
		}
		w.metricsAddr = m[1]
	}
	return w
}

// stop sends SIGTERM and returns the exit code.
func (w *watcher) stop(t *testing.T) int {
	t.Helper()
	w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.done:
	case <-time.After(30 * time.Second):
		t.Fatal("watch did not exit within 30 s of SIGTERM")
	}
	return w.cmd.ProcessState.ExitCode()
}

// scrape returns the metrics page's samples: "name{labels}" → value.
func (w *watcher) scrape(t *testing.T) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + w.metricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	samples := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if strings.HasPrefix(line, "#") || i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		samples[line[:i]] = v
	}
	return samples
}

// records parses JSON Lines.
func records(t *testing.T, text string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %q: %v", line, err)
		}
		recs = append(recs, m)
	}
	return recs
}

func ofType(recs []map[string]any, typ string, match func(map[string]any) bool) []map[string]any {
	var out []map[string]any
	for _, r := range recs {
		if r["type"] == typ && (match == nil || match(r)) {
			out = append(out, r)
		}
	}
	return out
}

func phase(p string) func(map[string]any) bool {
	return func(r map[string]any) bool { return r["phase"] == p }
}

// demoBinary is a demo program built beside tcptrail (or prebuilt).
func demoBinary(name string) string { return filepath.Join(filepath.Dir(binary), name) }

// startDemoServer starts the demo server on addr and waits until it
// listens.
func startDemoServer(t *testing.T, addr string) {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "server-ready")
	srv := exec.Command(demoBinary("demo-server"), "-listen", addr, "-ready-file", ready)
	srv.Stdout, srv.Stderr = io.Discard, os.Stderr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	testwait.File(t, 30*time.Second, "the demo server", ready)
}

// TestWatchStory: 'tcptrail watch' on the story. Its stdout holds the
// diagnoses only (the leak, the failed bind, the leak's end by the exit),
// its metrics show the client holding a socket in CLOSE_WAIT while it does
// and no longer once it exited, and SIGTERM ends it with a summary, exit 0.
func TestWatchStory(t *testing.T) {
	privtest.Require(t)
	const server, client = "127.0.0.1:17510", "127.0.0.1:17511"
	w := startWatch(t, true, "--port", "17510,17511", "--leak-after", "500ms")
	startDemoServer(t, server)
	cl := exec.Command(demoBinary("demo-client"), "-server", server, "-local", client, "-attempts", "2", "-linger", "1s")
	cl.Stdout, cl.Stderr = io.Discard, os.Stderr
	if err := cl.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Process.Kill(); cl.Wait() })

	testwait.Until(t, 30*time.Second, "the bind conflict on stdout", func() bool {
		return len(ofType(records(t, w.out.String()), "bind_conflict", nil)) > 0
	})
	const cw = `{comm="demo-client",container=""}`
	m := w.scrape(t)
	if m["tcptrail_close_wait_sockets"+cw] != 1 || m["tcptrail_leaks_total"+cw] != 1 || m["tcptrail_bind_conflicts_total"] != 1 {
		t.Errorf("during the leak: close_wait_sockets %v, leaks_total %v, bind_conflicts_total %v; want 1, 1, 1",
			m["tcptrail_close_wait_sockets"+cw], m["tcptrail_leaks_total"+cw], m["tcptrail_bind_conflicts_total"])
	}
	if age := m["tcptrail_close_wait_oldest_seconds"+cw]; age < 0.5 || age > 60 {
		t.Errorf("close_wait_oldest_seconds %v: the client's socket has been in CLOSE_WAIT for about a second", age)
	}
	if m[`tcptrail_sockets{state="CLOSE_WAIT"}`] < 1 || m[`tcptrail_sockets{state="LISTEN"}`] < 1 {
		t.Errorf("sockets by state: CLOSE_WAIT %v, LISTEN %v; want at least 1 each",
			m[`tcptrail_sockets{state="CLOSE_WAIT"}`], m[`tcptrail_sockets{state="LISTEN"}`])
	}
	if m[`tcptrail_transitions_total{cause_kind="peer_fin",new="CLOSE_WAIT",old="ESTABLISHED"}`] != 1 {
		t.Errorf("no ESTABLISHED→CLOSE_WAIT transition by peer_fin counted")
	}

	if err := cl.Wait(); err != nil && cl.ProcessState.ExitCode() != 1 {
		t.Fatalf("demo client: %v", err)
	}
	testwait.Until(t, 30*time.Second, "the leak's end on stdout", func() bool {
		return len(ofType(records(t, w.out.String()), "leak", phase("closed_by_exit"))) > 0
	})
	m = w.scrape(t)
	if n, ok := m["tcptrail_close_wait_sockets"+cw]; ok {
		t.Errorf("the client exited, yet close_wait_sockets%s = %v", cw, n)
	}

	if code := w.stop(t); code != 0 {
		t.Fatalf("watch exited %d after SIGTERM; stderr:\n%s", code, w.errb.String())
	}
	recs := records(t, w.out.String())
	if recs[0]["type"] != "header" || recs[len(recs)-1]["type"] != "summary" {
		t.Errorf("stdout must open with the header and end with the summary: %v ... %v", recs[0]["type"], recs[len(recs)-1]["type"])
	}
	for _, r := range recs {
		switch r["type"] {
		case "header", "summary", "leak", "bind_conflict", "lost":
			// lost: the kernel's skipped invocations are counted for the
			// whole host, whatever else runs beside the test.
		default:
			t.Errorf("watch wrote a %v record in the story; it writes diagnoses only", r["type"])
		}
	}
	stuck := ofType(recs, "leak", phase("stuck"))
	if len(stuck) != 1 || !strings.Contains(stuck[0]["message"].(string), "never called close(fd") {
		t.Errorf("want one stuck leak naming the close that never happened: %v", stuck)
	}
	for _, tag := range []string{"LEAK", "BIND"} {
		if !regexp.MustCompile(`(?m)^\S+ ` + tag + ` `).MatchString(w.errb.String()) {
			t.Errorf("no %s line for people on stderr:\n%s", tag, w.errb.String())
		}
	}
}

// refusedConnect dials a port nothing listens on.
func refusedConnect(t *testing.T, port int) {
	t.Helper()
	c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err == nil {
		c.Close()
		t.Fatalf("something listens on port %d", port)
	}
}

// TestWatchReopensOnSIGHUP: after a log rotation moved the output away,
// SIGHUP makes watch write to a new file at the same path, which starts
// with the header again; the old file keeps what was written before.
func TestWatchReopensOnSIGHUP(t *testing.T) {
	privtest.Require(t)
	const port = 17520
	out := filepath.Join(t.TempDir(), "diagnoses.jsonl")
	w := startWatch(t, false, "--port", strconv.Itoa(port), "-o", out)
	fileRecords := func(path string) []map[string]any {
		b, _ := os.ReadFile(path)
		return records(t, string(b))
	}
	refusedConnect(t, port)
	testwait.Until(t, 30*time.Second, "the first refused connect in the file", func() bool {
		return len(ofType(fileRecords(out), "connect_failed", nil)) == 1
	})
	if err := os.Rename(out, out+".1"); err != nil {
		t.Fatal(err)
	}
	w.cmd.Process.Signal(syscall.SIGHUP)
	testwait.Until(t, 30*time.Second, "the reopened file", func() bool {
		_, err := os.Stat(out)
		return err == nil
	})
	refusedConnect(t, port)
	testwait.Until(t, 30*time.Second, "the second refused connect in the new file", func() bool {
		return len(ofType(fileRecords(out), "connect_failed", nil)) == 1
	})
	if code := w.stop(t); code != 0 {
		t.Fatalf("watch exited %d; stderr:\n%s", code, w.errb.String())
	}
	old, cur := fileRecords(out+".1"), fileRecords(out)
	if old[0]["type"] != "header" || len(ofType(old, "connect_failed", nil)) != 1 || len(ofType(old, "summary", nil)) != 0 {
		t.Errorf("the rotated file: want the header and the first refusal, no summary: %v", old)
	}
	if cur[0]["type"] != "header" || cur[len(cur)-1]["type"] != "summary" {
		t.Errorf("the new file: want the header first and the summary last: %v", cur)
	}
	if w.out.String() != "" {
		t.Errorf("with -o, nothing goes to stdout: %q", w.out.String())
	}
}

// TestWatchMetricsAddressTaken: a metrics address that cannot be served is
// a one-line error and exit 2, before anything is loaded.
func TestWatchMetricsAddressTaken(t *testing.T) {
	privtest.Require(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	r := runBinary(t, exec.Command(binary, "watch", "--metrics", ln.Addr().String(), "--duration", "10s"))
	checkCleanError(t, r, "--metrics "+ln.Addr().String()+": listen tcp")
	if strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Errorf("want one line, got:\n%s", r.stderr)
	}
}
