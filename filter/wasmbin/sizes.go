package wasmbin

const sectionCode = 10

// Sizes is where a module's bytes go: each section's size, and each
// defined function's code body with its name from the name section (empty
// when the module was built without names).
type Sizes struct {
	Sections  map[string]int // "code", "data", "custom:name", ...
	Functions []Function
}

// Function is one function body of the code section.
type Function struct {
	Name string
	Size int
}

var sectionNames = map[byte]string{
	1: "type", 2: "import", 3: "function", 4: "table", 5: "memory", 6: "global",
	7: "export", 8: "start", 9: "element", 10: "code", 11: "data", 12: "datacount",
}

// ReadSizes measures a module by section and by function.
func ReadSizes(b []byte) (*Sizes, error) {
	s := &Sizes{Sections: map[string]int{}}
	var imported uint32
	var bodies []int
	names := map[uint32]string{}
	err := eachSection(b, func(id byte, sr *reader) error {
		size := len(sr.b)
		name := sectionNames[id]
		switch id {
		case 0:
			name = "custom:" + sr.name()
			if name == "custom:name" {
				readFunctionNames(sr, names)
			}
		case sectionImport:
			var err error
			if _, imported, err = readImports(sr); err != nil {
				return err
			}
		case sectionCode:
			for n := sr.u32(); n > 0 && sr.err == nil; n-- {
				fn := sr.u32()
				sr.bytes(int(fn))
				bodies = append(bodies, int(fn))
			}
		}
		if name == "" {
			name = "unknown"
		}
		s.Sections[name] += size
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, size := range bodies {
		s.Functions = append(s.Functions, Function{Name: names[imported+uint32(i)], Size: size})
	}
	return s, nil
}

// readFunctionNames reads subsection 1 (function names) of a name section;
// a malformed one leaves the names it could read.
func readFunctionNames(r *reader, names map[uint32]string) {
	for !r.done() {
		id := r.byte()
		sub := &reader{b: r.bytes(int(r.u32()))}
		if id != 1 {
			continue
		}
		for n := sub.u32(); n > 0 && sub.err == nil; n-- {
			idx := sub.u32()
			names[idx] = sub.name()
		}
	}
}
