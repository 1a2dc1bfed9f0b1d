package kernel

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// fakeRing is a ring buffer's memory as the reader maps it: the data area
// once.
type fakeRing struct {
	consumer, producer uint64
	data               []byte
	size               uint64
}

func newFakeRing(size uint64) (*fakeRing, *ringView) {
	f := &fakeRing{data: make([]byte, size), size: size}
	return f, &ringView{consumer: &f.consumer, producer: &f.producer, data: f.data, mask: size - 1}
}

func (f *fakeRing) put(pos uint64, b []byte) {
	for i, c := range b {
		f.data[(pos+uint64(i))&(f.size-1)] = c
	}
}

// write appends a record with hdr's flags and returns where it starts.
func (f *fakeRing) write(payload []byte, flags uint32) uint64 {
	at := f.producer
	var hdr [8]byte
	binary.LittleEndian.PutUint32(hdr[:], uint32(len(payload))|flags)
	f.put(at, hdr[:])
	f.put(at+8, payload)
	f.producer += 8 + (uint64(len(payload))+7)&^7
	return at
}

func (f *fakeRing) commit(at uint64) {
	var hdr [4]byte
	copy(hdr[:], f.data[at&(f.size-1):])
	binary.LittleEndian.PutUint32(hdr[:], binary.LittleEndian.Uint32(hdr[:])&^ringBusyBit)
	f.put(at, hdr[:])
}

func TestRingReadsRecordsInOrder(t *testing.T) {
	f, v := newFakeRing(4096)
	want := [][]byte{[]byte("first"), bytes.Repeat([]byte{7}, 96), []byte("x")}
	for _, p := range want {
		f.write(p, 0)
	}
	for i, w := range want {
		got, err := v.next()
		if err != nil || !bytes.Equal(got, w) {
			t.Fatalf("record %d: %q, %v; want %q", i, got, err, w)
		}
		if cap(got) != len(got) {
			t.Fatalf("record %d: capacity %d beyond its length %d: an append would write into the ring", i, cap(got), len(got))
		}
	}
	if _, err := v.next(); err != errRingEmpty {
		t.Fatalf("after the last record: %v, want errRingEmpty", err)
	}
}

func TestRingSkipsDiscardedAndWaitsForBusy(t *testing.T) {
	f, v := newFakeRing(4096)
	f.write([]byte("dropped"), ringDiscardBit)
	busy := f.write([]byte("pending"), ringBusyBit)
	f.write([]byte("after"), 0)
	if got, err := v.next(); err != errRingBusy {
		t.Fatalf("busy record: got %q, %v; want errRingBusy", got, err)
	}
	f.commit(busy)
	for _, w := range []string{"pending", "after"} {
		got, err := v.next()
		if err != nil || string(got) != w {
			t.Fatalf("got %q, %v; want %q", got, err, w)
		}
	}
}

// A record that runs past the end of the data area reads whole: the second
// mapping continues it.
// Records whose data wraps past the end of the ring, and those that end
// at it or start at its beginning, read whole (a wrapped one as a copy).
func TestRingWraps(t *testing.T) {
	payload := bytes.Repeat([]byte("abcdefgh"), 12) // 96 bytes
	for _, at := range []uint64{200, 152, 248, 256, 256 + 8, 256 - 104} {
		f, v := newFakeRing(256)
		f.producer, f.consumer, v.pos, v.published = at, at, at, at
		f.write(payload, 0)
		got, err := v.next()
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("record at %d: %q, %v", at, got, err)
		}
		if cap(got) != len(got) {
			t.Fatalf("record at %d: capacity %d beyond its length %d", at, cap(got), len(got))
		}
	}
	// Two wrapped records in a row, over many turns of the ring.
	f, v := newFakeRing(256)
	for i := range 40 {
		p := bytes.Repeat([]byte{byte(i)}, 56+i%3*8)
		f.write(p, 0)
		got, err := v.next()
		if err != nil || !bytes.Equal(got, p) {
			t.Fatalf("record %d at %d: %v, %v", i, v.pos, got, err)
		}
	}
}

// The kernel is told what was read once a batch is read, never beyond the
// record the reader still holds.
func TestRingPublishesInBatches(t *testing.T) {
	f, v := newFakeRing(1 << 16)
	for range 100 {
		f.write(make([]byte, 56), 0) // 64 bytes a record
	}
	for i := range 100 {
		v.publish(v.pos, 1024) // what Next does before reading
		if _, err := v.next(); err != nil {
			t.Fatal(err)
		}
		held := v.pos - 64
		if f.consumer > held {
			t.Fatalf("record %d: consumer position %d past the held record at %d", i, f.consumer, held)
		}
		if held-f.consumer >= 1024+64 {
			t.Fatalf("record %d: %d bytes read and not published", i, held-f.consumer)
		}
	}
	if f.consumer == 0 || f.consumer == v.pos {
		t.Fatalf("consumer position %d after reading up to %d: expected batches", f.consumer, v.pos)
	}
	v.publish(v.pos, 0) // before waiting: everything
	if f.consumer != v.pos {
		t.Fatalf("consumer %d, want %d", f.consumer, v.pos)
	}
}

func TestRingRejectsATruncatedRecord(t *testing.T) {
	f, v := newFakeRing(4096)
	f.write([]byte("whole record"), 0)
	f.producer -= 8 // the producer claims less than the record
	if _, err := v.next(); err == nil || err == errRingEmpty || err == errRingBusy {
		t.Fatalf("truncated record: %v, want an error", err)
	}
}

func TestRingPublishStepFitsSmallRings(t *testing.T) {
	for size, want := range map[int]uint64{4096: 512, 64 << 10: 8 << 10, 4 << 20: publishBytes} {
		if got := publishStep(size); got != want {
			t.Errorf("ring of %d bytes: published every %d bytes, want %d", size, got, want)
		}
	}
}
