package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tcptrail/tcptrail/tracer"
	"github.com/tcptrail/tcptrail/tracer/capture"
	"github.com/tcptrail/tcptrail/tracer/metrics"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

const watchUsage = `Usage: tcptrail watch [flags]

Run all the time: trace every TCP socket (or the chosen ports) and report
only what goes wrong: CLOSE_WAIT leaks and how they end, failed binds and
connects with who holds the address, resets, closes that changed nothing,
lost events. Diagnoses go to stdout as JSON Lines (the capture format: a
header first, a summary last), a line per diagnosis for people to stderr.
With --metrics it serves Prometheus metrics. SIGTERM or SIGINT: flush and
exit 0. SIGHUP reopens the -o file (for log rotation).

Examples:
  sudo tcptrail watch --metrics :9464
  sudo tcptrail watch --port 5432,6379 --metrics 127.0.0.1:9464 --leak-after 30s
  sudo tcptrail watch -o /var/log/tcptrail/diagnoses.jsonl

Flags:
`

// DefaultWatchLeakAfter is longer than trace's: a service that is slow to
// close a socket for a few seconds is not what an alert should wake anyone
// for.
const DefaultWatchLeakAfter = 30 * time.Second

type watchFlags struct {
	sessionFlags
	metrics string
	output  string
}

func parseWatchFlags(args []string, stderr io.Writer) (*watchFlags, error) {
	f := &watchFlags{}
	fs := newFlagSet("watch", watchUsage, stderr)
	f.register(fs, DefaultWatchLeakAfter)
	fs.StringVar(&f.metrics, "metrics", "", "serve Prometheus metrics at http://`ADDR`/metrics, e.g. :9464 or 127.0.0.1:9464")
	fs.StringVarP(&f.output, "output", "o", "", "write the diagnoses to `FILE` instead of stdout (appended; SIGHUP reopens it)")
	if err := f.parse(fs, "watch", args); err != nil {
		return nil, err
	}
	return f, nil
}

// runWatch is 'tcptrail watch'.
func runWatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseWatchFlags(args, stderr)
	if err != nil {
		return err
	}
	cfg, err := f.config(stderr)
	if err != nil {
		return err
	}
	f.raisePriority(stderr)

	// SIGHUP must never end the process (its default): with -o it
	// reopens the file, otherwise there is nothing to do.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	out := io.Writer(stdout)
	var file *reopenFile
	if f.output != "" {
		if file, err = openAppend(f.output); err != nil {
			return usageErrorf("cannot write %s: %v", f.output, err)
		}
		defer file.Close()
		out = file
	}
	go func() {
		for range hup {
			if file == nil {
				fmt.Fprintln(stderr, "tcptrail: SIGHUP: diagnoses go to stdout, nothing to reopen")
				continue
			}
			file.Reopen()
		}
	}()

	sinks := []tracer.Sink{&diagnoses{w: capture.NewWriter(out), log: stderr, ringBytes: int(f.ringSize)}}
	if f.metrics != "" {
		m := metrics.New(version)
		srv, err := serveMetrics(f.metrics, m, stderr)
		if err != nil {
			return err
		}
		defer srv.Close()
		sinks = append(sinks, m)
	}

	sum, err := tracer.Run(ctx, cfg, sinks...)
	if err != nil {
		return f.sessionError(err, stderr)
	}
	if file != nil {
		if err := file.Err(); err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "tcptrail: watched %s: %d transitions, %d sockets, %d leaks; lost %d (ring buffer full %d, skipped by the kernel %d), gaps %d%s, socket-table queries failed %d\n",
		time.Duration(sum.DurationNs).Round(time.Second), sum.Transitions, sum.Sockets, len(sum.Leaks),
		sum.Lost.Total(), sum.Lost.RingbufFull, sum.Lost.RecursionMisses, sum.Lost.Gaps, sum.Lost.EndsUnseenText(), sum.QueriesFailed)
	return nil
}

// serveMetrics listens on addr at once, so that a taken port is an error
// before anything is loaded, and serves the metrics with the Go runtime's
// and the process's own.
func serveMetrics(addr string, m *metrics.Metrics, stderr io.Writer) (*http.Server, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(m, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, usageErrorf("--metrics %s: %v", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: nil}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "tcptrail watch: metrics at /metrics")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(stderr, "tcptrail: metrics server: %v\n", err)
		}
	}()
	fmt.Fprintf(stderr, "tcptrail: metrics at http://%s/metrics\n", ln.Addr())
	return srv, nil
}

// diagnoses writes only what goes wrong: the header and summary, leaks,
// bind and connect failures, resets, closes that changed nothing, losses.
// Routine transitions and calls are not written; a line per diagnosis goes
// to log for people.
type diagnoses struct {
	w   *capture.Writer
	log io.Writer
	// ringBytes and ringbufFull: a loss to a full ring buffer says how
	// big the ring is, when it grows.
	ringBytes   int
	ringbufFull uint64
}

func (d *diagnoses) Begin(h *record.Header) error { return d.w.Begin(h) }

// RoutineCalls: accepts, binds and dups are not diagnoses.
func (d *diagnoses) RoutineCalls() bool { return false }

// ReportsLosses: the LOST lines tell of losses, with their time; the
// session's own warning would tell each twice.
func (d *diagnoses) ReportsLosses() bool { return true }

// Transition writes resets: the only transitions that are news by
// themselves (refusals and timeouts come as connect_failed records).
func (d *diagnoses) Transition(t *timeline.Transition, wallNs int64) error {
	var who string
	switch t.Cause.Kind {
	case timeline.CauseRSTReceived:
		who = "the peer reset it"
	case timeline.CauseRSTSent:
		who = "this side reset it (close with unread data or SO_LINGER 0)"
	case timeline.CauseFinTimeout:
		who = "the kernel reset it: the peer sent no FIN within tcp_fin_timeout"
	case timeline.CauseAborted:
		who = "the kernel reset it (an orphan dropped for memory or count)"
	case timeline.CauseDestroyed:
		who = "destroyed on request (ss -K or bpf_sock_destroy)"
	default:
		return nil
	}
	e := t.Event
	d.logf(time.Unix(0, wallNs), "RESET", "%s → %s %s→%s: %s; owned by %s",
		e.Local, e.Remote, e.Old, e.New, who, timeline.OwnersText(t.Owners))
	return d.w.Transition(t, wallNs)
}

func (d *diagnoses) Record(rec any) error {
	switch r := rec.(type) {
	case *record.Leak:
		d.logf(r.Time, "LEAK", "%s", r.Message)
	case *record.BindConflict:
		d.logf(r.Time, "BIND", "%s", r.Message)
	case *record.ConnectFail:
		d.logf(r.Time, "CONNECT", "%s", r.Message)
	case *record.Call:
		if r.Note == "" {
			return nil
		}
		d.logf(r.Time, "NOTE", "%s", r.Note)
	case *record.Lost:
		hint := ""
		if r.RingbufFull > d.ringbufFull {
			hint = "; " + tracer.RingFullHint(d.ringBytes)
			d.ringbufFull = r.RingbufFull
		}
		d.logf(r.Time, "LOST", "%d events lost so far (ring buffer full %d, skipped by the kernel %d), %d gaps%s%s",
			r.Total(), r.RingbufFull, r.RecursionMisses, r.Gaps, r.EndsUnseenText(), hint)
	default:
		return nil
	}
	return d.w.Record(rec)
}

func (d *diagnoses) Flush() error { return d.w.Flush() }

func (d *diagnoses) End(s *record.Summary) error { return d.w.End(s) }

func (d *diagnoses) logf(t time.Time, tag, format string, args ...any) {
	fmt.Fprintf(d.log, "%s %-7s %s\n", t.Local().Format("2006-01-02T15:04:05.000"), tag, fmt.Sprintf(format, args...))
}

// reopenFile is an append-only file that SIGHUP reopens, after a log
// rotation moved it away. The capture writer writes whole records, so a
// reopen between two writes never splits a line; a new file starts with
// the header again, so that each one reads on its own.
type reopenFile struct {
	path   string
	mu     sync.Mutex
	f      *os.File
	header []byte // the first line written
	err    error  // the last reopen's failure, kept until one succeeds
}

func openAppend(path string) (*reopenFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, err
	}
	return &reopenFile{path: path, f: f}, nil
}

func (r *reopenFile) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.header == nil {
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			r.header = bytes.Clone(p[:i+1])
		}
	}
	return r.f.Write(p)
}

// Reopen closes the file and opens its path again (created if it was
// moved away). On failure the old file stays in use.
func (r *reopenFile) Reopen() {
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil && r.header != nil {
		if fi, serr := f.Stat(); serr == nil && fi.Size() == 0 {
			_, err = f.Write(r.header)
		}
	}
	if err != nil {
		r.err = fmt.Errorf("reopen %s: %w", r.path, err)
		if f != nil {
			f.Close()
		}
		return
	}
	r.f.Close()
	r.f, r.err = f, nil
}

// Err is the last failed reopen's error, if none succeeded since.
func (r *reopenFile) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

func (r *reopenFile) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.f.Close()
}
