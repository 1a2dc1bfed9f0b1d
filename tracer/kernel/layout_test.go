package kernel

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"unsafe"

	"github.com/tcptrail/tcptrail/tracer/event"
)

// TestEventLayout checks that the decoder reads struct event the way the
// compiler laid it out: a record built from the bpf2go type must decode to
// the same values.
func TestEventLayout(t *testing.T) {
	if got := int(unsafe.Sizeof(tcptrailEvent{})); got != event.Size {
		t.Fatalf("struct event is %d bytes, decoder expects %d", got, event.Size)
	}
	raw := tcptrailEvent{
		TsNs: 123456789, Cookie: 4097, Pid: 4242, Tid: 4243, Fd: 7, Ret: -98, SkErr: 111, Arg: 2,
		Sport: 10001, Dport: 7070, Family: event.AFInet, Protocol: 6,
		Kind: uint8(event.KindState), Oldstate: uint8(event.Established), Newstate: uint8(event.CloseWait),
		Call: uint8(event.CallClose), Flags: event.FlagExiting, Cgroup: 1 << 40, Netns: 4026531840,
	}
	copy(raw.Saddr[:], []byte{127, 0, 0, 1})
	copy(raw.Daddr[:], []byte{127, 0, 0, 2})
	for i, c := range "client" {
		raw.Comm[i] = int8(c)
	}
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.NativeEndian, &raw); err != nil {
		t.Fatal(err)
	}
	var e event.Event
	if err := event.Decode(buf.Bytes(), &e); err != nil {
		t.Fatal(err)
	}
	want := event.Event{
		Kind: event.KindState, Call: event.CallClose, Flags: event.FlagExiting,
		Old: event.Established, New: event.CloseWait, MonoNs: 123456789, Cookie: 4097,
		Family: event.AFInet, Protocol: 6,
		Local:  netip.MustParseAddrPort("127.0.0.1:10001"),
		Remote: netip.MustParseAddrPort("127.0.0.2:7070"),
		PID:    4242, TID: 4243, FD: 7, Ret: -98, SkErr: 111, Arg: 2,
		Cgroup: 1 << 40, NetNS: 4026531840,
	}
	copy(want.Comm[:], "client")
	if e != want {
		t.Fatalf("decoded\n %+v\nwant\n %+v", e, want)
	}
}
