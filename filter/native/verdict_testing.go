package main

// #include <stdlib.h>
// #include "verdict.h"
import "C"

import "unsafe"

// testTable is one worker's C verdict table for verdict_test.go, which
// cannot use cgo itself: these helpers are its only way in.
type testTable struct{ c *C.dp_config }

func newTestTable() *testTable { return &testTable{C.dp_config_new(0, 1)} }

func (t *testTable) free() { C.dp_config_free(t.c) }

func (t *testTable) table() *C.dp_verdict_table { return C.dp_config_table(t.c, 0) }

// insert stores r with the given deadlines, as store does; false if r
// does not fit an entry.
func (t *testTable) insert(r *verdictRecord, monoDeadline, realDeadline int64) bool {
	v := C.dp_verdict_new()
	if !r.fill(v) {
		C.free(unsafe.Pointer(v))
		return false
	}
	C.dp_verdict_set_deadlines(v, C.int64_t(monoDeadline), C.int64_t(realDeadline))
	C.dp_verdict_insert(t.table(), v)
	return true
}

// entries counts the table's entries.
func (t *testTable) entries() int {
	n := 0
	for _, e := range t.table().slots {
		if e != nil {
			n++
		}
	}
	return n
}

// testRoute is a route name or policy tag as Envoy gives it: absent, or
// a value.
type testRoute struct {
	value   string
	present bool
}

// find looks the request up at the given clock readings and returns the
// matching entry's edits.
func (t *testTable) find(headers [][2]string, route, tag testRoute, mono, real int64) ([]verdictEdit, bool) {
	// Envoy lends C memory; so does this.
	var keep []unsafe.Pointer
	defer func() {
		for _, p := range keep {
			C.free(p)
		}
	}()
	cbuf := func(s string) C.dp_buffer {
		p := C.CBytes([]byte(s + "\x00"))
		keep = append(keep, p)
		return C.dp_buffer{ptr: (*C.char)(p), length: C.size_t(len(s))}
	}
	n := max(len(headers), 1)
	hs := (*[1 << 16]C.dp_header)(C.malloc(C.size_t(n) * C.size_t(unsafe.Sizeof(C.dp_header{}))))[:n:n]
	keep = append(keep, unsafe.Pointer(&hs[0]))
	for i, kv := range headers {
		k, v := cbuf(kv[0]), cbuf(kv[1])
		hs[i] = C.dp_header{key_ptr: k.ptr, key_length: k.length, value_ptr: v.ptr, value_length: v.length}
	}
	e := C.dp_verdict_find(t.table(), &hs[0], C.size_t(len(headers)), C.bool(route.present), cbuf(route.value),
		C.bool(tag.present), cbuf(tag.value), C.int64_t(mono), C.int64_t(real))
	if e == nil {
		return nil, false
	}
	span := func(s C.dp_span) string {
		if s.len == 0 {
			return ""
		}
		return C.GoStringN(&e.bytes[s.off], C.int(s.len))
	}
	var edits []verdictEdit
	for _, ed := range e.edits[:e.nedits] {
		edits = append(edits, verdictEdit{name: span(ed.name), value: span(ed.value), remove: bool(ed.remove)})
	}
	return edits, true
}
