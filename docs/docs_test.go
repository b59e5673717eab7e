package docs

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The user docs: README.md and every page under docs/, paths from the
// repository root.
func userDocs(t *testing.T) []string {
	t.Helper()
	pages, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	out := []string{"README.md"}
	for _, p := range pages {
		out = append(out, "docs/"+p)
	}
	return out
}

// page is one Markdown file: its prose lines, and the command lines of its
// code (fenced blocks, with continuations joined, and inline code spans).
type page struct {
	path  string
	lines []string // every line, for the wording rules
	code  []string // code lines and spans, for the command rules
}

const maxPage = 1 << 20 // a page is small; bound what the check reads

func readPage(t *testing.T, path string) page {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", path))
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > maxPage {
		t.Fatalf("%s is %d bytes, more than %d", path, len(b), maxPage)
	}
	p := page{path: path}
	fenced := false
	var cont string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), maxPage)
	for sc.Scan() {
		line := sc.Text()
		p.lines = append(p.lines, line)
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if fenced {
			if l, ok := strings.CutSuffix(line, `\`); ok {
				cont += l + " "
				continue
			}
			p.code = append(p.code, cont+line)
			cont = ""
			continue
		}
		for _, m := range spanRe.FindAllStringSubmatch(line, -1) {
			p.code = append(p.code, m[1])
		}
	}
	return p
}

var spanRe = regexp.MustCompile("`([^`]+)`")

// Wording the user docs never use: the project's own issue numbers, commit
// hashes and its way of working belong in its history, not in a user's
// manual. Upstream references such as envoy#45250 stay: they are where a
// user reads more.
var forbidden = []struct {
	re   *regexp.Regexp
	what string
}{
	{regexp.MustCompile(`(?i)\bissues?\s+#?\d+`), "an issue number"},
	{regexp.MustCompile(`(?:^|[\s(\[])#\d+\b`), "an issue number"},
	{regexp.MustCompile(`(?i)\bcommit\s+` + "`?" + `[0-9a-f]{7,40}\b`), "a commit hash"},
	{regexp.MustCompile(`(?i)\bthis stop\b`), "the team's work process"},
	{regexp.MustCompile(`(?i)\bclosing note\b`), "the team's work process"},
	{regexp.MustCompile(`(?i)\b(?:this|other|a|the lead's|five other)\s+sessions?\b|\bsessions?\s+(?:shared|running)\b`), "the team's work process"},
	{regexp.MustCompile(`(?i)\bshared with other (?:builds|sessions|engineers)\b|\bwho (?:else )?shared the machine\b`), "who shared the machine"},
	{regexp.MustCompile(`(?i)\bthe lead\b`), "the team's work process"},
}

// The word "session" alone names the team's process too, except in these
// phrases, which are about the product.
var sessionRe = regexp.MustCompile(`(?i)(?:(?:sticky|tls)\s+)?[\w-]*\bsessions?\b[\w-]*(?:\s+(?:affinity|id|ids|resumption|tickets?))?`)

var sessionOK = []string{
	"session affinity", "sticky session", "sticky sessions", "session id", "session ids",
	"x-session-id", "tls session", "tls sessions", "session resumption", "session ticket", "session tickets",
}

func sessionAllowed(m string) bool {
	m = strings.ToLower(m)
	return slices.ContainsFunc(sessionOK, func(ok string) bool { return strings.Contains(m, ok) })
}

func TestWording(t *testing.T) {
	for _, path := range userDocs(t) {
		p := readPage(t, path)
		for i, line := range p.lines {
			for _, f := range forbidden {
				if m := f.re.FindString(line); m != "" {
					t.Errorf("%s:%d names %s (%q): user docs describe the product, not its history", path, i+1, f.what, strings.TrimSpace(m))
				}
			}
			for _, m := range sessionRe.FindAllString(line, -1) {
				if !sessionAllowed(m) {
					t.Errorf("%s:%d says %q: user docs describe the product, not the team's sessions", path, i+1, m)
				}
			}
		}
	}
}

var hexRe = regexp.MustCompile(`\b[0-9a-f]{7,40}\b`)

// TestNoCommitHashes looks every hex word of the docs up in this
// repository's history: content hashes (resource versions, revisions, API
// key hashes) may appear in sample output, commits of this project may not.
func TestNoCommitHashes(t *testing.T) {
	git, err := exec.LookPath("git")
	if err != nil {
		t.Fatalf("git is needed to tell commit hashes from content hashes: %v", err)
	}
	type where struct {
		path string
		line int
	}
	seen := map[string][]where{}
	var words []string
	for _, path := range userDocs(t) {
		p := readPage(t, path)
		for i, line := range p.lines {
			for _, w := range hexRe.FindAllString(line, -1) {
				if !strings.ContainsAny(w, "abcdef") || !strings.ContainsAny(w, "0123456789") {
					continue // a number or a word
				}
				if _, ok := seen[w]; !ok {
					words = append(words, w)
				}
				seen[w] = append(seen[w], where{path, i + 1})
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, git, "cat-file", "--batch-check=%(objecttype)")
	cmd.Dir = ".."
	var in bytes.Buffer
	for _, w := range words {
		fmt.Fprintf(&in, "%s\n", w)
	}
	cmd.Stdin = &in
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git cat-file: %v", err)
	}
	answers := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(words) > 0 && len(answers) != len(words) {
		t.Fatalf("git cat-file answered %d lines for %d names", len(answers), len(words))
	}
	for i, w := range words {
		if strings.HasPrefix(answers[i], "commit") {
			for _, at := range seen[w] {
				t.Errorf("%s:%d names commit %s of this repository: user docs describe the product, not its history", at.path, at.line, w)
			}
		}
	}
}

// TestLinks checks that every relative link of the user docs reaches a file,
// and a heading when it names one.
func TestLinks(t *testing.T) {
	// Pages other parts of the docs own; a link to them is valid before they land.
	pending := map[string]bool{"docs/cli.md": true, "docs/routing.md": true, "docs/streams.md": true}
	linkRe := regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	anchors := map[string]map[string]bool{}
	anchorsOf := func(path string) map[string]bool {
		if a, ok := anchors[path]; ok {
			return a
		}
		a := headingAnchors(readPage(t, path).lines)
		anchors[path] = a
		return a
	}
	for _, path := range userDocs(t) {
		p := readPage(t, path)
		for i, line := range p.lines {
			for _, m := range linkRe.FindAllStringSubmatch(line, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				file, anchor, _ := strings.Cut(target, "#")
				dest := path
				if file != "" {
					dest = filepath.ToSlash(filepath.Clean(filepath.Join(filepath.Dir(path), file)))
				}
				if pending[dest] {
					continue
				}
				info, err := os.Stat(filepath.Join("..", dest))
				if err != nil {
					t.Errorf("%s:%d links to %s, which does not exist", path, i+1, target)
					continue
				}
				if anchor != "" && !info.IsDir() && strings.HasSuffix(dest, ".md") && !anchorsOf(dest)[anchor] {
					t.Errorf("%s:%d links to %s, but %s has no heading #%s", path, i+1, target, dest, anchor)
				}
			}
		}
	}
}

// headingAnchors are the anchors GitHub makes of a page's headings.
func headingAnchors(lines []string) map[string]bool {
	out := map[string]bool{}
	count := map[string]int{}
	fenced := false
	for _, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			fenced = !fenced
		}
		if fenced || !strings.HasPrefix(l, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(l, "#"))
		a := slug(h)
		if n := count[a]; n > 0 {
			out[fmt.Sprintf("%s-%d", a, n)] = true
		} else {
			out[a] = true
		}
		count[a]++
	}
	return out
}

func slug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127 && r != '→' && r != '—' && r != '×':
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestSlug pins the heading anchors the link check expects.
func TestSlug(t *testing.T) {
	for h, want := range map[string]string{
		"Remote Envoys":                           "remote-envoys",
		"Pushes: change to ACK":                   "pushes-change-to-ack",
		"Audit your stream paths (`dpctl audit`)": "audit-your-stream-paths-dpctl-audit",
		"On Kubernetes, and at 10,000 Envoys":     "on-kubernetes-and-at-10000-envoys",
	} {
		if got := slug(h); got != want {
			t.Errorf("slug(%q) = %q, want %q", h, got, want)
		}
	}
}

// binDir holds the programs the checks build; TestMain removes it.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "directpipe-docs-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// binaries builds the programs whose commands the docs show, once.
var binaries = sync.OnceValues(func() (string, error) {
	dir := binDir
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	for name, pkg := range map[string]string{
		"dpctl":           "./controlplane/cmd/dpctl",
		"directpipe":      "./controlplane/cmd/directpipe",
		"envoy-bootstrap": "./envoy/cmd/envoy-bootstrap",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		cmd := exec.CommandContext(ctx, goBin, "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Dir = ".."
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return dir, nil
})

// help runs a built program with args and returns what it printed,
// whatever its exit code: help goes to stdout or stderr, with 0 or 2.
func help(t *testing.T, prog string, args ...string) string {
	t.Helper()
	dir, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(dir, prog), args...)
	// No admin token, no control plane: help needs neither.
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "DIRECTPIPE_STATE_DIR="+t.TempDir(), "DPCTL_ADDR=127.0.0.1:1")
	out, _ := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %s did not finish", prog, strings.Join(args, " "))
	}
	return string(out)
}

// invocations finds every call of prog in the docs' code: the words after
// it, up to the end of the command (a pipe, a redirect, a comment).
func invocations(t *testing.T, prog string) map[string][]string {
	t.Helper()
	re := regexp.MustCompile(`(?:^|[\s;&|(]|\$ )(?:[\w./-]*/)?` + regexp.QuoteMeta(prog) + `(?:\s+(.*))?$`)
	out := map[string][]string{} // the rest of the command → where
	for _, path := range userDocs(t) {
		for _, line := range readPage(t, path).code {
			for _, part := range regexp.MustCompile(`\s(?:&&|\|\||;|\|)\s`).Split(line, -1) {
				m := re.FindStringSubmatch(part)
				if m == nil {
					continue
				}
				rest := m[1]
				if i := strings.Index(rest, " #"); i >= 0 {
					rest = rest[:i]
				}
				if i := strings.IndexAny(rest, "><"); i >= 0 {
					rest = rest[:i]
				}
				out[strings.TrimSpace(rest)] = append(out[strings.TrimSpace(rest)], path)
			}
		}
	}
	return out
}

var flagLineRe = regexp.MustCompile(`(?m)^\s+(?:-\w, )?--?([\w.-]+)`)

// flagsOf lists the flags a program's -h prints.
func flagsOf(t *testing.T, prog string) map[string]bool {
	out := map[string]bool{"h": true, "help": true}
	for _, m := range flagLineRe.FindAllStringSubmatch(help(t, prog, "-h"), -1) {
		out[m[1]] = true
	}
	if len(out) < 5 {
		t.Fatalf("%s -h listed no flags", prog)
	}
	return out
}

// TestFlagsExist checks every flag the docs give directpipe and
// envoy-bootstrap against the flags the programs have.
func TestFlagsExist(t *testing.T) {
	flagRe := regexp.MustCompile(`(?:^|\s)--?([a-z][\w.-]*)`)
	for _, prog := range []string{"directpipe", "envoy-bootstrap"} {
		flags := flagsOf(t, prog)
		for rest, where := range invocations(t, prog) {
			for _, m := range flagRe.FindAllStringSubmatch(rest, -1) {
				name, _, _ := strings.Cut(m[1], "=")
				if !flags[name] {
					t.Errorf("%s shows `%s %s`, but %s has no flag -%s", where[0], prog, rest, prog, name)
				}
			}
		}
	}
}

// dpctl's flags that take a value: the word after one is not a command.
var dpctlValueFlags = map[string]bool{
	"addr": true, "token-file": true, "token": true, "o": true, "output": true, "timeout": true,
	"ca-file": true, "cert-file": true, "key-file": true, "server-name": true,
}

var wordRe = regexp.MustCompile(`^[a-z][a-z-]*$`)

// dpctlWords returns the command words of a dpctl invocation (at most two:
// a command and a subcommand), skipping flags and their values.
func dpctlWords(rest string) []string {
	var words []string
	f := strings.Fields(rest)
	for i := 0; i < len(f) && len(words) < 2; i++ {
		w := f[i]
		if strings.HasPrefix(w, "-") {
			name := strings.TrimLeft(w, "-")
			if !strings.Contains(name, "=") && dpctlValueFlags[name] {
				i++
			}
			if len(words) > 0 {
				break // flags of the command: what follows is theirs
			}
			continue
		}
		if !wordRe.MatchString(w) {
			break
		}
		words = append(words, w)
	}
	return words
}

func TestDpctlWords(t *testing.T) {
	for rest, want := range map[string]string{
		"status":                                "status",
		"--addr 127.0.0.1:18011 policy history": "policy history",
		"-o json nodes":                         "nodes",
		"policy apply -f p.yaml --wait 0":       "policy apply",
		"config --node edge-1 --type ECDS":      "config",
		"audit --envoy-admin http://x:9901":     "audit",
		"help status":                           "help status",
		"[flags] status":                        "",
	} {
		if got := strings.Join(dpctlWords(rest), " "); got != want {
			t.Errorf("dpctlWords(%q) = %q, want %q", rest, got, want)
		}
	}
}

// commandsIn reads the commands a help text lists: "dpctl [flags] policy
// apply ..." lines of a usage text, or the "Available Commands:" block of
// a cobra-style help.
func commandsIn(help string) (top map[string]bool, sub map[string]map[string]bool) {
	top, sub = map[string]bool{}, map[string]map[string]bool{}
	usageRe := regexp.MustCompile(`(?m)^\s*dpctl (?:\[flags\] )?([a-z][a-z-]*)(?: ([a-z][a-z-]*))?`)
	for _, m := range usageRe.FindAllStringSubmatch(help, -1) {
		top[m[1]] = true
		if m[2] != "" {
			if sub[m[1]] == nil {
				sub[m[1]] = map[string]bool{}
			}
			sub[m[1]][m[2]] = true
		}
	}
	// A command table: "Commands:" (or cobra's "Available Commands:"),
	// then one indented line per command, "group sub" for a subcommand.
	if _, block, ok := strings.Cut(help, "Commands:"); ok {
		lineRe := regexp.MustCompile(`^\s+([a-z][a-z-]*)(?: ([a-z][a-z-]*))?(?:\s{2,}|$)`)
		for _, l := range strings.Split(block, "\n")[1:] {
			m := lineRe.FindStringSubmatch(l)
			if m == nil {
				break
			}
			top[m[1]] = true
			if m[2] != "" {
				if sub[m[1]] == nil {
					sub[m[1]] = map[string]bool{}
				}
				sub[m[1]][m[2]] = true
			}
		}
	}
	return top, sub
}

// TestDpctlCommandsExist checks every dpctl command the docs show against
// the commands dpctl's help lists.
func TestDpctlCommandsExist(t *testing.T) {
	top, sub := commandsIn(help(t, "dpctl", "-h"))
	if len(top) < 5 {
		t.Fatalf("dpctl -h listed %d commands: the check cannot read its help", len(top))
	}
	top["help"] = true
	groupCache := map[string]map[string]bool{}
	subsOf := func(cmd string) map[string]bool {
		if s, ok := groupCache[cmd]; ok {
			return s
		}
		s := map[string]bool{}
		for k := range sub[cmd] {
			s[k] = true
		}
		if h := help(t, "dpctl", cmd, "-h"); strings.Contains(h, "Available Commands:") {
			more, _ := commandsIn(h)
			for k := range more {
				s[k] = true
			}
		}
		groupCache[cmd] = s
		return s
	}
	for rest, where := range invocations(t, "dpctl") {
		words := dpctlWords(rest)
		if len(words) == 0 {
			continue
		}
		if !top[words[0]] {
			t.Errorf("%s shows `dpctl %s`, but dpctl has no command %q", where[0], rest, words[0])
			continue
		}
		if subs := subsOf(words[0]); len(subs) > 0 && len(words) > 1 && !subs[words[1]] {
			t.Errorf("%s shows `dpctl %s`, but dpctl %s has no subcommand %q", where[0], rest, words[0], words[1])
		}
	}
}

// TestMakeTargetsExist checks every `make TARGET` the docs show against the
// Makefile's targets.
func TestMakeTargetsExist(t *testing.T) {
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]bool{}
	ruleRe := regexp.MustCompile(`(?m)^([\w.-]+(?:[ \t]+[\w.-]+)*)[ \t]*:(?:[^=]|$)`)
	for _, m := range ruleRe.FindAllStringSubmatch(string(mk), -1) {
		for _, name := range strings.Fields(m[1]) {
			targets[name] = true
		}
	}
	for rest, where := range invocations(t, "make") {
		f := strings.Fields(rest)
		for i := 0; i < len(f); i++ {
			w := f[i]
			switch {
			case w == "-C" || w == "-f":
				i++
			case strings.HasPrefix(w, "-") || strings.Contains(w, "="):
			case wordRe.MatchString(w):
				if !targets[w] {
					t.Errorf("%s shows `make %s`, but the Makefile has no target %q", where[0], rest, w)
				}
			default:
				i = len(f) // not a target: the rest is prose
			}
		}
	}
}

func TestSessionWording(t *testing.T) {
	for line, ok := range map[string]bool{
		"hash_header gives session affinity":     true,
		"sticky sessions by x-session-id":        true,
		"TLS session resumption":                 true,
		"five other sessions shared the machine": false,
		"a real session against make run":        false,
		"as measured in this session":            false,
	} {
		bad := false
		for _, m := range sessionRe.FindAllString(line, -1) {
			if !sessionAllowed(m) {
				bad = true
			}
		}
		if bad == ok {
			t.Errorf("%q: allowed = %v, want %v", line, !bad, ok)
		}
	}
}

// TestFlagTables checks the docs' flag tables (a table whose first column
// is "flag"): every flag in a first cell is a flag of directpipe or
// envoy-bootstrap.
func TestFlagTables(t *testing.T) {
	flags := flagsOf(t, "directpipe")
	for f := range flagsOf(t, "envoy-bootstrap") {
		flags[f] = true
	}
	headRe := regexp.MustCompile(`^\|\s*flag\s*\|`)
	flagRe := regexp.MustCompile("`-([a-z][\\w-]*)")
	for _, path := range userDocs(t) {
		inTable := false
		for i, line := range readPage(t, path).lines {
			switch {
			case headRe.MatchString(line):
				inTable = true
				continue
			case !strings.HasPrefix(line, "|"):
				inTable = false
			}
			if !inTable {
				continue
			}
			cells := strings.Split(line, "|")
			if len(cells) < 2 {
				continue
			}
			for _, m := range flagRe.FindAllStringSubmatch(cells[1], -1) {
				if !flags[m[1]] {
					t.Errorf("%s:%d lists flag -%s, which neither directpipe nor envoy-bootstrap has", path, i+1, m[1])
				}
			}
		}
	}
}
