package dpctl

import (
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// completionCommand runs `dpctl completion bash|zsh|fish`.
func completionCommand(out io.Writer, args []string) error {
	if len(args) == 1 && isHelpFlag(args[0]) {
		printCommandHelp(out, lookup("completion"), nil)
		return helpShown{}
	}
	if len(args) != 1 {
		return usageError{msg: "completion needs a shell: bash, zsh or fish", cmd: "completion"}
	}
	switch args[0] {
	case "bash":
		_, err := io.WriteString(out, bashCompletion())
		return err
	case "zsh":
		// zsh runs bash completion functions through bashcompinit.
		_, err := io.WriteString(out, "#compdef dpctl\nautoload -U +X bashcompinit && bashcompinit\n"+bashCompletion())
		return err
	case "fish":
		_, err := io.WriteString(out, fishCompletion())
		return err
	}
	return usageError{msg: fmt.Sprintf("completion %s: want bash, zsh or fish", args[0]), cmd: "completion"}
}

// shells are the shells completion writes a script for.
var shells = []string{"bash", "zsh", "fish"}

// The values some flags take, whatever the command: both scripts offer
// them after the flag.
var (
	flagChoices = map[string]string{
		"o":       "table json yaml",
		"type":    "LDS RDS CDS EDS ECDS",
		"fail-on": "info low medium high",
	}
	fileFlags = []string{"f", "token-file", "ca-file", "cert-file", "key-file", "server-info", "stats"}
	dirFlags  = []string{"dir"}
)

// completionModel is what every completion script is made from: the
// command table and each command's flags, so that a script names every
// command and flag there is and no other.
type completionModel struct {
	top    []string            // first words: commands and groups
	groups map[string][]string // group → its subcommands, in table order
	// globals are the flags any command asking a control plane takes.
	globals []*flag.Flag
	// flags are each command's own flags, by command name.
	flags map[string][]*flag.Flag
}

func newCompletionModel() completionModel {
	m := completionModel{groups: map[string][]string{}, flags: map[string][]*flag.Flag{}}
	globals := flag.NewFlagSet("", flag.ContinueOnError)
	defaultGlobals().register(globals)
	globals.VisitAll(func(f *flag.Flag) { m.globals = append(m.globals, f) })
	for _, c := range commands {
		group, sub, ok := strings.Cut(c.name, " ")
		if ok {
			m.groups[group] = append(m.groups[group], sub)
		}
		if !ok || len(m.groups[group]) == 1 {
			m.top = append(m.top, group)
		}
		commandFlags(c).VisitAll(func(f *flag.Flag) { m.flags[c.name] = append(m.flags[c.name], f) })
	}
	return m
}

// groupNames are the commands that take a subcommand, sorted.
func (m completionModel) groupNames() []string {
	var out []string
	for g := range m.groups {
		out = append(out, g)
	}
	sort.Strings(out)
	return out
}

// takesGlobals: the command asks a control plane, or (audit, apikey new)
// may.
func takesGlobals(c *command) bool {
	return !c.local || c.name == "audit" || c.name == "apikey new"
}

// bashCompletion is a completion function built from the command table.
func bashCompletion() string {
	m := newCompletionModel()
	valueFlags := map[string]bool{}
	var globalWords []string
	for _, f := range m.globals {
		globalWords = append(globalWords, dashed(f.Name, ""))
		if !isBool(f) {
			valueFlags[dashed(f.Name, "")] = true
		}
	}
	cmdFlags := map[string][]string{}
	for _, c := range commands {
		var words []string
		for _, f := range m.flags[c.name] {
			w := dashed(f.Name, c.name)
			words = append(words, w)
			if !isBool(f) {
				valueFlags[w] = true
			}
		}
		cmdFlags[c.name] = words
	}
	top, groups := m.top, m.groups
	var b strings.Builder
	b.WriteString("# bash completion for dpctl: source <(dpctl completion bash)\n")
	b.WriteString("_dpctl() {\n")
	b.WriteString("  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cmd='' i w skip=0\n")
	fmt.Fprintf(&b, "  local valueflags=' %s '\n", strings.Join(sortedKeys(valueFlags), " "))
	b.WriteString("  for ((i=1; i<COMP_CWORD; i++)); do\n")
	b.WriteString("    w=${COMP_WORDS[i]}\n")
	b.WriteString("    if ((skip)); then skip=0; continue; fi\n")
	b.WriteString("    case $w in\n")
	b.WriteString("      -*=*) ;;\n")
	b.WriteString("      -*) [[ $valueflags == *\" $w \"* ]] && skip=1 ;;\n")
	b.WriteString("      *) if [[ -z $cmd ]]; then cmd=$w; else case $cmd in ")
	groupNames := m.groupNames()
	b.WriteString(strings.Join(groupNames, "|"))
	b.WriteString(") [[ $cmd != *' '* ]] && cmd=\"$cmd $w\" ;; esac; fi ;;\n")
	b.WriteString("    esac\n")
	b.WriteString("  done\n")
	b.WriteString("  case $prev in\n")
	for _, name := range sortedKeys(flagChoices) {
		fmt.Fprintf(&b, "    %s) COMPREPLY=($(compgen -W '%s' -- \"$cur\")); return ;;\n", bashFlagPattern(name), flagChoices[name])
	}
	fmt.Fprintf(&b, "    %s) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n", bashFlagPattern(fileFlags...))
	fmt.Fprintf(&b, "    %s) COMPREPLY=($(compgen -d -- \"$cur\")); return ;;\n", bashFlagPattern(dirFlags...))
	b.WriteString("  esac\n")
	fmt.Fprintf(&b, "  local globals='%s'\n", strings.Join(globalWords, " "))
	b.WriteString("  case $cmd in\n")
	fmt.Fprintf(&b, "    '') COMPREPLY=($(compgen -W '%s' -- \"$cur\")) ;;\n", strings.Join(top, " "))
	for _, g := range groupNames {
		fmt.Fprintf(&b, "    %s) COMPREPLY=($(compgen -W '%s' -- \"$cur\")) ;;\n", g, strings.Join(groups[g], " "))
	}
	b.WriteString("    help) COMPREPLY=($(compgen -W '" + strings.Join(top, " ") + "' -- \"$cur\")) ;;\n")
	fmt.Fprintf(&b, "    completion) COMPREPLY=($(compgen -W '%s' -- \"$cur\")) ;;\n", strings.Join(shells, " "))
	for _, c := range commands {
		if c.name == "help" || c.name == "completion" {
			continue
		}
		words := cmdFlags[c.name]
		if takesGlobals(c) {
			words = append(words, "$globals")
		}
		fmt.Fprintf(&b, "    '%s') COMPREPLY=($(compgen -W \"%s\" -- \"$cur\")) ;;\n", c.name, strings.Join(append(words, "-h"), " "))
	}
	b.WriteString("  esac\n")
	b.WriteString("}\n")
	b.WriteString("complete -o default -F _dpctl dpctl\n")
	return b.String()
}

// bashFlagPattern is a case pattern matching each flag with one dash or
// two (Go's flag package takes either).
func bashFlagPattern(names ...string) string {
	var alts []string
	for _, n := range names {
		if len(n) == 1 {
			alts = append(alts, "-"+n)
			continue
		}
		alts = append(alts, "--"+n, "-"+n)
	}
	return strings.Join(alts, "|")
}

// dashed is a flag as help shows it: one dash for one letter and for
// certs' flags, two for the rest (Go's flag package takes either).
func dashed(name, cmd string) string {
	if len(name) == 1 || cmd == "certs" {
		return "-" + name
	}
	return "--" + name
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
