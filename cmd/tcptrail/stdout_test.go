package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tcptrail/tcptrail/internal/privtest"
	"github.com/tcptrail/tcptrail/internal/testwait"
)

// TestStalledStdoutLosesNothing: whoever reads `tcptrail trace --json` (jq,
// tee, a log shipper) may stop reading for a while. The tracer must go on
// draining the kernel's ring buffer meanwhile: with a ring of 512 KiB
// (about 4700 events) and a reader that reads nothing while 600
// connections make 6600 events, no event may be lost to a full ring
// buffer, and once the reader resumes, stdout holds every transition the
// summary counts. A tracer that wrote stdout itself would stop at the
// pipe's 64 KiB (under 200 events) and leave the ring to hold the rest;
// this one has to pass on a third of them meanwhile, at 2200 events a
// second at most, which a slow emulated guest does too.
func TestStalledStdoutLosesNothing(t *testing.T) {
	privtest.Require(t)
	const port, conns = 17204, 600
	ready := filepath.Join(t.TempDir(), "ready")
	cmd := exec.Command(binary, "trace", "--ready-file", ready, "--port", fmt.Sprint(port), "--json", "--ring-size", "512K")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	testwait.Until(t, 60*time.Second, "the tracer's ready file", func() bool {
		// Exited (a zombie until waited for): say why.
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid)); err != nil || bytes.Contains(stat, []byte(") Z ")) {
			errs, _ := os.ReadFile(stderr.Name())
			t.Fatalf("tracer exited before it was ready:\n%s", errs)
		}
		_, err := os.Stat(ready)
		return err == nil
	})

	// Nobody reads stdout while the connections come and go.
	ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	// At most 200 connections a second (2200 events): what stalls the
	// tracer here must be stdout, not a load its reader cannot follow in a
	// slow emulated guest (a sequential loop as fast as it goes lost a
	// few hundred events there).
	pace := time.NewTicker(5 * time.Millisecond)
	defer pace.Stop()
	for range conns {
		<-pace.C
		connectAndClose(t, ln)
	}
	ln.Close()
	waitConnectionsClosed(t, port)

	// The reader comes back; the tracer stops.
	type line struct {
		Type        string `json:"type"`
		Transitions uint64 `json:"transitions"`
		Lost        struct {
			RingbufFull     uint64 `json:"ringbuf_full"`
			RecursionMisses uint64 `json:"recursion_misses"`
		} `json:"lost"`
	}
	lines := make(chan []line, 1)
	go func() {
		var got []line
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var l line
			if json.Unmarshal(sc.Bytes(), &l) == nil {
				got = append(got, l)
			}
		}
		io.Copy(io.Discard, stdout)
		lines <- got
	}()
	cmd.Process.Signal(syscall.SIGTERM)
	var got []line
	select {
	case got = <-lines:
	case <-time.After(30 * time.Second):
		t.Fatal("stdout still open 30s after SIGTERM")
	}
	if err := cmd.Wait(); err != nil {
		errs, _ := os.ReadFile(stderr.Name())
		t.Fatalf("tracer: %v\n%s", err, errs)
	}
	if len(got) == 0 || got[len(got)-1].Type != "summary" {
		t.Fatal("stdout does not end with a summary")
	}
	sum := got[len(got)-1]
	transitions := 0
	for _, l := range got {
		if l.Type == "transition" {
			transitions++
		}
	}
	if sum.Lost.RingbufFull != 0 {
		t.Errorf("%d events lost to a full ring buffer while stdout was not read", sum.Lost.RingbufFull)
	}
	if uint64(transitions) != sum.Transitions {
		t.Errorf("stdout holds %d transitions, the summary counts %d", transitions, sum.Transitions)
	}
	// 5 per end, the listener's 2; the kernel may skip a few, counted.
	if want := uint64(10*conns + 2); sum.Transitions+sum.Lost.RecursionMisses < want {
		t.Errorf("%d transitions and %d skipped by the kernel, want %d", sum.Transitions, sum.Lost.RecursionMisses, want)
	}
}

// TestClosedStdoutEndsTheSession: `tcptrail trace --json -o cap.jsonl |
// head -1`. When the reader of stdout goes away, tcptrail is not killed by
// SIGPIPE (which would leave the capture file without its summary): it
// ends the session as on SIGTERM, exits 0, says why on stderr, and the
// capture holds every transition with its summary.
func TestClosedStdoutEndsTheSession(t *testing.T) {
	privtest.Require(t)
	const port = 17205
	capPath := filepath.Join(t.TempDir(), "cap.jsonl")
	ready := filepath.Join(t.TempDir(), "ready")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "trace", "--ready-file", ready, "--json", "--port", fmt.Sprint(port), "-o", capPath)
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = w, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	testwait.Until(t, 60*time.Second, "the tracer's ready file", func() bool {
		_, err := os.Stat(ready)
		return err == nil
	})

	// Like head -1: one line, then the reader is gone.
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		t.Fatalf("first line: %v", err)
	}
	var hdr map[string]any
	if err := json.Unmarshal([]byte(line), &hdr); err != nil || hdr["type"] != "header" {
		t.Fatalf("first line is not the header: %q", line)
	}
	r.Close()
	oneConnection(t, port) // something to write

	if err := waitExit(t, cmd, 30*time.Second, "stdout closed by its reader"); err != nil {
		t.Fatalf("tracer ended with %v (want exit 0); stderr:\n%s", err, errb.String())
	}
	if !bytes.Contains(errb.Bytes(), []byte("stdout was closed by its reader")) || !bytes.Contains(errb.Bytes(), []byte("12 transitions")) {
		t.Errorf("stderr does not say why tracing stopped, or lacks the summary:\n%s", errb.String())
	}
	lines := readJSONLines(t, capPath)
	last := lines[len(lines)-1]
	if last["type"] != "summary" || last["transitions"] != float64(12) {
		t.Fatalf("the capture ends with %v (transitions %v), want its summary of 12 transitions", last["type"], last["transitions"])
	}
}
