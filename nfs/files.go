package nfs

import (
	"container/list"
	"io"
	"os"
	"sync"

	billy "github.com/go-git/go-billy/v5"
)

// fileCache keeps recently read files open: a node reads a file in many
// READ calls, and an open per call costs more than the read itself. Files
// in a published generation never change, so an open file is never stale.
type fileCache struct {
	mu    sync.Mutex
	max   int
	lru   *list.List // of *openFile, most recent first
	byKey map[fileKey]*list.Element
}

type fileKey struct {
	id  genID
	idx uint32
}

type openFile struct {
	key  fileKey
	f    billy.File
	refs int
	dead bool // evicted while in use: close on last release
}

func newFileCache(max int) *fileCache {
	return &fileCache{max: max, lru: list.New(), byKey: map[fileKey]*list.Element{}}
}

// readAt reads from the entry's file, opening it if needed.
func (fc *fileCache) readAt(t *tree, idx uint32, p []byte, off int64) (int, error) {
	of, err := fc.get(t, idx)
	if err != nil {
		return 0, err
	}
	defer fc.release(of)
	ra, ok := of.f.(io.ReaderAt)
	if !ok {
		return 0, io.ErrUnexpectedEOF
	}
	n, err := ra.ReadAt(p, off)
	if err == io.EOF {
		err = nil
	}
	return n, err
}

func (fc *fileCache) get(t *tree, idx uint32) (*openFile, error) {
	k := fileKey{t.id, idx}
	fc.mu.Lock()
	if el, ok := fc.byKey[k]; ok {
		fc.lru.MoveToFront(el)
		of := el.Value.(*openFile)
		of.refs++
		fc.mu.Unlock()
		return of, nil
	}
	fc.mu.Unlock()
	f, err := t.fs.Open(t.path(idx))
	if err != nil {
		return nil, err
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if el, ok := fc.byKey[k]; ok { // opened concurrently
		f.Close()
		of := el.Value.(*openFile)
		of.refs++
		return of, nil
	}
	of := &openFile{key: k, f: f, refs: 1}
	fc.byKey[k] = fc.lru.PushFront(of)
	for fc.lru.Len() > fc.max {
		el := fc.lru.Back()
		old := el.Value.(*openFile)
		fc.lru.Remove(el)
		delete(fc.byKey, old.key)
		if old.refs == 0 {
			old.f.Close()
		} else {
			old.dead = true
		}
	}
	return of, nil
}

func (fc *fileCache) release(of *openFile) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	of.refs--
	if of.refs == 0 && of.dead {
		of.f.Close()
	}
}

// dropGen closes the files of one generation (its index was dropped).
func (fc *fileCache) dropGen(id genID) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	for k, el := range fc.byKey {
		if k.id != id {
			continue
		}
		of := el.Value.(*openFile)
		if of.refs == 0 {
			of.f.Close()
		} else {
			of.dead = true
		}
		fc.lru.Remove(el)
		delete(fc.byKey, k)
	}
}

func (fc *fileCache) closeAll() {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	for k, el := range fc.byKey {
		of := el.Value.(*openFile)
		if of.refs == 0 {
			of.f.Close()
		} else {
			of.dead = true
		}
		delete(fc.byKey, k)
	}
	fc.lru.Init()
}

// zeroCopyMin is the smallest READ whose data goes by sendfile: below it,
// the copy costs less than the system calls that avoid it.
const zeroCopyMin = 16 << 10

// fileTail is the data of a READ reply left in its file: sendReply sends
// it from the page cache to the socket (sendfile), never through a buffer
// of bootd's. It holds the open file until released.
type fileTail struct {
	fc  *fileCache
	of  *openFile
	fd  int
	off int64
	n   int
}

func (t *fileTail) release() { t.fc.release(t.of) }

// tail holds the entry's file open for n bytes at off, if the file has
// them all (a file shorter than its index says is read the usual way,
// which answers what is there) and is an OS file.
func (fc *fileCache) tail(t *tree, idx uint32, off int64, n int) (*fileTail, bool) {
	of, err := fc.get(t, idx)
	if err != nil {
		return nil, false
	}
	f, ok := of.f.(interface {
		Fd() uintptr
		Stat() (os.FileInfo, error)
	})
	if ok {
		if st, err := f.Stat(); err == nil && st.Size() >= off+int64(n) {
			return &fileTail{fc: fc, of: of, fd: int(f.Fd()), off: off, n: n}, true
		}
	}
	fc.release(of)
	return nil, false
}
