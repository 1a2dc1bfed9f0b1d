package report

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
)

// TextWidth is the width of the text report, in columns.
const TextWidth = 100

// WriteText writes the report of sel as text: for each connection a
// sequence diagram with its two ends side by side on one time axis, then
// the listeners, the other sockets, the diagnoses and any problems met
// while reading. name names the capture in the title.
func WriteText(w io.Writer, c *Capture, sel *Selection, name string) error {
	t := &textReport{
		w:     bufio.NewWriterSize(w, 64<<10),
		c:     c,
		sel:   sel,
		width: TextWidth,
	}
	t.timeW = max(len(t.offset(c.EndNs)), len("+0.000000000"))
	t.colW = (t.width - 1 - t.timeW - 2 - 1) / 2
	t.report(name)
	if err := t.w.Flush(); err != nil {
		return err
	}
	return t.err
}

type textReport struct {
	w     *bufio.Writer
	c     *Capture
	sel   *Selection
	width int
	timeW int // the time column
	colW  int // one end's column in a diagram
	buf   []byte
	err   error
}

func (t *textReport) printf(format string, args ...any) {
	if t.err == nil {
		_, t.err = fmt.Fprintf(t.w, format, args...)
	}
}

func (t *textReport) line(s string) {
	if t.err == nil {
		_, t.err = t.w.WriteString(strings.TrimRight(s, " ") + "\n")
	}
}

// rule prints a heading as a rule across the page: "━━ title ━━━━".
func (t *textReport) rule(title string) {
	t.line("━━ " + title + " " + strings.Repeat("━", max(2, t.width-4-utf8.RuneCountInString(title))))
}

// offset formats a CLOCK_MONOTONIC time as the exact seconds since the
// capture started.
func (t *textReport) offset(mono uint64) string {
	d := int64(mono) - int64(t.c.Header.StartMonoNs)
	sign := "+"
	if d < 0 {
		sign, d = "-", -d
	}
	return fmt.Sprintf("%s%d.%09d", sign, d/1e9, d%1e9)
}

func (t *textReport) report(name string) {
	c := t.c
	t.head(name)
	for _, conn := range t.sel.Conns {
		t.line("")
		t.conn(conn)
	}
	if len(t.sel.Listeners) > 0 {
		t.line("")
		t.rule(fmt.Sprintf("Listeners (%d)", len(t.sel.Listeners)))
		for _, s := range t.sel.Listeners {
			t.single(s)
		}
	}
	if len(t.sel.Others) > 0 {
		t.line("")
		t.rule(fmt.Sprintf("Other sockets (%d): never connected", len(t.sel.Others)))
		for _, s := range t.sel.Others {
			t.single(s)
		}
	}
	t.line("")
	t.rule(fmt.Sprintf("Diagnoses (%d)", len(t.sel.Diagnoses)))
	if len(t.sel.Diagnoses) == 0 {
		t.line("none: no leak, no bind conflict, no failed connect")
	}
	for _, d := range t.sel.Diagnoses {
		t.diagnosis(d)
	}
	if len(c.Problems) > 0 {
		t.line("")
		t.rule("Problems reading the capture")
		for _, p := range c.Problems {
			t.wrap("", "  ", p.Error())
		}
		if c.MoreProblems > 0 {
			t.line(fmt.Sprintf("and %d more", c.MoreProblems))
		}
	}
}

func (t *textReport) head(name string) {
	c, h := t.c, &t.c.Header
	t.rule("tcptrail report of " + name)
	t.wrap("capture   ", "          ", fmt.Sprintf("tcptrail %s (schema %d) on %s, kernel %s, attached with %s",
		orDash(h.Version), h.Schema, orDash(h.Host), orDash(h.Kernel), attachedWith(h)))
	t.line("          started " + h.StartTime.UTC().Format("2006-01-02 15:04:05.000000000 MST") +
		", ran " + c.Duration().String())
	ports := "every port"
	if len(h.Filters.Ports) > 0 {
		ps := make([]string, len(h.Filters.Ports))
		for i, p := range h.Filters.Ports {
			ps[i] = strconv.Itoa(int(p))
		}
		ports = "ports " + strings.Join(ps, ", ")
	}
	procs := "every process"
	if h.Filters.PID != 0 {
		procs = "pid " + strconv.Itoa(int(h.Filters.PID))
	}
	t.line("          traced " + ports + ", " + procs)
	t.wrap("contents  ", "          ", fmt.Sprintf("%s, %s: %s, %s, %s; %s",
		plural(c.Transitions, "transition"), plural(len(c.Sockets), "socket"), plural(len(c.Conns), "connection"),
		plural(len(c.Listeners), "listener"), plural(len(c.Others), "other socket"), plural(len(c.Diagnoses), "diagnosis")))
	if n := c.Lost.Total(); n > 0 || c.Lost.Gaps > 0 || c.Lost.EndsUnseen > 0 {
		t.wrap("LOST      ", "          ", fmt.Sprintf("%d events lost (ring buffer full %d, recursion %d, queue full %d), %d gaps in timelines%s: some steps are missing",
			n, c.Lost.RingbufFull, c.Lost.RecursionMisses, c.Lost.QueueFull, c.Lost.Gaps, c.Lost.EndsUnseenText()))
	} else {
		t.line("          no events lost")
	}
	if c.OmittedSteps > 0 {
		t.wrap("OMITTED   ", "          ", fmt.Sprintf("%d steps not kept to bound memory (long timelines keep their start and end): narrow the report with --port, --pid or --since/--until", c.OmittedSteps))
	}
	switch {
	case c.Truncated:
		t.wrap("CUT SHORT ", "          ", fmt.Sprintf("the last line (%d) is cut off and there is no summary: tcptrail was killed or crashed while writing; everything before is shown", c.Lines))
	case !c.Complete():
		t.wrap("CUT SHORT ", "          ", fmt.Sprintf("no summary record after line %d: tcptrail was killed or crashed; everything up to there is shown", c.Lines))
	}
	t.wrap("shown     ", "          ", t.shown())
	t.line("Times are seconds since the capture started. \"for\" is the time spent in the state entered.")
}

// shown says what the filters selected.
func (t *textReport) shown() string {
	sel, f := t.sel, &t.sel.Filter
	var what []string
	if len(f.Ports) > 0 {
		ps := make([]string, len(f.Ports))
		for i, p := range f.Ports {
			ps[i] = strconv.Itoa(int(p))
		}
		what = append(what, "port "+strings.Join(ps, " or "))
	}
	if len(f.PIDs) > 0 {
		ps := make([]string, len(f.PIDs))
		for i, p := range f.PIDs {
			ps[i] = strconv.Itoa(int(p))
		}
		what = append(what, "pid "+strings.Join(ps, " or "))
	}
	if len(f.States) > 0 {
		ss := make([]string, len(f.States))
		for i, s := range f.States {
			ss[i] = s.String()
		}
		what = append(what, "ever in "+strings.Join(ss, " or "))
	}
	if f.LeaksOnly {
		what = append(what, "leaks only")
	}
	if sel.Windowed() {
		from, to := "start", "end"
		if f.Since.set {
			from = t.offset(sel.FromNs)
		}
		if f.Until.set {
			to = t.offset(sel.ToNs)
		}
		what = append(what, "from "+from+" to "+to)
	}
	filter := "everything"
	if len(what) > 0 {
		filter = strings.Join(what, ", ")
	}
	return fmt.Sprintf("%s: %s, %s, %s, %s", filter, plural(len(sel.Conns), "connection"),
		plural(len(sel.Listeners), "listener"), plural(len(sel.Others), "other socket"), plural(len(sel.Diagnoses), "diagnosis"))
}

// plural is "1 socket", "2 sockets", "2 diagnoses".
func plural(n int, noun string) string {
	if n != 1 {
		if strings.HasSuffix(noun, "is") {
			noun = noun[:len(noun)-2] + "es"
		} else {
			noun += "s"
		}
	}
	return strconv.Itoa(n) + " " + noun
}

// attachedWith says how the programs were attached, and how the syscalls
// were hooked when the capture says (which is what the host paid for it).
func attachedWith(h *record.Header) string {
	if h.SyscallHooks == "" {
		return orDash(h.Attach)
	}
	how, ok := map[string]string{
		"function":           "fentry/fexit",
		"syscall-tracepoint": "the syscall tracepoints",
		"tracepoint":         "the raw_syscalls tracepoints",
	}[h.SyscallHooks]
	if !ok {
		how = h.SyscallHooks
	}
	return orDash(h.Attach) + ", syscalls through " + how
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// wrap prints text word-wrapped to the page, after first on the first line
// and indent on the others.
func (t *textReport) wrap(first, indent, text string) {
	for i, l := range wrapText(text, t.width-utf8.RuneCountInString(indent)) {
		if i == 0 {
			t.line(first + l)
		} else {
			t.line(indent + l)
		}
	}
}

// wrapText splits text into lines of at most width runes, at spaces where
// it can.
func wrapText(text string, width int) []string {
	width = max(width, 8)
	var lines []string
	for _, para := range strings.Split(text, "\n") {
		cur := ""
		for _, word := range strings.Fields(para) {
			for utf8.RuneCountInString(word) > width {
				if cur != "" {
					lines = append(lines, cur)
					cur = ""
				}
				cut := runeIndex(word, width)
				lines = append(lines, word[:cut])
				word = word[cut:]
			}
			switch {
			case cur == "":
				cur = word
			case utf8.RuneCountInString(cur)+1+utf8.RuneCountInString(word) <= width:
				cur += " " + word
			default:
				lines = append(lines, cur)
				cur = word
			}
		}
		if cur != "" || len(lines) == 0 {
			lines = append(lines, cur)
		}
	}
	return lines
}

// runeIndex is the byte index of the n-th rune of s.
func runeIndex(s string, n int) int {
	i := 0
	for j := range s {
		if i == n {
			return j
		}
		i++
	}
	return len(s)
}

func pad(s string, width int) string {
	if n := utf8.RuneCountInString(s); n < width {
		return s + strings.Repeat(" ", width-n)
	}
	return s
}

// row is one event of a diagram, in one column.
type row struct {
	mono  uint64
	col   int
	lines []string
}

// conn prints one connection as a sequence diagram.
func (t *textReport) conn(conn *Conn) {
	ends := [2]*Socket{conn.Client, conn.Server}
	title := fmt.Sprintf("Connection %d: %s", conn.ID, conn.Name())
	if t.c.ManyNamespaces() {
		title += fmt.Sprintf(" · netns %d", conn.first().NetNS)
	}
	var tags []string
	for _, s := range conn.Ends() {
		for _, d := range s.Diagnoses {
			tag := diagTitle(d.Kind)
			if !slices.Contains(tags, tag) {
				tags = append(tags, tag)
			}
		}
	}
	if len(tags) > 0 {
		title += " · " + strings.Join(tags, ", ")
	}
	t.rule(title)

	// The header: one column per end.
	head := [2][]string{}
	for i, s := range ends {
		role := [2]string{"client", "server"}[i]
		if s == nil {
			head[i] = []string{role, "(not traced)"}
			continue
		}
		if s.Role == RoleUnknown {
			role = "end"
		}
		h := []string{role + " " + addrPort(s.Local), "cookie " + strconv.FormatUint(s.Cookie, 10)}
		if owners := s.Owners(); len(owners) > 0 {
			h = append(h, wrapText("owner "+ownerString(owners), t.colW)...)
		}
		head[i] = h
	}
	t.rows([]row{{col: -1, lines: nil}}, ends[:], head[:], "time")

	var rows []row
	for i, s := range ends {
		if s != nil {
			rows = append(rows, t.socketRows(s, i)...)
		}
	}
	slices.SortStableFunc(rows, func(a, b row) int { return cmp.Compare(a.mono, b.mono) })
	t.rows(rows, ends[:], nil, "")
}

// single prints one socket without a peer as a one-column diagram.
func (t *textReport) single(s *Socket) {
	saved := t.colW
	t.colW = t.width - 1 - t.timeW - 2
	defer func() { t.colW = saved }()
	head := fmt.Sprintf("%s %s · cookie %d", s.Role, addrPort(s.Local), s.Cookie)
	if s.Role == RoleUnknown {
		head = fmt.Sprintf("%s · cookie %d", addrPort(s.Local), s.Cookie)
	}
	if owners := s.Owners(); len(owners) > 0 {
		head += " · owner " + ownerString(owners)
	}
	t.line("")
	t.rows([]row{{col: -1}}, []*Socket{s}, [][]string{wrapText(head, t.colW)}, "")
	rows := t.socketRows(s, 0)
	slices.SortStableFunc(rows, func(a, b row) int { return cmp.Compare(a.mono, b.mono) })
	t.rows(rows, []*Socket{s}, nil, "")
}

// rows prints rows; with head set, it prints that as a header instead.
func (t *textReport) rows(rows []row, ends []*Socket, head [][]string, timeLabel string) {
	if head != nil {
		n := 0
		for _, h := range head {
			n = max(n, len(h))
		}
		for i := 0; i < n; i++ {
			label := ""
			if i == 0 {
				label = timeLabel
			}
			cells := make([]string, len(head))
			for j, h := range head {
				if i < len(h) {
					cells[j] = h[i]
				}
			}
			t.cells(label, cells)
		}
		rules := make([]string, len(head))
		for j := range rules {
			rules[j] = strings.Repeat("─", t.colW)
		}
		t.cells(strings.Repeat("─", t.timeW), rules)
		return
	}
	cells := make([]string, len(ends))
	for _, r := range rows {
		for i, l := range r.lines {
			label := ""
			if i == 0 {
				label = t.offset(r.mono)
			}
			clear(cells)
			for j, s := range ends {
				if j == r.col {
					cells[j] = l
				} else if s != nil {
					cells[j] = lifeline(s, r.mono)
				}
			}
			t.cells(label, cells)
		}
	}
}

// cells prints one line of a diagram. A report of a big capture prints
// millions of them: it builds each in a reused buffer.
func (t *textReport) cells(label string, cells []string) {
	b := append(t.buf[:0], ' ')
	b = appendPadded(b, label, t.timeW)
	b = append(b, "  "...)
	for i, c := range cells {
		if i > 0 {
			b = append(b, ' ')
		}
		b = appendPadded(b, c, t.colW)
	}
	for len(b) > 0 && b[len(b)-1] == ' ' {
		b = b[:len(b)-1]
	}
	t.buf = append(b, '\n')
	if t.err == nil {
		_, t.err = t.w.Write(t.buf)
	}
}

const spaces = "                                                                                                    "

// appendPadded appends s and spaces up to width runes.
func appendPadded(b []byte, s string, width int) []byte {
	b = append(b, s...)
	for n := width - utf8.RuneCountInString(s); n > 0; n -= len(spaces) {
		b = append(b, spaces[:min(n, len(spaces))]...)
	}
	return b
}

// lifeline is what a column shows at mono when its socket has nothing to
// say: │ while it lives, ┆ while its timewait socket holds the address.
func lifeline(s *Socket, mono uint64) string {
	switch {
	case mono < s.FirstNs:
		return ""
	case s.ClosedNs == 0 || mono < s.ClosedNs:
		if mono > s.EndNs() {
			return ""
		}
		return "│"
	case mono < s.EndNs():
		return "┆"
	}
	return ""
}

// socketRows builds the rows of one socket's story.
func (t *textReport) socketRows(s *Socket, col int) []row {
	w := t.colW
	var rows []row
	for _, ev := range story(t.c, t.sel, s) {
		var out []string
		for i, l := range ev.text(t) {
			if utf8.RuneCountInString(l) <= w-2 || (i == 0 && utf8.RuneCountInString(l) <= w) {
				if i > 0 {
					l = "  " + l
				}
				out = append(out, l) // fits: keeps its alignment
				continue
			}
			for _, wl := range wrapText(l, w-2) {
				if i > 0 || len(out) > 0 {
					wl = "  " + wl
				}
				out = append(out, wl)
			}
		}
		rows = append(rows, row{mono: ev.mono, col: col, lines: out})
	}
	return rows
}

// text is an event as lines of a diagram's column: a headline, then
// details.
func (ev *storyEvent) text(t *textReport) []string {
	x := ev.step
	var lines []string
	switch ev.kind {
	case evWindow:
		if ev.timewait {
			return []string{"⋮ " + ev.state.String() + " (timewait) since " + t.offset(ev.since)}
		}
		return []string{"⋮ " + ev.state.String() + " since " + t.offset(ev.since)}
	case evOmitted:
		return []string{fmt.Sprintf("… %d steps omitted …", ev.count)}
	case evExit:
		return []string{"✕ " + ev.task + " exited"}
	case evEnd:
		if ev.timewait {
			return []string{"■ end of capture: its timewait socket still holds the four-tuple, in " + ev.state.String()}
		}
		return []string{"■ end of capture: still " + ev.state.String()}
	case evTransition:
		head := "● " + x.New.String()
		switch {
		case ev.durNs >= 0 && ev.toEnd:
			head = pad(head, 16) + "for ≥" + time.Duration(ev.durNs).String() + ", to the end"
		case ev.durNs >= 0:
			head = pad(head, 16) + "for " + time.Duration(ev.durNs).String()
		}
		lines = append(lines, head, x.Cause)
		if ev.ranIn != "" {
			lines = append(lines, "ran in "+ev.ranIn)
		}
		if x.SkErr != "" {
			lines = append(lines, "socket error "+x.SkErr)
		}
		if x.Gap {
			lines = append(lines, gapText(x))
		}
	case evCall:
		lines = append(lines, "◦ "+callText(x), "by "+task(x.PID, x.Comm))
		if x.Note != "" {
			lines = append(lines, x.Note)
		}
	case evSnapshot:
		lines = append(lines, snapshotText(x))
	}
	if ev.ownersChanged {
		lines = append(lines, ownersText(x.Owners))
	}
	return lines
}

func gapText(x *Step) string {
	return fmt.Sprintf("⚠ gap: it left %s, but was last seen entering %s: transitions were lost", x.Old, x.ExpectedOld)
}

func ownersText(owners []record.Owner) string {
	if len(owners) == 0 {
		return "owners: none"
	}
	return "owners: " + ownerString(owners)
}

// task names a process: comm[pid].
func task(pid uint32, comm string) string {
	if comm == "" {
		comm = "?"
	}
	return comm + "[" + strconv.FormatUint(uint64(pid), 10) + "]"
}

func callText(x *Step) string {
	var b strings.Builder
	if x.Call == "accept" && x.Errno == "" {
		// The record's fd is the accepted socket's new fd.
		fmt.Fprintf(&b, "accept() = fd %d", x.FD)
		return b.String()
	}
	fmt.Fprintf(&b, "%s(fd %d)", x.Call, x.FD)
	switch {
	case x.Errno != "":
		b.WriteString(" failed: " + x.Errno)
	case x.Ret != 0:
		fmt.Fprintf(&b, " = %d", x.Ret)
	}
	if x.Old != 0 && x.Old != event.Close {
		b.WriteString(" in " + x.Old.String())
	}
	return b.String()
}

func snapshotText(x *Step) string {
	timer := ""
	if x.TimerMs > 0 {
		timer = ", timer " + (time.Duration(x.TimerMs) * time.Millisecond).String()
	}
	note := ""
	if x.Note != "" {
		note = " (" + x.Note + ")"
	}
	switch x.Reason {
	case reasonStart:
		return "◌ " + x.New.String() + " when tracing started" + timer + note
	case reasonTimewait:
		return "◌ " + x.New.String() + " in a kernel timewait socket" + timer + note
	case reasonTimewaitGone:
		if x.Note != "" {
			return "◌ timewait socket gone: " + x.Note
		}
		return "◌ timewait socket gone: the four-tuple is free"
	}
	return "◌ " + x.New.String() + " (" + x.Reason + ")" + timer + note
}

func diagTitle(kind string) string {
	switch kind {
	case record.TypeLeak:
		return "LEAK"
	case record.TypeBindConflict:
		return "BIND CONFLICT"
	case record.TypeConnectFail:
		return "CONNECT FAILED"
	}
	return strings.ToUpper(kind)
}

// where names a socket of a diagnosis and its connection.
func where(s *Socket) string {
	switch {
	case s.Conn != nil:
		return fmt.Sprintf("%s (cookie %d, connection %d)", s.Name(), s.Cookie, s.Conn.ID)
	}
	return fmt.Sprintf("%s (cookie %d)", s.Name(), s.Cookie)
}

func (t *textReport) socketNamed(cookie uint64, d *Diagnosis, fallback string) string {
	for _, s := range d.Sockets {
		if s.Cookie == cookie {
			return where(s)
		}
	}
	return fallback
}

func (t *textReport) diagnosis(d *Diagnosis) {
	ind := strings.Repeat(" ", t.timeW+3)
	first := func(title string) { t.wrap(pad(diagTitle(d.Kind), t.timeW+3), ind, title) }
	at := func(mono uint64, text string) { t.wrap(" "+pad(t.offset(mono), t.timeW+2), ind, text) }
	t.line("")
	switch {
	case len(d.Leak) > 0:
		l := &d.Leak[0]
		first(t.socketNamed(l.Cookie, d, sockName(&l.Socket)+fmt.Sprintf(" (cookie %d)", l.Cookie)) +
			", in CLOSE_WAIT since " + t.offset(t.c.mono(At(l.Since))))
		for _, p := range d.Leak {
			at(p.MonoNs, leakPhase(p.Phase)+" after "+time.Duration(p.AgeNs).String()+": "+p.Message)
		}
	case d.BindConflict != nil:
		bc := d.BindConflict
		first(fmt.Sprintf("%s %s:%d by %s fd %d failed: %s", bc.Call, bc.Laddr, bc.Lport, task(bc.PID, bc.Comm), bc.FD, bc.Errno))
		at(bc.MonoNs, bc.Message)
		for _, h := range bc.Holders {
			t.wrap(ind+"held by ", ind+"  ", t.socketNamed(h.Cookie, d, sockName(&h.Socket)+fmt.Sprintf(" (cookie %d)", h.Cookie)))
			state := h.State
			if h.StateNs >= 0 {
				state += " for " + time.Duration(h.StateNs).String()
			}
			if len(h.Owners) > 0 {
				state += ", owner " + ownerString(h.Owners)
			}
			t.wrap(ind+"  ", ind+"  ", state)
			if h.Why != "" {
				t.wrap(ind+"  ", ind+"  ", h.Why)
			}
		}
	case d.ConnectFail != nil:
		cf := d.ConnectFail
		first(t.socketNamed(cf.Cookie, d, sockName(&cf.Socket)+fmt.Sprintf(" (cookie %d)", cf.Cookie)) + ": " + cf.Errno)
		at(cf.MonoNs, cf.Message)
	}
}

func sockName(s *record.Socket) string {
	if s.Rport == 0 {
		return hostPort(s.Laddr, s.Lport)
	}
	return hostPort(s.Laddr, s.Lport) + " → " + hostPort(s.Raddr, s.Rport)
}

func hostPort(addr string, port uint16) string {
	if strings.Contains(addr, ":") {
		return "[" + addr + "]:" + strconv.Itoa(int(port))
	}
	return addr + ":" + strconv.Itoa(int(port))
}

func leakPhase(p string) string {
	switch p {
	case "stuck":
		return "stuck"
	case "closed_late":
		return "closed late"
	case "closed_by_exit":
		return "closed by exit"
	case "still_open":
		return "still open at the end"
	}
	return p
}
