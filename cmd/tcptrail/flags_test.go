package main

import (
	"reflect"
	"testing"
)

func TestPortList(t *testing.T) {
	var p portList
	for _, v := range []string{"10001,7070", "7070", " 80 "} {
		if err := p.Set(v); err != nil {
			t.Fatal(err)
		}
	}
	if want := []uint16{80, 7070, 10001}; !reflect.DeepEqual(p.ports, want) {
		t.Fatalf("ports %v, want %v (sorted, without duplicates)", p.ports, want)
	}
	for _, bad := range []string{"0", "65536", "-1", "x", "", "1,,2"} {
		if err := (&portList{}).Set(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]int{"8M": 8 << 20, "512K": 512 << 10, "4MiB": 4 << 20, "4096": 4096} {
		var b byteSize
		if err := b.Set(in); err != nil || int(b) != want {
			t.Errorf("%q: %d, %v; want %d", in, b, err, want)
		}
	}
	for _, bad := range []string{"0", "-1M", "lots", ""} {
		var b byteSize
		if err := b.Set(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if b := byteSize(4 << 20); b.String() != "4M" {
		t.Errorf("String() = %s", b.String())
	}
}
