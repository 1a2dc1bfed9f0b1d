package tracer_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tcptrail/tcptrail/tracer"
	"github.com/tcptrail/tcptrail/tracer/capture"
	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/live"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/report"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

// TestReplayTellsTheLiveStory traces the demo (buggy client, then fixed),
// with the live table, a capture file and a recorder side by side, then
// reports the capture: every socket's transitions, causes and owners, and
// every diagnosis, must be the same as what was shown live.
func TestReplayTellsTheLiveStory(t *testing.T) {
	capPath := filepath.Join(t.TempDir(), "story.jsonl")
	f, err := capture.Create(capPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var table bytes.Buffer
	s := startSessionWith(t, tracer.Config{LeakAfter: 300 * time.Millisecond},
		[]tracer.Sink{live.NewTable(&table), capture.NewWriter(f)}, storyServer.Port(), storyClient.Port())
	startServer(t)
	if _, code, _ := runClient(t); code != 1 {
		t.Fatalf("buggy client exit %d", code)
	}
	if _, code, _ := runClient(t, "-close"); code != 0 {
		t.Fatalf("fixed client exit %d", code)
	}
	s.rec.waitFor(t, 5*time.Second, "the three connections closed", func() bool {
		return len(s.rec.Steps(func(st Step) bool { return (isClient(st) || isServerEnd(st)) && st.New == event.Close })) == 6
	})
	s.stop(t)

	rf, err := os.Open(capPath)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	c, err := report.Load(rf)
	if err != nil {
		t.Fatalf("report of the live capture: %v", err)
	}
	if c.Summary == nil {
		t.Fatal("the capture has no summary")
	}

	// Transitions: per socket, the same sequence, causes and owners.
	live := map[uint64][]string{}
	for _, st := range s.rec.Steps(func(Step) bool { return true }) {
		live[st.Cookie] = append(live[st.Cookie], fmt.Sprintf("%v->%v %s [%s]", st.Old, st.New, st.Cause, st.Owners))
	}
	replay := map[uint64][]string{}
	for _, sock := range c.Sockets {
		for _, st := range sock.Steps() {
			if st.Kind != report.StepTransition {
				continue
			}
			owners := make([]timeline.Owner, len(st.Owners))
			for i, o := range st.Owners {
				owners[i] = timeline.Owner{PID: o.PID, FD: o.FD}
				copy(owners[i].Comm[:], o.Comm)
			}
			replay[sock.Cookie] = append(replay[sock.Cookie], fmt.Sprintf("%v->%v %s [%s]", st.Old, st.New, st.Cause, timeline.OwnersText(owners)))
		}
	}
	if len(live) != len(replay) {
		t.Errorf("%d sockets live, %d in the report", len(live), len(replay))
	}
	for cookie, want := range live {
		if got := replay[cookie]; strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("socket %d:\nlive:\n  %s\nreport:\n  %s", cookie, strings.Join(want, "\n  "), strings.Join(got, "\n  "))
		}
	}

	// Diagnoses: the messages shown live are the report's.
	var liveDiag, replayDiag []string
	for _, r := range s.rec.Records() {
		switch d := r.(type) {
		case *record.Leak:
			liveDiag = append(liveDiag, d.Message)
		case *record.BindConflict:
			liveDiag = append(liveDiag, d.Message)
		}
	}
	for _, d := range c.Diagnoses {
		for _, l := range d.Leak {
			replayDiag = append(replayDiag, l.Message)
		}
		if d.BindConflict != nil {
			replayDiag = append(replayDiag, d.BindConflict.Message)
		}
	}
	// The report groups a leak's records; the live view prints them as
	// they happen: compare them as sets.
	slices.Sort(liveDiag)
	slices.Sort(replayDiag)
	if strings.Join(liveDiag, "\n") != strings.Join(replayDiag, "\n") || len(liveDiag) != 3 {
		t.Errorf("diagnoses\nlive:\n  %s\nreport:\n  %s", strings.Join(liveDiag, "\n  "), strings.Join(replayDiag, "\n  "))
	}
	// And the live table showed those same diagnoses.
	for _, msg := range liveDiag {
		if !strings.Contains(table.String(), msg) {
			t.Errorf("live table lacks %q", msg)
		}
	}
}
