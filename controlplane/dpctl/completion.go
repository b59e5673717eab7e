package dpctl

import (
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// completionCommand runs `dpctl completion bash|zsh`.
func completionCommand(out io.Writer, args []string) error {
	if len(args) == 1 && isHelpFlag(args[0]) {
		printCommandHelp(out, lookup("completion"), nil)
		return helpShown{}
	}
	if len(args) != 1 {
		return usageError{msg: "completion needs a shell: bash or zsh", cmd: "completion"}
	}
	switch args[0] {
	case "bash":
		_, err := io.WriteString(out, bashCompletion())
		return err
	case "zsh":
		// zsh runs bash completion functions through bashcompinit.
		_, err := io.WriteString(out, "#compdef dpctl\nautoload -U +X bashcompinit && bashcompinit\n"+bashCompletion())
		return err
	}
	return usageError{msg: fmt.Sprintf("completion %s: want bash or zsh", args[0]), cmd: "completion"}
}

// bashCompletion is a completion function built from the command table,
// so that it names every command and flag there is and no other.
func bashCompletion() string {
	var top []string
	groups := map[string][]string{}
	cmdFlags := map[string][]string{}
	valueFlags := map[string]bool{}
	globals := flag.NewFlagSet("", flag.ContinueOnError)
	defaultGlobals().register(globals)
	var globalWords []string
	globals.VisitAll(func(f *flag.Flag) {
		globalWords = append(globalWords, dashed(f.Name, ""))
		if !isBool(f) {
			valueFlags[dashed(f.Name, "")] = true
		}
	})
	for _, c := range commands {
		group, sub, ok := strings.Cut(c.name, " ")
		if ok {
			groups[group] = append(groups[group], sub)
		}
		if !ok || len(groups[group]) == 1 {
			top = append(top, group)
		}
		fs := commandFlags(c)
		var words []string
		fs.VisitAll(func(f *flag.Flag) {
			w := dashed(f.Name, c.name)
			words = append(words, w)
			if !isBool(f) {
				valueFlags[w] = true
			}
		})
		cmdFlags[c.name] = words
	}
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
	var groupNames []string
	for g := range groups {
		groupNames = append(groupNames, g)
	}
	sort.Strings(groupNames)
	b.WriteString(strings.Join(groupNames, "|"))
	b.WriteString(") [[ $cmd != *' '* ]] && cmd=\"$cmd $w\" ;; esac; fi ;;\n")
	b.WriteString("    esac\n")
	b.WriteString("  done\n")
	b.WriteString("  case $prev in\n")
	b.WriteString("    -o) COMPREPLY=($(compgen -W 'table json yaml' -- \"$cur\")); return ;;\n")
	b.WriteString("    --type|-type) COMPREPLY=($(compgen -W 'LDS RDS CDS EDS ECDS' -- \"$cur\")); return ;;\n")
	b.WriteString("    --fail-on|-fail-on) COMPREPLY=($(compgen -W 'info low medium high' -- \"$cur\")); return ;;\n")
	b.WriteString("    -f|--token-file|-token-file|--ca-file|--cert-file|--key-file|--server-info|--stats) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n")
	b.WriteString("    -dir) COMPREPLY=($(compgen -d -- \"$cur\")); return ;;\n")
	b.WriteString("  esac\n")
	fmt.Fprintf(&b, "  local globals='%s'\n", strings.Join(globalWords, " "))
	b.WriteString("  case $cmd in\n")
	fmt.Fprintf(&b, "    '') COMPREPLY=($(compgen -W '%s' -- \"$cur\")) ;;\n", strings.Join(top, " "))
	for _, g := range groupNames {
		fmt.Fprintf(&b, "    %s) COMPREPLY=($(compgen -W '%s' -- \"$cur\")) ;;\n", g, strings.Join(groups[g], " "))
	}
	b.WriteString("    help) COMPREPLY=($(compgen -W '" + strings.Join(top, " ") + "' -- \"$cur\")) ;;\n")
	b.WriteString("    completion) COMPREPLY=($(compgen -W 'bash zsh' -- \"$cur\")) ;;\n")
	for _, c := range commands {
		if c.name == "help" || c.name == "completion" {
			continue
		}
		words := cmdFlags[c.name]
		if !c.local || c.name == "audit" || c.name == "apikey new" {
			words = append(words, "$globals")
		}
		fmt.Fprintf(&b, "    '%s') COMPREPLY=($(compgen -W \"%s\" -- \"$cur\")) ;;\n", c.name, strings.Join(append(words, "-h"), " "))
	}
	b.WriteString("  esac\n")
	b.WriteString("}\n")
	b.WriteString("complete -o default -F _dpctl dpctl\n")
	return b.String()
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

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
