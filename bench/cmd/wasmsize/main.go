// Command wasmsize shows where a Go Wasm module's bytes go: code per Go
// package (from the module's name section) and every section's size. It
// is the size profile behind docs/filter.md's module size section; `go
// tool nm` does not read Wasm binaries.
//
//	go run ./bench/cmd/wasmsize [-top 25] [-pkg ./filter/handshake] bin/handshake.wasm
//
// Go's Wasm linker writes names with "/", "-" and other punctuation as "_"
// ("crypto_ecdsa.Verify", "github.com_golang_jwt_jwt_v5.Parse"), so
// a name is matched against the mangled paths of the main package's
// dependencies (`go list -deps`, for wasip1) to find its package.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/directpipe/directpipe/filter/wasmbin"
)

func main() {
	top := flag.Int("top", 25, "packages to list; the rest are summed")
	pkg := flag.String("pkg", "./filter/handshake", "the main package the module was built from")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: wasmsize [-top N] module.wasm")
		os.Exit(2)
	}
	b, err := os.ReadFile(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "wasmsize:", err)
		os.Exit(1)
	}
	s, err := wasmbin.ReadSizes(b)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wasmsize:", err)
		os.Exit(1)
	}
	cmd := exec.Command("go", "list", "-deps", *pkg)
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	out, err := cmd.Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "wasmsize: go list:", err)
		os.Exit(1)
	}
	fmt.Print(markdown(len(b), s, strings.Fields(string(out)), *top))
}

type row struct {
	name  string
	bytes int
}

func markdown(total int, s *wasmbin.Sizes, deps []string, top int) string {
	mangled := make([]string, len(deps))
	for i, d := range deps {
		mangled[i] = mangle(d)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d bytes\n\n| section | bytes |\n|---|---|\n", total)
	for _, r := range sorted(s.Sections) {
		fmt.Fprintf(&b, "| %s | %d |\n", r.name, r.bytes)
	}
	pkgs := map[string]int{}
	for _, f := range s.Functions {
		pkgs[Package(f.Name, deps, mangled)] += f.Size
	}
	b.WriteString("\n| package (code) | bytes |\n|---|---|\n")
	rows := sorted(pkgs)
	rest := 0
	for i, r := range rows {
		if i >= top {
			rest += r.bytes
			continue
		}
		fmt.Fprintf(&b, "| %s | %d |\n", r.name, r.bytes)
	}
	if rest > 0 {
		fmt.Fprintf(&b, "| %d others | %d |\n", len(rows)-top, rest)
	}
	return b.String()
}

func sorted(m map[string]int) []row {
	var rows []row
	for k, v := range m {
		rows = append(rows, row{k, v})
	}
	slices.SortFunc(rows, func(a, b row) int {
		if a.bytes != b.bytes {
			return b.bytes - a.bytes
		}
		return strings.Compare(a.name, b.name)
	})
	return rows
}

// Package is the Go package of a linker symbol such as
// "crypto_internal_fips140_bigmod.__Nat_.Exp": the longest dependency
// whose mangled path starts the name, followed by a dot.
func Package(sym string, deps, mangled []string) string {
	if sym == "" {
		return "(unnamed)"
	}
	best := -1
	for i, m := range mangled {
		if strings.HasPrefix(sym, m+".") && (best < 0 || len(m) > len(mangled[best])) {
			best = i
		}
	}
	if best < 0 {
		return "(runtime types and helpers)"
	}
	return deps[best]
}

// mangle writes a package path as the Wasm linker writes it in names:
// every byte but a letter, a digit and "." becomes "_".
func mangle(path string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9', r == '.':
			return r
		}
		return '_'
	}, path)
}
