// The timewait follower: the timewait sockets no tracepoint reports,
// followed through the peer's transitions and the socket table, per
// network namespace.

package tracer

import (
	"errors"
	"net/netip"
	"time"

	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/socktable"
)

// twPollInterval: how often watched timewait sockets are looked up, so that
// their phase changes are timed within 100 ms.
const twPollInterval = 50 * time.Millisecond

// maxTimewaitWatch bounds the timewait sockets followed individually, per
// network namespace: at high churn there are tens of thousands, and each
// costs a netlink query. Sockets that went into timewait during the trace
// come first: those found at start give way to them.
const maxTimewaitWatch = 256

// watchTimewait adds a timewait socket to the watch; false when the watch
// is full (counted) or already has it.
func (d *Diagnoser) watchTimewait(cookie uint64, netns uint32, family uint16, local, remote netip.AddrPort, state uint8, now uint64, timerMs int64, fromStart bool) bool {
	if _, ok := d.timewait[cookie]; ok {
		return false
	}
	if d.twPerNS[netns] >= maxTimewaitWatch && !d.makeTimewaitRoom(netns, fromStart) {
		d.twUnwatched++
		return false
	}
	w := &twWatch{fromStart: fromStart, netns: netns, local: local, remote: remote, family: family, state: state, since: now, timerMs: timerMs}
	d.schedule(w, now)
	d.timewait[cookie] = w
	d.twByTuple.set(twKeyOf(netns, local, remote), cookie)
	d.twPerNS[netns]++
	if fromStart {
		d.twStartNS[netns]++
	}
	return true
}

// makeTimewaitRoom lets a socket handed to timewait during the trace take
// the place of one found at start in the same namespace (counted as not
// followed). False when there is none, or the newcomer is from the start.
func (d *Diagnoser) makeTimewaitRoom(netns uint32, fromStart bool) bool {
	if fromStart || d.twStartNS[netns] == 0 {
		// Nothing to give way (checked first: at high churn the watch is
		// full of sockets handed over during the trace, and this runs for
		// every hand-over).
		return false
	}
	for cookie, w := range d.timewait {
		if w.fromStart && w.netns == netns {
			d.unwatch(cookie, w)
			d.twUnwatched++
			return true
		}
	}
	return false
}

func (d *Diagnoser) unwatch(cookie uint64, w *twWatch) {
	delete(d.timewait, cookie)
	if d.twPerNS[w.netns]--; d.twPerNS[w.netns] <= 0 {
		delete(d.twPerNS, w.netns)
	}
	if w.fromStart {
		if d.twStartNS[w.netns]--; d.twStartNS[w.netns] <= 0 {
			delete(d.twStartNS, w.netns)
		}
	}
	d.twByTuple.deleteIf(twKeyOf(w.netns, w.local, w.remote), cookie)
}

// handedOver starts following a socket the kernel just replaced with a
// timewait socket (same cookie). Its first phase is known exactly from the
// transition itself: TIME_WAIT if the peer's FIN had arrived, FIN_WAIT2
// (waiting for it) if not.
func (d *Diagnoser) handedOver(e *event.Event) {
	state, timer := event.FinWait2, d.finTimeoutMs
	if e.PeerFIN() {
		state, timer = event.TimeWait, 60_000
	}
	if !d.watchTimewait(e.Cookie, e.NetNS, e.Family, e.Local, e.Remote, uint8(state), e.MonoNs, timer, false) {
		return
	}
	d.emit(&record.Snapshot{
		Type: record.TypeSnapshot, Time: d.wall(e.MonoNs), MonoNs: e.MonoNs, Reason: "timewait",
		Socket: record.SocketOf(e.Cookie, e.NetNS, e.Family, e.Local, e.Remote),
		State:  state.String(), TimerMs: timer, Owners: []record.Owner{},
		Note: "at the hand-over",
	})
}

// timewaitPeer infers timewait phase changes from transitions on this
// host: the peer's FIN (its CLOSE_WAIT→LAST_ACK) moves a FIN_WAIT2 timewait
// socket to TIME_WAIT, and a new handshake on the same four-tuple replaces a
// timewait socket. The lookups confirm these and catch the rest (expiry,
// peers on other hosts), but only every twPollInterval.
func (d *Diagnoser) timewaitPeer(e *event.Event) {
	if len(d.twByTuple.m) == 0 {
		return
	}
	// The peer's FIN: the watched socket's remote end is this socket.
	if e.New == event.LastAck {
		if cookie, ok := d.twByTuple.get(e.NetNS, e.Remote, e.Local); ok {
			w := d.timewait[cookie]
			if w.state != uint8(event.TimeWait) {
				w.state, w.since, w.timerMs = uint8(event.TimeWait), e.MonoNs, 60_000
				d.schedule(w, e.MonoNs)
				d.emit(&record.Snapshot{
					Type: record.TypeSnapshot, Time: d.wall(e.MonoNs), MonoNs: e.MonoNs, Reason: "timewait",
					Socket: record.SocketOf(cookie, w.netns, w.family, w.local, w.remote),
					State:  event.TimeWait.String(), TimerMs: w.timerMs, Owners: []record.Owner{},
					Note: "the peer's FIN arrived",
				})
			}
		}
	}
	// A new handshake on the same four-tuple, from either end.
	if e.New == event.SynSent || e.New == event.SynRecv {
		for _, ends := range [2][2]netip.AddrPort{{e.Local, e.Remote}, {e.Remote, e.Local}} {
			cookie, ok := d.twByTuple.get(e.NetNS, ends[0], ends[1])
			if !ok || cookie == e.Cookie {
				continue
			}
			w := d.timewait[cookie]
			d.unwatch(cookie, w)
			d.emit(&record.Snapshot{
				Type: record.TypeSnapshot, Time: d.wall(e.MonoNs), MonoNs: e.MonoNs, Reason: "timewait_gone",
				Socket: record.SocketOf(cookie, w.netns, w.family, w.local, w.remote),
				State:  event.Close.String(), Owners: []record.Owner{},
				Note: "a new connection on the same addresses replaced it",
			})
		}
	}
}

// schedule sets when w is looked up next. A TIME_WAIT socket changes only
// when its timer fires, so it is left alone until shortly before; a
// FIN_WAIT2 one may change whenever the peer's FIN arrives.
func (d *Diagnoser) schedule(w *twWatch, now uint64) {
	w.nextPoll = now + uint64(twPollInterval)
	if w.state == uint8(event.TimeWait) && w.timerMs > 200 {
		w.nextPoll = now + uint64(time.Duration(w.timerMs-150)*time.Millisecond)
	}
}

// nsCheckInterval: how often the namespaces of followed timewait sockets
// are checked. A TIME_WAIT socket is looked up only near its expiry; one
// whose namespace was deleted is gone at once, with no event.
const nsCheckInterval = time.Second

// checkNamespaces ends the watch of timewait sockets whose network
// namespace is gone. Whether a namespace is still there is asked on the
// query worker (it opens the namespace); the watches end when the answer is
// applied, dated by the check. One check at a time; a full queue skips it.
func (d *Diagnoser) checkNamespaces(now uint64) {
	if d.nsChecking || d.queries.full() {
		return
	}
	namespaces := make([]uint32, 0, len(d.twPerNS))
	for netns := range d.twPerNS {
		namespaces = append(namespaces, netns)
	}
	d.nsChecking = d.queries.post(func() func() {
		var gone []uint32
		for _, netns := range namespaces {
			if d.table.Gone(netns) {
				gone = append(gone, netns)
			}
		}
		return func() {
			d.nsChecking = false
			for _, netns := range gone {
				for cookie, w := range d.timewait {
					if w.netns == netns {
						d.namespaceGone(cookie, w, now)
					}
				}
			}
		}
	}, nil)
}

// namespaceGone reports a timewait socket that went with its namespace.
func (d *Diagnoser) namespaceGone(cookie uint64, w *twWatch, now uint64) {
	d.unwatch(cookie, w)
	d.emit(&record.Snapshot{
		Type: record.TypeSnapshot, Time: d.wall(now), MonoNs: now, Reason: "timewait_gone",
		Socket: record.SocketOf(cookie, w.netns, w.family, w.local, w.remote),
		State:  event.Close.String(), Owners: []record.Owner{},
		Note: "its network namespace was deleted",
	})
}

// pollTimewait looks the watched timewait sockets that are due up in the
// socket table, off the reader's path (one job for all of them), and
// reports their phase changes (FIN_WAIT2 → TIME_WAIT) and their end when
// the answers are applied, at a later tick. A socket waiting for its answer
// is not asked again; when the query queue is full they wait a round.
func (d *Diagnoser) pollTimewait(now uint64) {
	if d.queries.full() {
		return
	}
	type ask struct {
		cookie        uint64
		w             *twWatch
		netns         uint32
		local, remote netip.AddrPort
		since         uint64 // the watch's phase when asked
		ent           *socktable.Entry
		err           error
	}
	var asks []ask
	for cookie, w := range d.timewait {
		if now < w.nextPoll || w.asking {
			continue
		}
		w.asking = true
		asks = append(asks, ask{cookie: cookie, w: w, netns: w.netns, local: w.local, remote: w.remote, since: w.since})
	}
	if len(asks) == 0 {
		return
	}
	d.queries.post(func() func() {
		for i := range asks {
			a := &asks[i]
			a.ent, a.err = d.table.Lookup(a.netns, a.local, a.remote)
		}
		return func() {
			for i := range asks {
				a := &asks[i]
				a.w.asking = false
				if d.timewait[a.cookie] != a.w {
					continue // unwatched meanwhile
				}
				if a.w.since != a.since {
					// The peer's transitions moved it on while the
					// table was asked: the answer is older than what
					// is known. The next poll asks again.
					continue
				}
				d.timewaitAnswer(a.cookie, a.w, a.ent, a.err, now)
			}
		}
	}, nil)
}

// timewaitAnswer applies what the socket table said about a watched
// timewait socket at now.
func (d *Diagnoser) timewaitAnswer(cookie uint64, w *twWatch, ent *socktable.Entry, err error, now uint64) {
	if errors.Is(err, socktable.ErrNamespaceGone) {
		d.namespaceGone(cookie, w, now) // and every socket with it
		return
	}
	if err != nil {
		w.nextPoll = now + uint64(twPollInterval)
		return
	}
	// An exact lookup falls back to a listener on the local port when
	// the four-tuple is gone: only the same four-tuple counts.
	if ent != nil && (ent.Local != w.local || ent.Remote != w.remote) {
		ent = nil
	}
	if ent == nil || !event.SameSocket(ent.Cookie, cookie) || ent.Inode != 0 {
		rec := &record.Snapshot{
			Type: record.TypeSnapshot, Time: d.wall(now), MonoNs: now, Reason: "timewait_gone",
			Socket: record.SocketOf(cookie, w.netns, w.family, w.local, w.remote),
			State:  event.Close.String(), Owners: []record.Owner{},
			Note: "expired",
		}
		if ent != nil {
			rec.Note = "a new connection on the same addresses replaced it"
		}
		d.unwatch(cookie, w)
		d.emit(rec)
		return
	}
	if ent.State != w.state {
		// A change no transition on this host showed (the peer is
		// elsewhere): dated by the lookup, at most twPollInterval late
		// (and the time the answer took).
		w.state, w.since, w.timerMs = ent.State, now, int64(ent.Expires)
		d.emit(&record.Snapshot{
			Type: record.TypeSnapshot, Time: d.wall(now), MonoNs: now, Reason: "timewait",
			Socket: record.SocketOf(cookie, w.netns, w.family, w.local, w.remote),
			State:  event.State(ent.State).String(), TimerMs: int64(ent.Expires), Owners: []record.Owner{},
			Note: "socket table",
		})
	}
	w.timerMs = int64(ent.Expires)
	d.schedule(w, now)
}

// tupleIndex finds the watched timewait sockets by namespace and four-tuple.
// Every handshake and every LAST_ACK of a traced port looks it up, and at
// high churn nearly every lookup misses: a count of the entries by a hash of
// their two ports answers most misses from one array read, without making
// and hashing the 40-byte key.
type tupleIndex struct {
	m      map[twKey]uint64
	byPort [1 << portBucketBits]uint32
	probes uint64 // lookups that went to the map
}

const portBucketBits = 12

// portBucket spreads a server's port paired with client ports in sequence
// evenly.
func portBucket(local, remote uint16) uint32 {
	return ((uint32(local)<<16 | uint32(remote)) * 0x9e3779b1) >> (32 - portBucketBits)
}

func (x *tupleIndex) get(netns uint32, local, remote netip.AddrPort) (uint64, bool) {
	// A timewait socket has both ports; a connecting socket's first
	// transition has no local port yet (every connect would land in one
	// bucket, and pass whenever a watched socket shares it).
	if local.Port() == 0 || remote.Port() == 0 || x.byPort[portBucket(local.Port(), remote.Port())] == 0 {
		return 0, false
	}
	x.probes++
	cookie, ok := x.m[twKeyOf(netns, local, remote)]
	return cookie, ok
}

func (x *tupleIndex) set(k twKey, cookie uint64) {
	if _, ok := x.m[k]; !ok {
		x.byPort[portBucket(k.lport, k.rport)]++
	}
	x.m[k] = cookie
}

// deleteIf removes k if it still names cookie (a newer socket on the same
// four-tuple may have taken the entry over).
func (x *tupleIndex) deleteIf(k twKey, cookie uint64) {
	if c, ok := x.m[k]; ok && c == cookie {
		delete(x.m, k)
		x.byPort[portBucket(k.lport, k.rport)]--
	}
}
