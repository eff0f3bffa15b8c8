package nfs

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net/netip"
	"testing"
)

// FuzzDispatch feeds arbitrary RPC messages to the decoder and every
// procedure behind it: whatever arrives, the server answers or drops it and
// never panics or writes to the export.
func FuzzDispatch(f *testing.F) {
	fx := makeFixture(f, false)
	s := New(Config{Store: fx.store, Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t, err := s.tree("demo", 1)
	if err != nil {
		f.Fatal(err)
	}
	root := t.handle(0)
	file := t.handle(1)
	call := func(prog, vers, proc uint32, args []byte) []byte {
		w := &xdrWriter{}
		w.u32(1)
		w.u32(msgCall)
		w.u32(2)
		w.u32(prog)
		w.u32(vers)
		w.u32(proc)
		w.u32(authUnix)
		w.opaque(enc(0, "h", 0, 0, 1, 0))
		w.u32(0)
		w.u32(0)
		return append(w.b, args...)
	}
	for proc := uint32(0); proc <= 22; proc++ {
		f.Add(call(progNFS, 3, proc, enc(root, "etc", uint64(0), uint32(4096), uint32(4096))))
		f.Add(call(progNFS, 3, proc, enc(file, uint64(0), [8]byte{}, uint32(100))))
	}
	for proc := uint32(0); proc <= 6; proc++ {
		f.Add(call(progMount, 3, proc, enc("/demo/1")))
	}
	for proc := uint32(0); proc <= 3; proc++ {
		f.Add(call(progNFSACL, 3, proc, enc(file, uint32(15), uint32(0), uint32(0), uint32(0), uint32(0))))
	}
	f.Add([]byte{0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, rec []byte) {
		out := s.dispatch(s.log, netip.MustParseAddrPort("127.0.0.1:800"), rec, nil)
		if out != nil && len(out) < 4+20 { // the shortest reply is AUTH_ERROR
			t.Fatalf("reply of %d bytes", len(out))
		}
	})
}

// FuzzReadRecord checks the record-marking reader against arbitrary
// streams: it returns records within the size bound or an error.
func FuzzReadRecord(f *testing.F) {
	f.Add([]byte{0x80, 0, 0, 4, 1, 2, 3, 4})
	f.Add([]byte{0, 0, 0, 2, 1, 2, 0x80, 0, 0, 2, 3, 4})
	f.Add([]byte{0x7f, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, stream []byte) {
		br := bufio.NewReader(bytes.NewReader(stream))
		for {
			rec, err := readRecord(br, nil, nil)
			if err != nil {
				return
			}
			if len(rec) > maxRecord {
				t.Fatalf("record of %d bytes", len(rec))
			}
		}
	})
}
