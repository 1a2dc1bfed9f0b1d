package report

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tcptrail/tcptrail/tracer/event"
)

// page is the HTML page: inline CSS and JS, no network access. The data
// goes where dataMarker is.
//
//go:embed page.html
var page []byte

const dataMarker = "/*TCPTRAIL-DATA*/"

// HTMLOptions bound the page.
type HTMLOptions struct {
	// MaxConns bounds the connections whose timelines the page embeds
	// (the first ones in time); the overview and the state paths still
	// count them all. Default 20,000: a page of about 15 MB.
	MaxConns int
}

// WriteHTML writes sel as one self-contained HTML page: a shared time axis,
// a bar per socket coloured by state with the two ends of each connection
// paired, causes marked on the bars, diagnoses highlighted, details on
// hover and click, filters and pages for large captures. name names the
// capture in the title.
func WriteHTML(w io.Writer, c *Capture, sel *Selection, name string, o HTMLOptions) error {
	if o.MaxConns <= 0 {
		o.MaxConns = 20_000
	}
	before, after, ok := bytes.Cut(page, []byte(dataMarker))
	if !ok {
		return fmt.Errorf("report page template has no data marker")
	}
	p := buildPayload(c, sel, name, o)
	bw := bufio.NewWriterSize(w, 256<<10)
	bw.Write(before)
	// encoding/json escapes <, > and & inside strings, so no data can close
	// the script element it sits in.
	enc := json.NewEncoder(bw)
	if err := enc.Encode(p); err != nil {
		return fmt.Errorf("encode report data: %w", err)
	}
	bw.Write(after)
	return bw.Flush()
}

// payload is the page's data. Field names are short: a page can hold tens
// of thousands of sockets. Times are nanoseconds since the capture started.
type payload struct {
	Title   string      `json:"title"`
	Capture pageCapture `json:"capture"`
	Shown   string      `json:"shown"`
	States  []string    `json:"states"` // state names by number
	Strs    []string    `json:"strs"`   // strings, referred to by index
	Conns   []pageConn  `json:"conns"`
	Socks   []pageSock  `json:"socks"`
	// Listeners and Others are indexes into Socks.
	Listeners []int        `json:"listeners"`
	Others    []int        `json:"others"`
	Diags     []pageDiag   `json:"diags"`
	Paths     []pagePath   `json:"paths"`
	Overview  pageOverview `json:"overview"`
	// ConnsTotal counts the selected connections, embedded or not.
	ConnsTotal int `json:"conns_total"`
}

type pageCapture struct {
	Tool       string   `json:"tool"`
	Host       string   `json:"host"`
	Kernel     string   `json:"kernel"`
	Attach     string   `json:"attach"`
	Start      string   `json:"start"`
	DurationNs int64    `json:"duration_ns"`
	EndNs      int64    `json:"end"`
	Ports      []uint16 `json:"ports"`
	Complete   bool     `json:"complete"`
	Truncated  bool     `json:"truncated"`
	Lines      int      `json:"lines"`
	Lost       uint64   `json:"lost"`
	Gaps       uint64   `json:"gaps"`
	EndsUnseen uint64   `json:"ends_unseen"`
	Omitted    int      `json:"omitted"`
	Problems   []string `json:"problems"`
	Counts     string   `json:"counts"`
}

type pageConn struct {
	ID    int    `json:"id"`
	Name  string `json:"name"`
	Start int64  `json:"t0"`
	End   int64  `json:"t1"`
	// Active is when its last transition happened: the page's axis fits
	// that, not timewait tails or leaks open until the end.
	Active int64    `json:"t2"`
	Ends   [2]int   `json:"ends"` // client, server: indexes into Socks, -1 for none
	Diags  []string `json:"diag"` // kinds
	Path   int      `json:"path"` // index into Paths
}

type pageSock struct {
	Cookie  string     `json:"cookie"` // a string: cookies exceed 2^53
	Role    string     `json:"role"`
	Local   string     `json:"local"`
	Remote  string     `json:"remote"`
	Owners  string     `json:"owners"`
	First   int64      `json:"t0"`
	End     int64      `json:"t1"`
	Ever    []int      `json:"ever"`
	Omitted int        `json:"omitted"`
	Conn    int        `json:"conn"` // connection id, 0 for none
	Segs    [][4]int64 `json:"segs"` // start, end, state, 1 for a timewait socket
	// Steps are the socket's story, one array per event: [t, kind, ...]
	// with kind as in evKind; see page.html for the fields.
	Steps [][]int64 `json:"steps"`
	Diags []int     `json:"diags"` // indexes into Diags
}

type pageDiag struct {
	Kind  string        `json:"kind"`
	T     int64         `json:"t"`
	Title string        `json:"title"`
	Lines []pageDiagRow `json:"lines"`
	Socks []int         `json:"socks"`
	Conns []int         `json:"conns"`
}

type pageDiagRow struct {
	T    int64  `json:"t"` // -1: no time
	Text string `json:"text"`
}

type pagePath struct {
	Client string `json:"client"`
	Server string `json:"server"`
	Count  int    `json:"n"`
	Diag   int    `json:"diag"` // connections with a diagnosis
}

// pageOverview counts connections by when they started, over the whole
// selection.
type pageOverview struct {
	From   int64 `json:"t0"`
	Bucket int64 `json:"dt"`
	Starts []int `json:"starts"`
	Diag   []int `json:"diag"`
}

type payloadBuilder struct {
	c      *Capture
	sel    *Selection
	p      *payload
	strIdx map[string]int
	sockIx map[*Socket]int
	diagIx map[*Diagnosis]int
}

func buildPayload(c *Capture, sel *Selection, name string, o HTMLOptions) *payload {
	p := &payload{Title: name, Listeners: []int{}, Others: []int{}, Conns: []pageConn{}, Socks: []pageSock{},
		Diags: []pageDiag{}, Paths: []pagePath{}}
	b := &payloadBuilder{c: c, sel: sel, p: p, strIdx: map[string]int{}, sockIx: map[*Socket]int{}, diagIx: map[*Diagnosis]int{}}
	b.str("")
	for st := event.State(0); st <= event.BoundInact; st++ {
		p.States = append(p.States, st.String())
	}
	h := &c.Header
	p.Capture = pageCapture{
		Tool:       "tcptrail " + h.Version,
		Host:       h.Host,
		Kernel:     h.Kernel,
		Attach:     attachedWith(h),
		Start:      h.StartTime.UTC().Format("2006-01-02 15:04:05.000000000 MST"),
		DurationNs: int64(c.Duration()),
		EndNs:      b.off(c.EndNs),
		Ports:      slices.Clone(h.Filters.Ports),
		Complete:   c.Complete(),
		Truncated:  c.Truncated,
		Lines:      c.Lines,
		Lost:       c.Lost.Total(),
		Gaps:       c.Lost.Gaps,
		EndsUnseen: c.Lost.EndsUnseen,
		Omitted:    c.OmittedSteps,
		Problems:   []string{},
		Counts: fmt.Sprintf("%s, %s: %s, %s, %s; %s",
			plural(c.Transitions, "transition"), plural(len(c.Sockets), "socket"), plural(len(c.Conns), "connection"),
			plural(len(c.Listeners), "listener"), plural(len(c.Others), "other socket"), plural(len(c.Diagnoses), "diagnosis")),
	}
	for _, e := range c.Problems {
		p.Capture.Problems = append(p.Capture.Problems, e.Error())
	}
	if c.MoreProblems > 0 {
		p.Capture.Problems = append(p.Capture.Problems, fmt.Sprintf("and %d more", c.MoreProblems))
	}
	t := &textReport{c: c, sel: sel}
	p.Shown = t.shown()
	p.ConnsTotal = len(sel.Conns)

	// Diagnoses first, so that sockets can refer to them.
	for _, d := range sel.Diagnoses {
		b.diagIx[d] = len(p.Diags)
		p.Diags = append(p.Diags, b.diag(t, d))
	}
	paths := map[[2]string]int{}
	for i, conn := range sel.Conns {
		key := [2]string{statePath(conn.Client), statePath(conn.Server)}
		pi, ok := paths[key]
		if !ok {
			pi = len(p.Paths)
			paths[key] = pi
			p.Paths = append(p.Paths, pagePath{Client: key[0], Server: key[1]})
		}
		p.Paths[pi].Count++
		diagnosed := len(connDiags(conn)) > 0
		if diagnosed {
			p.Paths[pi].Diag++
		}
		if i >= o.MaxConns {
			continue
		}
		active := conn.StartNs
		for _, s := range conn.Ends() {
			active = max(active, s.activeEndNs())
		}
		pc := pageConn{ID: conn.ID, Name: conn.Name(), Start: b.off(conn.StartNs), End: b.off(conn.EndNs), Active: b.off(active),
			Ends: [2]int{b.sock(conn.Client), b.sock(conn.Server)}, Diags: connDiags(conn), Path: pi}
		p.Conns = append(p.Conns, pc)
	}
	for _, s := range sel.Listeners {
		p.Listeners = append(p.Listeners, b.sock(s))
	}
	for _, s := range sel.Others {
		p.Others = append(p.Others, b.sock(s))
	}
	for i := range p.Diags {
		for _, s := range sel.Diagnoses[i].Sockets {
			if ix, ok := b.sockIx[s]; ok {
				p.Diags[i].Socks = append(p.Diags[i].Socks, ix)
			}
			if s.Conn != nil && !slices.Contains(p.Diags[i].Conns, s.Conn.ID) {
				p.Diags[i].Conns = append(p.Diags[i].Conns, s.Conn.ID)
			}
		}
	}
	p.Overview = b.overview()
	return p
}

// off is mono as nanoseconds since the capture started.
func (b *payloadBuilder) off(mono uint64) int64 { return int64(mono - b.c.Header.StartMonoNs) }

func (b *payloadBuilder) str(s string) int {
	if i, ok := b.strIdx[s]; ok {
		return i
	}
	i := len(b.p.Strs)
	b.p.Strs = append(b.p.Strs, s)
	b.strIdx[s] = i
	return i
}

func connDiags(conn *Conn) []string {
	kinds := []string{}
	for _, s := range conn.Ends() {
		for _, d := range s.Diagnoses {
			if !slices.Contains(kinds, d.Kind) {
				kinds = append(kinds, d.Kind)
			}
		}
	}
	return kinds
}

// statePath is the states a socket went through: "SYN_SENT ESTABLISHED
// CLOSE_WAIT LAST_ACK CLOSE".
func statePath(s *Socket) string {
	if s == nil {
		return "(not traced)"
	}
	var parts []string
	for i := range s.steps {
		x := &s.steps[i]
		if x.kind == StepTransition || (x.kind == StepSnapshot && s.c.strs[x.text] == reasonTimewait && x.new == event.TimeWait) {
			name := x.new.String()
			if len(parts) == 0 || parts[len(parts)-1] != name {
				parts = append(parts, name)
			}
		}
	}
	if s.Omitted > 0 {
		parts = append(parts[:min(len(parts), 3)], "…")
	}
	return strings.Join(parts, " ")
}

// sock adds s to the page, once; -1 for nil.
func (b *payloadBuilder) sock(s *Socket) int {
	if s == nil {
		return -1
	}
	if i, ok := b.sockIx[s]; ok {
		return i
	}
	ps := pageSock{
		Cookie:  strconv.FormatUint(s.Cookie, 10),
		Role:    s.Role.String(),
		Local:   addrPort(s.Local),
		Remote:  addrPort(s.Remote),
		Owners:  ownerString(s.Owners()),
		First:   b.off(s.FirstNs),
		End:     b.off(s.EndNs()),
		Omitted: s.Omitted,
		Segs:    b.segments(s),
		Steps:   [][]int64{},
		Ever:    []int{},
		Diags:   []int{},
	}
	if s.Remote.Port() == 0 {
		ps.Remote = ""
	}
	if s.Conn != nil {
		ps.Conn = s.Conn.ID
	}
	for st := event.Established; st <= event.BoundInact; st++ {
		if s.EverIn(st) {
			ps.Ever = append(ps.Ever, int(st))
		}
	}
	for _, d := range s.Diagnoses {
		if i, ok := b.diagIx[d]; ok {
			ps.Diags = append(ps.Diags, i)
		}
	}
	// Steps, with fields by kind (strings are indexes into Strs):
	//   transition: t, 0, old, new, dur (-1 unknown), to the end (0/1),
	//               cause, ran in, owners (-1 unchanged), gap: expected old
	//               (0 none), socket error
	//   call:       t, 1, call text, by, note, owners (-1 unchanged)
	//   snapshot:   t, 2, text, owners (-1 unchanged)
	//   exit:       t, 3, task
	//   end:        t, 4, state
	//   omitted:    t, 5, count
	//   window:     t, 6, state, since, in a timewait socket (0/1)
	for _, ev := range story(b.c, b.sel, s) {
		t := b.off(ev.mono)
		owners := int64(-1)
		if ev.ownersChanged {
			owners = int64(b.str(ownersText(ev.step.Owners)))
		}
		var row []int64
		switch ev.kind {
		case evTransition:
			x := ev.step
			toEnd := int64(0)
			if ev.toEnd {
				toEnd = 1
			}
			exp := int64(0)
			if x.Gap {
				exp = int64(x.ExpectedOld)
			}
			row = []int64{t, 0, int64(x.Old), int64(x.New), ev.durNs, toEnd, int64(b.str(x.Cause)),
				int64(b.str(ev.ranIn)), owners, exp, int64(b.str(x.SkErr))}
		case evCall:
			row = []int64{t, 1, int64(b.str(callText(ev.step))), int64(b.str(task(ev.step.PID, ev.step.Comm))),
				int64(b.str(ev.step.Note)), owners}
		case evSnapshot:
			row = []int64{t, 2, int64(b.str(snapshotText(ev.step))), owners}
		case evExit:
			row = []int64{t, 3, int64(b.str(ev.task))}
		case evEnd:
			row = []int64{t, 4, int64(ev.state)}
		case evOmitted:
			row = []int64{t, 5, int64(ev.count)}
		case evWindow:
			tw := int64(0)
			if ev.timewait {
				tw = 1
			}
			row = []int64{t, 6, int64(ev.state), b.off(ev.since), tw}
		}
		ps.Steps = append(ps.Steps, row)
	}
	i := len(b.p.Socks)
	b.p.Socks = append(b.p.Socks, ps)
	b.sockIx[s] = i
	return i
}

// segments cuts a socket's life into bars by state: [start, end, state,
// timewait]. A socket handed to timewait goes on as a timewait socket, in
// the states its snapshots saw, until it is gone.
func (b *payloadBuilder) segments(s *Socket) [][4]int64 {
	segs := [][4]int64{}
	var cur event.State
	var start uint64
	tw := false
	closedAt := uint64(0)
	flush := func(end uint64) {
		if cur != 0 && cur != event.Close {
			tww := int64(0)
			if tw {
				tww = 1
			}
			segs = append(segs, [4]int64{b.off(start), b.off(max(end, start)), int64(cur), tww})
		}
	}
	for _, x := range s.Steps() {
		switch x.Kind {
		case StepTransition:
			if x.New == cur && !tw {
				continue
			}
			flush(x.MonoNs)
			cur, start, tw = x.New, x.MonoNs, false
			if x.New == event.Close {
				closedAt = x.MonoNs
			}
		case StepSnapshot:
			switch {
			case x.Reason == reasonTimewaitGone:
				flush(x.MonoNs)
				cur = 0
			case x.Reason == reasonTimewait && (cur == event.Close || cur == 0) && closedAt != 0:
				// The timewait socket took over at the transition to CLOSE.
				cur, start, tw = x.New, closedAt, true
			case x.New != 0 && x.New != cur:
				flush(x.MonoNs)
				cur, start = x.New, x.MonoNs
				tw = x.Reason == reasonTimewait
			}
		}
	}
	flush(max(b.c.EndNs, s.LastNs))
	return segs
}

func (b *payloadBuilder) diag(t *textReport, d *Diagnosis) pageDiag {
	pd := pageDiag{Kind: d.Kind, T: b.off(d.MonoNs), Lines: []pageDiagRow{}, Socks: []int{}, Conns: []int{}}
	row := func(mono uint64, text string) {
		tt := int64(-1)
		if mono != 0 {
			tt = b.off(mono)
		}
		pd.Lines = append(pd.Lines, pageDiagRow{T: tt, Text: text})
	}
	switch {
	case len(d.Leak) > 0:
		l := &d.Leak[0]
		pd.Title = t.socketNamed(l.Cookie, d, sockName(&l.Socket)) + ", in CLOSE_WAIT since " + t.offset(t.c.mono(At(l.Since)))
		for _, p := range d.Leak {
			row(p.MonoNs, leakPhase(p.Phase)+" after "+time.Duration(p.AgeNs).String()+": "+p.Message)
		}
	case d.BindConflict != nil:
		bc := d.BindConflict
		pd.Title = fmt.Sprintf("%s %s:%d by %s fd %d failed: %s", bc.Call, bc.Laddr, bc.Lport, task(bc.PID, bc.Comm), bc.FD, bc.Errno)
		row(bc.MonoNs, bc.Message)
		for _, h := range bc.Holders {
			text := "held by " + t.socketNamed(h.Cookie, d, sockName(&h.Socket)) + ": " + h.State
			if h.StateNs >= 0 {
				text += " for " + time.Duration(h.StateNs).String()
			}
			if len(h.Owners) > 0 {
				text += ", owner " + ownerString(h.Owners)
			}
			if h.Why != "" {
				text += ". " + h.Why
			}
			row(0, text)
		}
	case d.ConnectFail != nil:
		cf := d.ConnectFail
		pd.Title = t.socketNamed(cf.Cookie, d, sockName(&cf.Socket)) + ": " + cf.Errno
		row(cf.MonoNs, cf.Message)
	}
	return pd
}

// overview counts connection starts, and those diagnosed, in up to 200
// buckets over the selection.
func (b *payloadBuilder) overview() pageOverview {
	const buckets = 200
	ov := pageOverview{Starts: []int{}, Diag: []int{}}
	conns := b.sel.Conns
	if len(conns) == 0 {
		return ov
	}
	from, to := conns[0].StartNs, conns[0].StartNs
	for _, c := range conns {
		from, to = min(from, c.StartNs), max(to, c.StartNs)
	}
	span := to - from + 1
	dt := max(1, (span+buckets-1)/buckets)
	n := int((span + dt - 1) / dt)
	ov.From, ov.Bucket = b.off(from), int64(dt)
	ov.Starts, ov.Diag = make([]int, n), make([]int, n)
	for _, c := range conns {
		i := int((c.StartNs - from) / dt)
		ov.Starts[i]++
		if len(connDiags(c)) > 0 {
			ov.Diag[i]++
		}
	}
	return ov
}
