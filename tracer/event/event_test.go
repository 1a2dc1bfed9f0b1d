package event

import (
	"net/netip"
	"testing"
)

func record(family uint16, saddr, daddr []byte) []byte {
	b := make([]byte, Size)
	ne.PutUint16(b[offFamily:], family)
	copy(b[offSaddr:], saddr)
	copy(b[offDaddr:], daddr)
	ne.PutUint16(b[offSport:], 443)
	ne.PutUint16(b[offDport:], 50000)
	b[offKind] = byte(KindState)
	copy(b[offComm:], "nginx\x00garbage")
	return b
}

func TestDecodeAddresses(t *testing.T) {
	v6 := netip.MustParseAddr("2001:db8::1").As16()
	mapped := netip.MustParseAddr("::ffff:10.0.0.9").As16()
	tests := []struct {
		name         string
		family       uint16
		saddr, daddr []byte
		local        string
		remote       string
	}{
		{"ipv4", AFInet, []byte{10, 0, 0, 1}, []byte{10, 0, 0, 2}, "10.0.0.1:443", "10.0.0.2:50000"},
		{"ipv6", AFInet6, v6[:], v6[:], "[2001:db8::1]:443", "[2001:db8::1]:50000"},
		{"ipv4-mapped ipv6 shows as ipv4", AFInet6, mapped[:], mapped[:], "10.0.0.9:443", "10.0.0.9:50000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e Event
			if err := Decode(record(tt.family, tt.saddr, tt.daddr), &e); err != nil {
				t.Fatal(err)
			}
			if e.Local.String() != tt.local || e.Remote.String() != tt.remote {
				t.Fatalf("got %v -> %v, want %s -> %s", e.Local, e.Remote, tt.local, tt.remote)
			}
			if e.CommString() != "nginx" {
				t.Fatalf("comm %q, want nginx", e.CommString())
			}
		})
	}
}

func TestDecodeShort(t *testing.T) {
	var e Event
	if err := Decode(make([]byte, Size-1), &e); err != ErrShort {
		t.Fatalf("got %v, want ErrShort", err)
	}
}

func TestDecodeDoesNotAllocate(t *testing.T) {
	b := record(AFInet6, make([]byte, 16), make([]byte, 16))
	var e Event
	if n := testing.AllocsPerRun(100, func() { _ = Decode(b, &e) }); n != 0 {
		t.Fatalf("Decode allocates %v times per event", n)
	}
}

func TestStateNames(t *testing.T) {
	for s := Established; s <= BoundInact; s++ {
		got, ok := ParseState(s.String())
		if !ok || got != s {
			t.Fatalf("ParseState(%q) = %v, %v", s.String(), got, ok)
		}
	}
	if CloseWait.String() != "CLOSE_WAIT" || FinWait2.String() != "FIN_WAIT2" || SynSent.String() != "SYN_SENT" {
		t.Fatal("state names must be the kernel's TCP_* names without the prefix")
	}
	if State(200).String() != "UNKNOWN" {
		t.Fatal("out-of-range state must not panic")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(record(AFInet, []byte{1, 2, 3, 4}, []byte{5, 6, 7, 8}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var e Event
		if err := Decode(b, &e); err != nil {
			return
		}
		_ = e.CommString()
		_ = e.Old.String()
		_ = e.Call.String()
		if e.Family == AFInet && !e.Local.Addr().Is4() {
			t.Fatalf("ipv4 event decoded to %v", e.Local)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	raw := record(AFInet, []byte{127, 0, 0, 1}, []byte{127, 0, 0, 1})
	var e Event
	b.ReportAllocs()
	for b.Loop() {
		_ = Decode(raw, &e)
	}
}

func TestSameSocket(t *testing.T) {
	cases := []struct {
		table, id uint64
		want      bool
	}{
		{4097, 4097, true},
		{4097, 4098, false},
		{4097, SyntheticID | 5, true}, // a made-up id: the addresses decide
		{0, SyntheticID | 1<<40 | 1, true},
	}
	for _, c := range cases {
		if got := SameSocket(c.table, c.id); got != c.want {
			t.Errorf("SameSocket(%#x, %#x) = %v, want %v", c.table, c.id, got, c.want)
		}
	}
}

func TestAppendID(t *testing.T) {
	for _, c := range []struct {
		id   uint64
		want string
	}{
		{4097, "#4097"},
		{SyntheticID | 42, "#~0.42"},
		{SyntheticID | 3<<40 | 7, "#~3.7"},
	} {
		if got := string(AppendID(nil, c.id)); got != c.want {
			t.Errorf("AppendID(%#x) = %q, want %q", c.id, got, c.want)
		}
	}
}

// Encode writes what Decode reads back, for both families.
func TestEncodeDecode(t *testing.T) {
	for _, want := range []Event{
		{Kind: KindState, MonoNs: 21506419198467, Cookie: 297761913, PID: 27730, TID: 27731, FD: -1, SkErr: 104,
			Family: AFInet, Protocol: 6, Local: netip.MustParseAddrPort("127.0.0.1:7979"), Remote: netip.MustParseAddrPort("10.1.2.3:35080"),
			Old: Established, New: CloseWait, Flags: FlagPeerFIN, Cgroup: 1, NetNS: 4026531833},
		{Kind: KindCall, Call: CallAccept, FD: 5, Ret: -11, Arg: 3, Family: AFInet6,
			Local: netip.MustParseAddrPort("[2001:db8::1]:443"), Remote: netip.MustParseAddrPort("[2001:db8::2]:50000")},
	} {
		copy(want.Comm[:], "server")
		b := make([]byte, Size)
		Encode(b, &want)
		var got Event
		if err := Decode(b, &got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("decoded %+v, want %+v", got, want)
		}
	}
}
