package report

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkReport1M reports a capture of a million events (91,000
// connections, 182,000 sockets, written by the real tracker and writer):
// load, pair, then write the text report and the HTML page. It reports the
// peak heap in use and the process's peak resident memory besides time and
// allocations.
//
//	go test -run '^$' -bench Report1M -benchtime 3x ./tracer/report/
func BenchmarkReport1M(b *testing.B) {
	path := filepath.Join(b.TempDir(), "million.jsonl")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	events := synth(b, w, 91_000, 1000)
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	if events < 1_000_000 {
		b.Fatalf("%d events", events)
	}
	info, _ := os.Stat(path)
	b.Logf("capture: %d events, %d MB", events, info.Size()>>20)

	runtime.GC()
	debug.FreeOSMemory()
	peak := watchHeap()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		c, err := Load(f)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		if len(c.Conns) != 91_000 {
			b.Fatalf("%d connections", len(c.Conns))
		}
		sel, _ := c.Select(Filter{})
		if err := WriteText(io.Discard, c, sel, "million.jsonl"); err != nil {
			b.Fatal(err)
		}
		if err := WriteHTML(io.Discard, c, sel, "million.jsonl", HTMLOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(peak())/(1<<20), "peak-heap-MB")
	b.ReportMetric(float64(vmHWM())/(1<<10), "peak-RSS-MB")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(events), "ns/event")
}

// BenchmarkLoad1M is the loading alone: read, decode, build the timelines
// and pair the ends.
func BenchmarkLoad1M(b *testing.B) {
	path := filepath.Join(b.TempDir(), "million.jsonl")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	events := synth(b, w, 91_000, 1000)
	w.Flush()
	f.Close()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	peak := watchHeap()
	b.ReportAllocs()
	b.ResetTimer()
	var c *Capture
	for b.Loop() {
		f, _ := os.Open(path)
		if c, err = Load(f); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
	b.StopTimer()
	b.ReportMetric(float64(peak())/(1<<20), "peak-heap-MB")
	// What the loaded capture keeps.
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "live-heap-MB")
	runtime.KeepAlive(c)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(events), "ns/event")
}

// watchHeap samples the heap in use until the returned function is called,
// which returns the peak.
func watchHeap() func() uint64 {
	var mu sync.Mutex
	var peak uint64
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		var ms runtime.MemStats
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			mu.Lock()
			peak = max(peak, ms.HeapInuse)
			mu.Unlock()
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 {
		close(done)
		<-stopped
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}

// vmHWM is the process's peak resident memory in KiB, from /proc.
func vmHWM() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}
