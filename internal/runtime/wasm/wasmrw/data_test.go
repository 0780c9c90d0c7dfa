package wasmrw

import (
	"bytes"
	"context"
	"testing"

	"github.com/tetratelabs/wazero"

	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/wasmbin"
)

// memoryAfterInstantiation returns memory 0 of b once instantiated.
func memoryAfterInstantiation(t *testing.T, b []byte) []byte {
	t.Helper()
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	mod, err := rt.Instantiate(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	mem, _ := mod.Memory().Read(0, mod.Memory().Size())
	return bytes.Clone(mem)
}

func dataModule(data ...wasmbin.Data) []byte {
	return (&wasmbin.Module{MemoryPages: 1, Exports: []wasmbin.Export{{Name: "memory", Kind: wasmbin.KindMemory}}, Data: data}).Encode()
}

func TestMergeData(t *testing.T) {
	for _, tc := range []struct {
		name       string
		data       []wasmbin.Data
		wantMerged int
		wantFill   int
	}{
		{"adjacent and near", []wasmbin.Data{{Offset: 0, Bytes: []byte("ab")}, {Offset: 2, Bytes: []byte("cd")}, {Offset: 12, Bytes: []byte("ef")}, {Offset: 200, Bytes: []byte("gh")}}, 2, 8},
		{"one segment", []wasmbin.Data{{Offset: 5, Bytes: []byte("x")}}, 1, 0},
		{"empty segments", []wasmbin.Data{{Offset: 5, Bytes: nil}, {Offset: 6, Bytes: []byte("y")}, {Offset: 7, Bytes: nil}}, 1, 1},
		// Disjoint segments in any order (Go's linker writes its sections
		// out of address order) are sorted, then merged.
		{"descending", []wasmbin.Data{{Offset: 100, Bytes: []byte("ab")}, {Offset: 0, Bytes: []byte("cd")}}, 2, 0},
		{"descending and near", []wasmbin.Data{{Offset: 10, Bytes: []byte("ab")}, {Offset: 0, Bytes: []byte("cd")}, {Offset: 4, Bytes: []byte("ef")}}, 1, 6},
		// Overlapping: a later segment overwrites an earlier one, so
		// merging with zero fill could clobber data; left alone.
		{"overlapping", []wasmbin.Data{{Offset: 0, Bytes: []byte("abcd")}, {Offset: 2, Bytes: []byte("XY")}}, 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := dataModule(tc.data...)
			out, st, err := Rewrite(orig, Options{MergeDataGap: 64})
			if err != nil {
				t.Fatal(err)
			}
			if st.DataSegments != len(tc.data) || st.MergedSegments != tc.wantMerged || st.ZeroFill != tc.wantFill {
				t.Errorf("stats %+v, want %d segments merged to %d with %d zero bytes", st, len(tc.data), tc.wantMerged, tc.wantFill)
			}
			if !bytes.Equal(memoryAfterInstantiation(t, orig), memoryAfterInstantiation(t, out)) {
				t.Error("memory differs after instantiation")
			}
		})
	}
}

func TestMergeDataKeepsPassiveAndGlobalOffsets(t *testing.T) {
	// Hand-encoded data section: active@0 "ab", passive "zz", active@4 "cd",
	// active at global.get 0 (an imported... here a defined const global).
	payload := []byte{4,
		0, 0x41, 0, 0x0b, 2, 'a', 'b',
		1, 2, 'z', 'z',
		0, 0x41, 4, 0x0b, 2, 'c', 'd',
	}
	payload = append(payload, 0, 0x23, 0, 0x0b, 1, 'g')
	out, n, m, fill, err := mergeData(payload, 64)
	if err != nil {
		t.Fatal(err)
	}
	// The global offset makes the order unknowable: left alone.
	if n != 4 || m != 4 || fill != 0 || !bytes.Equal(out, payload) {
		t.Errorf("got %d -> %d segments, fill %d; want the section unchanged", n, m, fill)
	}
	payload = payload[:len(payload)-6]
	payload[0] = 3
	out, n, m, fill, err = mergeData(payload, 64)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{2, 1, 2, 'z', 'z', 0, 0x41, 0, 0x0b, 6, 'a', 'b', 0, 0, 'c', 'd'}
	if n != 3 || m != 2 || fill != 2 || !bytes.Equal(out, want) {
		t.Errorf("got %d -> %d segments, fill %d, % x; want 3 -> 2, fill 2, % x", n, m, fill, out, want)
	}
}

// TestDataImage: the stripped module's memory with the image laid over it
// is the original module's memory after instantiation; where the segments
// cannot be moved out (overlapping, a computed offset) the module keeps
// them and there is no image.
func TestDataImage(t *testing.T) {
	for _, tc := range []struct {
		name  string
		data  []wasmbin.Data
		image bool
	}{
		{"disjoint, out of order", []wasmbin.Data{{Offset: 300, Bytes: []byte("gh")}, {Offset: 0, Bytes: []byte("ab")}, {Offset: 12, Bytes: []byte("ef")}}, true},
		{"with empty segments", []wasmbin.Data{{Offset: 5, Bytes: nil}, {Offset: 6, Bytes: []byte("y")}}, true},
		{"overlapping", []wasmbin.Data{{Offset: 0, Bytes: []byte("abcd")}, {Offset: 2, Bytes: []byte("XY")}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := dataModule(tc.data...)
			for _, merge := range []int{0, 64} {
				out, st, err := Rewrite(orig, Options{MergeDataGap: merge, DataImage: true})
				if err != nil {
					t.Fatal(err)
				}
				if (st.Data != nil) != tc.image {
					t.Fatalf("merge %d: segments %v, want them moved out: %v", merge, st.Data, tc.image)
				}
				got := memoryAfterInstantiation(t, out)
				if st.Data != nil {
					if bytes.ContainsAny(got, "abcdefghyXY") {
						t.Errorf("merge %d: the stripped module still writes data", merge)
					}
					for _, s := range st.Data {
						if len(s.Data) == 0 {
							t.Errorf("merge %d: empty segment at %d kept", merge, s.Offset)
						}
						copy(got[s.Offset:], s.Data)
					}
				}
				if !bytes.Equal(memoryAfterInstantiation(t, orig), got) {
					t.Errorf("merge %d: memory differs after instantiation", merge)
				}
			}
		})
	}
	// A segment at a computed offset keeps every segment in the module.
	payload := []byte{2, 0, 0x41, 0, 0x0b, 2, 'a', 'b', 0, 0x23, 0, 0x0b, 1, 'g'}
	if out, segs, err := moveData(payload); err != nil || segs != nil || !bytes.Equal(out, payload) {
		t.Errorf("moveData with a global offset = % x, %v, %v; want the section unchanged and no segments", out, segs, err)
	}
}
