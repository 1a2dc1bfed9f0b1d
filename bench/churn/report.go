package main

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// totals adds up rounds of one kind.
type totals struct {
	n                     int
	conns                 uint64
	elapsed               time.Duration
	busy                  float64
	events, transitions   uint64
	expected              uint64
	ringbuf, skipped      uint64
	queue, inflight, gaps uint64
	lost                  uint64
	cpu                   time.Duration
	bpf                   time.Duration
	bpfRuns               uint64
	bpfOK                 bool
	hwm                   int64 // KiB, max over rounds
	iwi                   uint64
	lines, transLines     uint64
	twLines, existing     uint64
	bpfByProg             map[string]time.Duration
}

func sum(rs []*round) totals {
	t := totals{bpfOK: true, bpfByProg: map[string]time.Duration{}}
	for _, r := range rs {
		t.n++
		t.conns += r.load.conns
		t.iwi += r.iwi
		t.elapsed += r.load.elapsed
		t.busy += r.busy
		if r.tr == nil {
			continue
		}
		s := r.tr.sum
		t.events += s.Events
		t.transitions += s.Transitions
		t.expected += r.expected()
		t.ringbuf += s.Lost.RingbufFull
		t.skipped += s.Lost.RecursionMisses
		t.queue += s.Lost.QueueFull
		t.inflight += s.Lost.InflightFull
		t.gaps += s.Lost.Gaps
		t.lost += s.lostEvents()
		t.cpu += r.tr.cpuWindow
		t.bpf += r.tr.bpf.runtime
		t.bpfRuns += r.tr.bpf.runs
		t.bpfOK = t.bpfOK && r.tr.bpf.ok
		for k, v := range r.tr.bpf.byProg {
			t.bpfByProg[k] += v
		}
		t.hwm = max(t.hwm, r.tr.status.HWM)
		t.lines += r.tr.lines
		t.transLines += r.tr.transLines
		t.twLines += r.tr.timewait
		t.existing += r.tr.existing
	}
	if t.n > 0 {
		t.busy /= float64(t.n)
	}
	return t
}

func (t totals) rate() float64 {
	if t.elapsed <= 0 {
		return 0
	}
	return float64(t.conns) / t.elapsed.Seconds()
}

func (t totals) captured() float64 {
	if t.expected == 0 {
		return 0
	}
	return float64(t.transitions) / float64(t.expected)
}

func (t totals) cpuPerMev() float64 {
	if t.events == 0 {
		return 0
	}
	return t.cpu.Seconds() / (float64(t.events) / 1e6)
}

func (t totals) bpfPerMev() float64 {
	if t.events == 0 {
		return 0
	}
	return t.bpf.Seconds() / (float64(t.events) / 1e6)
}

// missing: expected transitions the tracer did not report. accounted: every
// missing one shows up in a loss counter (an event lost outright) .
func (t totals) missing() int64 { return int64(t.expected) - int64(t.transitions) }

func (t totals) accounted() bool {
	m := t.missing()
	return m == 0 || (m > 0 && uint64(m) <= t.lost)
}

func spread(rs []*round) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = fmt.Sprintf("%.0f", r.load.rate())
		if r.disturbed() {
			s[i] += "*"
		}
	}
	return strings.Join(s, ", ")
}

func report(cfg *config, chk *checkResult, rounds []*round, w0 *round, lat *latencyResult) {
	var un, tr []*round
	for _, r := range rounds {
		if r.traced {
			tr = append(tr, r)
		} else {
			un = append(un, r)
		}
	}
	U, T := sum(un), sum(tr)
	ratio := T.rate() / U.rate()

	fmt.Printf("\n==================== results ====================\n")
	fmt.Printf("%-22s %10s %8s %9s %11s %9s %8s %8s %6s %9s %9s %8s\n",
		"", "conn/s", "ratio", "CPU busy", "transitions", "captured", "lost", "skipped", "gaps", "CPU s/Mev", "BPF s/Mev", "VmHWM")
	fmt.Printf("%-22s %10.0f %8s %8.0f%% %11s %9s %8s %8s %6s %9s %9s %8s\n",
		"untraced", U.rate(), "1", 100*U.busy, "-", "-", "-", "-", "-", "-", "-", "-")
	row := func(name string, t totals) {
		bpf := "-"
		if t.bpfOK {
			bpf = fmt.Sprintf("%.3f", t.bpfPerMev())
		}
		fmt.Printf("%-22s %10.0f %7.1f%% %8.0f%% %11d %8.4f%% %8d %8d %6d %9.3f %9s %5.1f MiB\n",
			name, t.rate(), 100*t.rate()/U.rate(), 100*t.busy, t.transitions, 100*t.captured(),
			t.lost, t.skipped, t.gaps, t.cpuPerMev(), bpf, float64(t.hwm)/1024)
	}
	row("traced (table)", T)
	if w0 != nil {
		row("traced, wakeup-size 1", sum([]*round{w0}))
	}
	fmt.Printf("\nper round conn/s: untraced %s; traced %s", spread(un), spread(tr))
	if w0 != nil {
		fmt.Printf("; wakeup-size 1 %s", spread([]*round{w0}))
	}
	fmt.Println()
	var dist []string
	for _, r := range append(append([]*round{}, rounds...), nonNil(w0)...) {
		if r.disturbed() {
			dist = append(dist, fmt.Sprintf("%s port %d (other processes %.2fs CPU: %s; other tcptrail programs %d)", r.name, r.port, r.otherCPU, r.others, r.foreign))
		}
	}
	if len(dist) > 0 {
		fmt.Printf("* DISTURBED rounds, other work competed for the CPUs (numbers skewed; rerun on a quiet machine):\n  %s\n", strings.Join(dist, "\n  "))
		var cu, ct []*round
		for _, r := range un {
			if !r.disturbed() {
				cu = append(cu, r)
			}
		}
		for _, r := range tr {
			if !r.disturbed() {
				ct = append(ct, r)
			}
		}
		if len(cu) > 0 && len(ct) > 0 {
			a, b := sum(cu), sum(ct)
			fmt.Printf("  undisturbed rounds only (%d untraced, %d traced): %.0f vs %.0f conn/s = %.1f%%\n", len(cu), len(ct), b.rate(), a.rate(), 100*b.rate()/a.rate())
		}
	}
	fmt.Printf("traced rounds: %d connections, %d events (%.2f per connection), %d of %d expected transitions (%d missing), lost: ring buffer full %d, skipped by the kernel %d, queue full %d, inflight full %s, gaps %d\n",
		T.conns, T.events, float64(T.events)/float64(T.conns), T.transitions, T.expected, T.missing(),
		T.ringbuf, T.skipped, T.queue, inflightText(tr), T.gaps)
	fmt.Printf("tracer CPU while loaded: %.2fs over %.1fs of load = %.0f%% of one CPU; %.3f s per million events\n",
		T.cpu.Seconds(), T.elapsed.Seconds(), 100*T.cpu.Seconds()/T.elapsed.Seconds(), T.cpuPerMev())
	if T.bpfOK {
		fmt.Printf("BPF programs (kernel.bpf_stats_enabled, charged to the load's threads): %.3fs in %d runs (%.0f ns/run) = %.0f%% of one CPU; %s\n",
			T.bpf.Seconds(), T.bpfRuns, float64(T.bpf.Nanoseconds())/float64(max(T.bpfRuns, 1)),
			100*T.bpf.Seconds()/T.elapsed.Seconds(), byProgText(T.bpfByProg))
	}
	fmt.Printf("ring buffer wakeups (IRQ work interrupts): %d for %d events = %.2f per event", T.iwi, T.events, float64(T.iwi)/float64(max(T.events, 1)))
	if w0 != nil {
		w := sum([]*round{w0})
		fmt.Printf("; with --wakeup-size 1: %.2f per event", float64(w.iwi)/float64(max(w.events, 1)))
	}
	fmt.Println()
	fmt.Printf("table lines: %d, of which transitions %d (summary: %d), TIMEWAIT %d, EXISTING %d\n", T.lines, T.transLines, T.transitions, T.twLines, T.existing)
	for _, r := range tr {
		st := r.tr.status
		fmt.Printf("  %s port %d: VmHWM %.1f MiB (%.1f at ready; at stop VmRSS %.1f = anon %.1f + file %.1f MiB, %d threads), ready in %s, stopped in %s, whole-life CPU %.2fs, timewait sockets on the host at start %d\n",
			r.name, r.port, mib(st.HWM), mib(r.tr.ready.HWM), mib(st.RSS), mib(st.Anon), mib(st.File), st.Threads,
			r.tr.startup.Round(time.Millisecond), r.tr.stopTime.Round(time.Millisecond), r.tr.cpuTotal.Seconds(), r.tw)
	}
	// What else the tracer said: diagnoses and notices in the table
	// (besides its title, header and summary), warnings on stderr (the
	// loss warnings are cumulative: the last one of each round is enough).
	notes := map[string]int{}
	var warnings []string
	for _, r := range append(append([]*round{}, tr...), nonNil(w0)...) {
		for _, n := range r.tr.notices {
			n = strings.TrimSpace(n)
			if n == "" || strings.HasPrefix(n, "TIME ") || strings.HasPrefix(n, "tracing ") ||
				n == "no CLOSE_WAIT leaks" || tableSummaryRE.MatchString(n) {
				continue
			}
			notes[n]++
		}
		last := ""
		for _, line := range strings.Split(r.tr.stderr, "\n") {
			if strings.Contains(line, "warning") {
				last = strings.TrimSpace(line)
			}
		}
		if last != "" {
			warnings = append(warnings, fmt.Sprintf("%s port %d: %s", r.name, r.port, last))
		}
	}
	if len(notes) > 0 {
		fmt.Printf("table lines other than transitions, TIMEWAIT and EXISTING:\n")
		keys := make([]string, 0, len(notes))
		for k := range notes {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			if i == 8 {
				fmt.Printf("  ... %d more\n", len(keys)-i)
				break
			}
			fmt.Printf("  %3dx %s\n", notes[k], truncate(k, 160))
		}
	}
	for _, w := range warnings {
		fmt.Printf("  last stderr warning, %s\n", w)
	}
	if lat != nil {
		fmt.Printf("live-table latency (connect() returned -> its SYN_SENT -> ESTABLISHED line read from the pipe), %d single connections 100-250 ms apart: min %s, median %s, p90 %s, max %s, missing %d\n",
			len(lat.samples), ms(lat.quantile(0)), ms(lat.quantile(0.5)), ms(lat.quantile(0.9)), ms(lat.max()), lat.missing)
		fmt.Printf("  that tracer: CPU %.3fs over %.1fs of sparse traffic; VmHWM %.1f MiB (%.1f at ready), timewait sockets on the host at start %d\n",
			lat.cpu.Seconds(), lat.dur.Seconds(), mib(lat.status.HWM), mib(lat.ready.HWM), lat.tw)
	}

	fmt.Printf("\ngoals (port filter on, live table printing):\n")
	goal := func(ok bool, name, got string) {
		mark := "MET   "
		if !ok {
			mark = "MISSED"
		}
		fmt.Printf("  %s %-52s %s\n", mark, name, got)
	}
	if chk != nil {
		cut := 0
		for p, n := range chk.patterns {
			if p != clientSeq && p != serverSeq {
				cut += n
			}
		}
		goal(chk.ok(), "check: 10 per connection (or a counted loss), all shown", fmt.Sprintf("%d/%d; %d sockets cut short, explained by %d counted losses; table %d",
			chk.transitions, chk.conns*transitionsPerConn, cut, chk.sum.lostEvents(), chk.tableLines))
	}
	goal(ratio >= goalRatio, fmt.Sprintf("throughput >= %.0f%% of untraced", 100*goalRatio), fmt.Sprintf("%.1f%% (%.0f vs %.0f conn/s)", 100*ratio, T.rate(), U.rate()))
	goal(T.captured() >= goalCaptured, fmt.Sprintf(">= %.2f%% of transitions captured", 100*goalCaptured), fmt.Sprintf("%.4f%% (%d of %d)", 100*T.captured(), T.transitions, T.expected))
	goal(T.accounted(), "every missing transition counted", fmt.Sprintf("missing %d, lost events counted %d, gaps %d", T.missing(), T.lost, T.gaps))
	goal(T.cpuPerMev() < goalCPUPerMev, fmt.Sprintf("tracer CPU < %.1f s per million events", goalCPUPerMev), fmt.Sprintf("%.3f s/Mev", T.cpuPerMev()))
	goal(T.hwm < goalRSSMiB*1024, fmt.Sprintf("tracer RSS (VmHWM) < %d MiB", goalRSSMiB), fmt.Sprintf("%.1f MiB", mib(T.hwm)))
	if lat != nil {
		goal(lat.missing == 0 && lat.max() < goalLatency, fmt.Sprintf("sparse event on screen within %s", goalLatency), fmt.Sprintf("max %s, median %s", ms(lat.max()), ms(lat.quantile(0.5))))
	}
	if U.busy > 0.97 {
		fmt.Printf("\nnote: the untraced load keeps both CPUs %.0f%% busy: the tracer's CPU and its programs' run time come straight out of the load's throughput.\n", 100*U.busy)
	}
}

func inflightText(rs []*round) string {
	var n uint64
	for _, r := range rs {
		if !r.tr.sum.fromCapture {
			return "n/a (not in the table's summary; -capture has it)"
		}
		n += r.tr.sum.Lost.InflightFull
	}
	return fmt.Sprint(n)
}

func byProgText(m map[string]time.Duration) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %.3fs", k, m[k].Seconds())
	}
	return strings.Join(parts, ", ")
}

func nonNil(r *round) []*round {
	if r == nil {
		return nil
	}
	return []*round{r}
}

func mib(kib int64) float64 { return float64(kib) / 1024 }

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
