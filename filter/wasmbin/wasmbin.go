// Package wasmbin reads the import and export sections of a WebAssembly
// binary: enough to prove what a module lets the host call.
package wasmbin

import (
	"bytes"
	"errors"
	"fmt"
)

// Import is one imported function, global, table or memory.
type Import struct {
	Module, Name string
}

// Module lists a binary's imports and exported names.
type Module struct {
	Imports []Import
	Exports []string
}

var magic = []byte{0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00}

const (
	sectionImport = 2
	sectionExport = 7
)

// Parse reads a module's import and export sections.
func Parse(b []byte) (*Module, error) {
	m := &Module{}
	err := eachSection(b, func(id byte, sr *reader) error {
		switch id {
		case sectionImport:
			imports, _, err := readImports(sr)
			m.Imports = imports
			return err
		case sectionExport:
			for n := sr.u32(); n > 0 && sr.err == nil; n-- {
				name := sr.name()
				sr.byte() // kind
				sr.u32()  // index
				m.Exports = append(m.Exports, name)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// eachSection calls f with each section's id and a reader of its body,
// and fails on the first error f returns or a section that does not read
// to its end's bounds.
func eachSection(b []byte, f func(id byte, body *reader) error) error {
	if !bytes.HasPrefix(b, magic) {
		return errors.New("wasmbin: not a WebAssembly 1.0 binary")
	}
	r := &reader{b: b[len(magic):]}
	for !r.done() {
		id := r.byte()
		size := r.u32()
		body := r.bytes(int(size))
		if r.err != nil {
			return r.err
		}
		sr := &reader{b: body}
		if err := f(id, sr); err != nil {
			return err
		}
		if sr.err != nil {
			return sr.err
		}
	}
	return r.err
}

// readImports reads an import section, and counts the imported functions
// (they come first in the function index space).
func readImports(sr *reader) ([]Import, uint32, error) {
	var imports []Import
	var funcs uint32
	for n := sr.u32(); n > 0 && sr.err == nil; n-- {
		imp := Import{Module: sr.name(), Name: sr.name()}
		switch kind := sr.byte(); kind {
		case 0: // function: type index
			sr.u32()
			funcs++
		case 1: // table: element type, limits
			sr.byte()
			sr.limits()
		case 2: // memory: limits
			sr.limits()
		case 3: // global: value type, mutability
			sr.byte()
			sr.byte()
		default:
			return nil, 0, fmt.Errorf("wasmbin: unknown import kind %d", kind)
		}
		imports = append(imports, imp)
	}
	return imports, funcs, nil
}

type reader struct {
	b   []byte
	err error
}

var errShort = errors.New("wasmbin: truncated binary")

func (r *reader) done() bool { return r.err != nil || len(r.b) == 0 }

func (r *reader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.err = errShort
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// u32 reads an unsigned LEB128 number.
func (r *reader) u32() uint32 {
	var v uint32
	for shift := 0; shift < 35; shift += 7 {
		c := r.byte()
		v |= uint32(c&0x7f) << shift
		if c&0x80 == 0 {
			return v
		}
	}
	if r.err == nil {
		r.err = errors.New("wasmbin: LEB128 number too long")
	}
	return 0
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b) {
		r.err = errShort
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) name() string { return string(r.bytes(int(r.u32()))) }

func (r *reader) limits() {
	if flags := r.byte(); flags&1 == 1 {
		r.u32()
		r.u32()
	} else {
		r.u32()
	}
}
