// The start-up scan: sockets that existed before the trace, in every
// network namespace, with their owners.

package tracer

import (
	"fmt"

	"github.com/tcptrail/tcptrail/tracer/container"
	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/socktable"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

// Start records the sockets that exist already, with their owners, so that
// a leak or a port holder older than the trace is still found.
// netns and cgroups narrow it as the kernel side's filters do (0, nil: all).
func (d *Diagnoser) Start(ports []uint16, pid uint32, netns uint32, cgroups []uint64) error {
	d.ports = make(map[uint16]bool, len(ports))
	for _, p := range ports {
		d.ports[p] = true
	}
	d.pid = pid
	namespaces, err := d.table.Namespaces()
	if err != nil {
		return fmt.Errorf("list network namespaces: %w", err)
	}
	if netns != 0 {
		namespaces = []uint32{netns}
	}
	inScope := ownersInCgroups(cgroups)
	var mine []socktable.Entry
	for _, ns := range namespaces {
		// With tcp_info: how long the sockets found have been in
		// CLOSE_WAIT or FIN_WAIT2.
		// The kernel leaves other ports' sockets out: on a busy host
		// they are most of its table.
		found, err := d.table.Dump(ns, socktable.AllStates|socktable.WithTCPInfo, socktable.EitherPort(ports), d.wanted)
		if err != nil {
			// A namespace that went away meanwhile has no sockets left;
			// the query is counted as failed.
			continue
		}
		mine = append(mine, found...)
	}
	inodes := make(map[uint32]bool)
	for _, e := range mine {
		if e.Inode != 0 {
			inodes[e.Inode] = true
		}
	}
	owners := socktable.OwnersOf(inodes)
	now := MonoNow()
	// The scan just read the table: the first sweep is due a full interval
	// later (on a host with 100k sockets it took 15 MB and a second dump
	// right after start).
	d.sweeper.last = now
	for _, e := range mine {
		own := d.toOwners(owners[e.Inode])
		if pid != 0 && !ownedBy(own, pid) {
			continue
		}
		if inScope != nil && !inScope(own) {
			continue
		}
		rec := &record.Snapshot{
			Type: record.TypeSnapshot, Time: d.wall(now), MonoNs: now, Reason: "start",
			Socket: record.SocketOf(e.Cookie, e.NetNS, e.Family, e.Local, e.Remote),
			State:  event.State(e.State).String(), Owners: record.Owners(own),
		}
		if e.Timer == timewaitTimer {
			// A timewait socket: the kernel holds it, no process does.
			rec.TimerMs = int64(e.Expires)
			d.watchTimewait(e.Cookie, e.NetNS, e.Family, e.Local, e.Remote, e.State, now, int64(e.Expires), true)
		} else {
			sock := timeline.Socket{
				Cookie: e.Cookie, NetNS: e.NetNS, Family: e.Family, Local: e.Local, Remote: e.Remote,
				State: event.State(e.State), Owners: own,
			}
			if ns, atLeast := timeInState(&e, false); atLeast && ns > 0 && uint64(ns) < now {
				rec.StateNs = ns
				sock.AtLeastSinceNs = now - uint64(ns)
			}
			s := d.tracker.Add(sock)
			if s.State == event.CloseWait {
				d.followCloseWait(e.Cookie, 0)
			}
		}
		d.emit(rec)
	}
	return nil
}

func (d *Diagnoser) toOwners(in []socktable.FDOwner) []timeline.Owner {
	out := make([]timeline.Owner, 0, len(in))
	for _, o := range in {
		var comm [16]byte
		copy(comm[:], o.Comm)
		own := timeline.Owner{PID: o.PID, FD: o.FD, Comm: comm}
		if d.tracker.ContainerOf != nil {
			own.Container = d.tracker.ContainerOf(o.PID)
		}
		out = append(out, own)
	}
	return out
}

// ownersInCgroups says whether one of a socket's owners runs in one of
// cgroups: for sockets older than the trace, whose creator is unknown. Nil
// when cgroups is empty (every socket is in scope).
func ownersInCgroups(cgroups []uint64) func([]timeline.Owner) bool {
	if len(cgroups) == 0 {
		return nil
	}
	want := make(map[uint64]bool, len(cgroups))
	for _, c := range cgroups {
		want[c] = true
	}
	return func(owners []timeline.Owner) bool {
		for _, o := range owners {
			cgs, err := container.ReadProcCgroups(o.PID)
			if err != nil {
				continue
			}
			if path, ok := cgs.Unified(); ok {
				if id, err := container.CgroupID(path); err == nil && want[id] {
					return true
				}
			}
		}
		return false
	}
}

func ownedBy(owners []timeline.Owner, pid uint32) bool {
	for _, o := range owners {
		if o.PID == pid {
			return true
		}
	}
	return false
}
