// Package elfbin reads the functions an ELF shared object exports: enough
// to prove which hooks of Envoy's dynamic-module ABI a library lets Envoy
// call.
package elfbin

import (
	"bytes"
	"debug/elf"
	"fmt"
	"slices"
)

// Exports lists, sorted, the functions a shared object defines in its
// dynamic symbol table: what dlsym can find in it.
func Exports(b []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("elfbin: %w", err)
	}
	defer f.Close()
	if f.Type != elf.ET_DYN {
		return nil, fmt.Errorf("elfbin: an ELF %v, not a shared object", f.Type)
	}
	syms, err := f.DynamicSymbols()
	if err != nil {
		return nil, fmt.Errorf("elfbin: dynamic symbols: %w", err)
	}
	var out []string
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Section != elf.SHN_UNDEF && elf.ST_BIND(s.Info) != elf.STB_LOCAL {
			out = append(out, s.Name)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
