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
	b.WriteString("    completion) COMPREPLY=($(compgen -W 'bash zsh fish' -- \"$cur\")) ;;\n")
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

// fishCompletion is fish's form of the same table: each command and
// subcommand with its one-line summary, each command's flags, and the
// values of -o and --type.
func fishCompletion() string {
	var b strings.Builder
	b.WriteString("# fish completion for dpctl: dpctl completion fish | source\n")
	b.WriteString("complete -c dpctl -f\n")
	groups := map[string][]string{}
	var groupOrder []string
	for _, c := range commands {
		if group, sub, ok := strings.Cut(c.name, " "); ok {
			if groups[group] == nil {
				groupOrder = append(groupOrder, group)
			}
			groups[group] = append(groups[group], sub)
		}
	}
	// A top-level word is offered until one has been typed.
	var top []string
	seen := map[string]bool{}
	for _, c := range commands {
		group, _, _ := strings.Cut(c.name, " ")
		if !seen[group] {
			seen[group] = true
			top = append(top, group)
		}
	}
	noTop := "not __fish_seen_subcommand_from " + strings.Join(top, " ")
	for _, c := range commands {
		group, sub, ok := strings.Cut(c.name, " ")
		if !ok {
			fmt.Fprintf(&b, "complete -c dpctl -n '%s' -a %s -d %s\n", noTop, group, fishQuote(c.short))
			continue
		}
		if groups[group][0] == sub {
			fmt.Fprintf(&b, "complete -c dpctl -n '%s' -a %s -d %s\n", noTop, group, fishQuote(group+" commands"))
		}
		fmt.Fprintf(&b, "complete -c dpctl -n '__fish_seen_subcommand_from %s; and not __fish_seen_subcommand_from %s' -a %s -d %s\n",
			group, strings.Join(groups[group], " "), sub, fishQuote(c.short))
	}
	b.WriteString("complete -c dpctl -n '__fish_seen_subcommand_from completion' -a 'bash zsh fish'\n")
	b.WriteString("complete -c dpctl -n '__fish_seen_subcommand_from help' -a '" + strings.Join(top, " ") + "'\n")

	globals := flag.NewFlagSet("", flag.ContinueOnError)
	defaultGlobals().register(globals)
	globals.VisitAll(func(f *flag.Flag) { b.WriteString(fishFlag("", f, "")) })
	for _, c := range commands {
		cond := "__fish_seen_subcommand_from " + c.name
		if group, sub, ok := strings.Cut(c.name, " "); ok {
			cond = "__fish_seen_subcommand_from " + group + "; and __fish_seen_subcommand_from " + sub
		}
		commandFlags(c).VisitAll(func(f *flag.Flag) { b.WriteString(fishFlag(cond, f, c.name)) })
	}
	return b.String()
}

// fishFlag completes one flag, with its values where they are known.
func fishFlag(cond string, f *flag.Flag, cmd string) string {
	var b strings.Builder
	b.WriteString("complete -c dpctl")
	if cond != "" {
		fmt.Fprintf(&b, " -n '%s'", cond)
	}
	switch {
	case len(f.Name) == 1:
		fmt.Fprintf(&b, " -s %s", f.Name)
	case cmd == "certs":
		fmt.Fprintf(&b, " -o %s", f.Name) // certs' flags take one dash
	default:
		fmt.Fprintf(&b, " -l %s", f.Name)
	}
	if !isBool(f) {
		// -x: a value, and only these; -r -F: a value, a file.
		switch f.Name {
		case "o":
			b.WriteString(" -x -a 'table json yaml'")
		case "type":
			b.WriteString(" -x -a 'LDS RDS CDS EDS ECDS'")
		case "fail-on":
			b.WriteString(" -x -a 'info low medium high'")
		case "f", "token-file", "ca-file", "cert-file", "key-file", "server-info", "stats", "dir":
			b.WriteString(" -r -F")
		default:
			b.WriteString(" -r")
		}
	}
	fmt.Fprintf(&b, " -d %s\n", fishQuote(f.Usage))
	return b.String()
}

// fishQuote puts s in single quotes, as fish reads them.
func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, "'", `\'`).Replace(s) + "'"
}
