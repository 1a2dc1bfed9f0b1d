// Processes: the exits and forks of processes that own traced sockets.

package tracer

import (
	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
)

// Exit records the exit of a process that owns traced sockets.
func (d *Diagnoser) Exit(e *event.Event) {
	if !d.tracker.Owns(e.PID) {
		return
	}
	d.emit(&record.Exit{Type: record.TypeExit, Time: d.wall(e.MonoNs), MonoNs: e.MonoNs, PID: e.PID, Comm: e.CommString()})
	d.tracker.Exit(e)
}

// Fork records a fork of a process that owns traced sockets.
func (d *Diagnoser) Fork(e *event.Event) {
	if !d.tracker.Owns(e.PID) {
		return
	}
	d.emit(&record.Fork{Type: record.TypeFork, Time: d.wall(e.MonoNs), MonoNs: e.MonoNs, PID: e.PID, Comm: e.CommString(), Child: e.Arg})
	d.tracker.Fork(e)
}
