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
	endsUnseen            uint64
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
		t.endsUnseen += s.Lost.EndsUnseen
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

// missing: expected transitions the tracer did not report.
func (t totals) missing() int64 { return int64(t.expected) - int64(t.transitions) }

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

// modeStats is one mode's rounds, summed and per round.
type modeStats struct {
	mode                string
	rounds              []*round
	tot                 totals
	vsUntraced, vsFloor []float64 // per cycle
	kept, cpu           []float64 // per round
	hwm                 []float64 // MiB, per round
	exact               bool      // every round: output transitions == summary transitions
	accounted           bool      // every round: missing <= counted losses
	inflightKnown       bool
}

func statsOf(rounds []*round, mode string) *modeStats {
	byCycle := func(m string, c int) *round {
		for _, r := range rounds {
			if r.mode == m && r.cycle == c {
				return r
			}
		}
		return nil
	}
	st := &modeStats{mode: mode, exact: true, accounted: true, inflightKnown: true}
	for _, r := range rounds {
		if r.mode != mode {
			continue
		}
		st.rounds = append(st.rounds, r)
		if u := byCycle("", r.cycle); u != nil {
			st.vsUntraced = append(st.vsUntraced, r.load.rate()/u.load.rate())
		}
		if f := byCycle(modeFloor, r.cycle); f != nil && mode != "" {
			st.vsFloor = append(st.vsFloor, r.load.rate()/f.load.rate())
		}
		if r.tr == nil {
			continue
		}
		s := r.tr.sum
		st.kept = append(st.kept, float64(s.Transitions)/float64(max(r.expected(), 1)))
		st.cpu = append(st.cpu, r.tr.cpuWindow.Seconds()/max(float64(s.Events)/1e6, 1e-9))
		st.hwm = append(st.hwm, mib(r.tr.status.HWM))
		st.exact = st.exact && r.tr.outTransitions == s.Transitions
		missing := int64(r.expected()) - int64(s.Transitions)
		st.accounted = st.accounted && s.accountedFor(missing)
		st.inflightKnown = st.inflightKnown && s.fromCapture
	}
	st.tot = sum(st.rounds)
	return st
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func minOf(v []float64) float64 {
	m := 0.0
	for i, x := range v {
		if i == 0 || x < m {
			m = x
		}
	}
	return m
}

func maxOf(v []float64) float64 {
	m := 0.0
	for i, x := range v {
		if i == 0 || x > m {
			m = x
		}
	}
	return m
}

// pct formats a median and the worst (lowest) of ratios.
func pct(v []float64) string {
	if len(v) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%% (%.1f)", 100*median(v), 100*minOf(v))
}

// modeTable prints one line per mode: medians over the rounds, the worst
// in parentheses.
func modeTable(cfg *config, rounds []*round) []*modeStats {
	fmt.Printf("%-24s %9s %15s %15s %17s %9s %24s %6s %5s %15s %15s\n",
		"median (worst)", "conn/s", "vs untraced", "vs floor", "kept", "missing", "lost: ringbuf/skip/queue/infl", "gaps", "exact", "CPU s/Mev", "VmHWM MiB")
	var out []*modeStats
	for _, m := range append([]string{""}, cfg.modes...) {
		st := statsOf(rounds, m)
		if len(st.rounds) == 0 {
			continue
		}
		out = append(out, st)
		rates := make([]float64, len(st.rounds))
		for i, r := range st.rounds {
			rates[i] = r.load.rate()
		}
		name := "untraced"
		if m != "" {
			name = modeNames[m]
		}
		if m == "" {
			fmt.Printf("%-24s %9.0f\n", name, median(rates))
			continue
		}
		t := st.tot
		infl := "-"
		if st.inflightKnown {
			infl = fmt.Sprint(t.inflight)
		}
		exact := "yes"
		if !st.exact {
			exact = "NO"
		}
		vsFloor := "-"
		if m != modeFloor {
			vsFloor = pct(st.vsFloor)
		}
		fmt.Printf("%-24s %9.0f %15s %15s %17s %9d %24s %6d %5s %15s %15s\n",
			name, median(rates), pct(st.vsUntraced), vsFloor,
			fmt.Sprintf("%.4f%% (%.4f)", 100*median(st.kept), 100*minOf(st.kept)), t.missing(),
			fmt.Sprintf("%d/%d/%d/%s", t.ringbuf, t.skipped, t.queue, infl), t.gaps, exact,
			fmt.Sprintf("%.3f (%.3f)", median(st.cpu), maxOf(st.cpu)),
			fmt.Sprintf("%.1f (%.1f)", median(st.hwm), maxOf(st.hwm)))
	}
	return out
}

func report(cfg *config, chk *checkResult, rounds []*round, w0 *round, moderate []*round, lat *latencyResult) {
	fmt.Printf("\n==================== results ====================\n")
	fmt.Printf("max churn, %d client threads, %d cycles of %s rounds; ratios per cycle against that cycle's untraced and floor rounds; kept = transitions in the summary / 10 per connection; exact = the output holds every transition the summary counts\n",
		cfg.workers, cfg.rounds, cfg.round)
	stats := modeTable(cfg, rounds)
	if w0 != nil {
		s := w0.tr.sum
		fmt.Printf("%-24s %9.0f %15s %15s %17s %9d %24s %6d\n", "live, --wakeup-size 1", w0.load.rate(), "-", "-",
			fmt.Sprintf("%.4f%%", 100*float64(s.Transitions)/float64(w0.expected())), int64(w0.expected())-int64(s.Transitions),
			fmt.Sprintf("%d/%d/%d/-", s.Lost.RingbufFull, s.Lost.RecursionMisses, s.Lost.QueueFull), s.Lost.Gaps)
	}
	var modStats []*modeStats
	if len(moderate) > 0 {
		fmt.Printf("\nmoderate load, %d client thread(s), %d cycle(s):\n", cfg.moderate, cfg.modRounds)
		modStats = modeTable(cfg, moderate)
	}

	var all []*round
	all = append(append(append(all, rounds...), nonNil(w0)...), moderate...)
	fmt.Printf("\nper round conn/s:")
	for _, st := range stats {
		name := st.mode
		if name == "" {
			name = "untraced"
		}
		fmt.Printf(" %s %s;", name, spread(st.rounds))
	}
	fmt.Println()
	var dist []string
	for _, r := range all {
		if r.disturbed() {
			dist = append(dist, fmt.Sprintf("%s port %d (other processes %.2fs CPU: %s; other tcptrail programs %d)", r.name, r.port, r.otherCPU, r.others, r.foreign))
		}
	}
	if len(dist) > 0 {
		fmt.Printf("* DISTURBED rounds, other work competed for the CPUs (numbers skewed; rerun on a quiet machine):\n  %s\n", strings.Join(dist, "\n  "))
	}
	for _, st := range stats {
		if st.mode == "" {
			continue
		}
		T := st.tot
		fmt.Printf("%s: %d connections, %d events (%.2f per connection), %d of %d transitions; tracer CPU %.2fs over %.1fs of load = %.0f%% of one CPU",
			modeNames[st.mode], T.conns, T.events, float64(T.events)/float64(max(T.conns, 1)), T.transitions, T.expected,
			T.cpu.Seconds(), T.elapsed.Seconds(), 100*T.cpu.Seconds()/T.elapsed.Seconds())
		if T.bpfOK {
			fmt.Printf("; BPF %.3f s/Mev (%.0f ns/run)", T.bpfPerMev(), float64(T.bpf.Nanoseconds())/float64(max(T.bpfRuns, 1)))
		}
		fmt.Printf("; wakeups %.4f per event\n", float64(T.iwi)/float64(max(T.events, 1)))
	}
	for _, r := range all {
		if r.tr == nil {
			continue
		}
		st := r.tr.status
		fmt.Printf("  %s port %d: VmHWM %.1f MiB (%.1f at ready; at stop VmRSS %.1f = anon %.1f + file %.1f + shmem %.1f MiB, %d threads), ready in %s, stopped in %s\n",
			r.name, r.port, mib(st.HWM), mib(r.tr.ready.HWM), mib(st.RSS), mib(st.Anon), mib(st.File), mib(st.Shmem), st.Threads,
			r.tr.startup.Round(time.Millisecond), r.tr.stopTime.Round(time.Millisecond))
	}
	// What else the tracer said: diagnoses and notices in the table
	// (besides its title, header and summary), warnings on stderr (the
	// loss warnings are cumulative: the last one of each round is enough).
	notes := map[string]int{}
	var warnings []string
	for _, r := range all {
		if r.tr == nil {
			continue
		}
		if r.mode == modeLive {
			for _, n := range r.tr.notices {
				n = strings.TrimSpace(n)
				if n == "" || strings.HasPrefix(n, "TIME ") || strings.HasPrefix(n, "tracing ") ||
					n == "no CLOSE_WAIT leaks" || tableSummaryRE.MatchString(n) {
					continue
				}
				notes[n]++
			}
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

	fmt.Printf("\ngoals (max churn; medians, the worst round in parentheses):\n")
	goal := func(ok bool, name, got string) {
		mark := "MET   "
		if !ok {
			mark = "MISSED"
		}
		fmt.Printf("  %s %-58s %s\n", mark, name, got)
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
	for _, group := range []struct {
		name  string
		stats []*modeStats
	}{{"", stats}, {"moderate: ", modStats}} {
		for _, st := range group.stats {
			if st.mode == "" || st.mode == modeFloor {
				continue
			}
			n := group.name + modeNames[st.mode] + ": "
			goal(minOf(st.kept) >= goalCaptured, n+fmt.Sprintf(">= %.2f%% kept in every round", 100*goalCaptured), fmt.Sprintf("%.4f%% (%.4f%%)", 100*median(st.kept), 100*minOf(st.kept)))
			goal(st.accounted, n+"every missing transition counted", fmt.Sprintf("missing %d, counted %d, ends unseen %d", st.tot.missing(), st.tot.lost, st.tot.endsUnseen))
			goal(st.exact, n+"the output holds what the summary counts", fmt.Sprint(st.exact))
			if len(st.vsFloor) > 0 {
				goal(median(st.vsFloor) >= goalVsFloor, n+fmt.Sprintf("throughput within %.0f%% of the floor", 100*(1-goalVsFloor)), pct(st.vsFloor))
			}
			goal(median(st.cpu) <= goalCPUPerMev, n+fmt.Sprintf("CPU <= %.1f s per million events", goalCPUPerMev), fmt.Sprintf("%.3f (%.3f)", median(st.cpu), maxOf(st.cpu)))
			goal(maxOf(st.hwm) <= goalRSSMiB, n+fmt.Sprintf("peak RSS <= %d MiB", goalRSSMiB), fmt.Sprintf("%.1f (%.1f)", median(st.hwm), maxOf(st.hwm)))
		}
	}
	if lat != nil {
		goal(lat.missing == 0 && lat.max() < goalLatency, fmt.Sprintf("sparse event on screen within %s", goalLatency), fmt.Sprintf("max %s, median %s", ms(lat.max()), ms(lat.quantile(0.5))))
	}
	if u := statsOf(rounds, ""); u.tot.busy > 0.97 {
		fmt.Printf("\nnote: the untraced load keeps both CPUs %.0f%% busy: the tracer's CPU and its programs' run time come straight out of the load's throughput.\n", 100*u.tot.busy)
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
