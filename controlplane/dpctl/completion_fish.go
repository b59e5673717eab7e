package dpctl

import (
	"flag"
	"fmt"
	"slices"
	"strings"
)

// fishCompletion is a fish completion script built from the command
// table. fish asks a condition before offering each word, so the script
// carries one function, __dpctl_cmd, that reads the command line as dpctl
// does (global flags and their values first, then a command and, for a
// group, its subcommand); every completion is conditioned on its answer.
func fishCompletion() string {
	m := newCompletionModel()
	var b strings.Builder
	b.WriteString("# fish completion for dpctl: dpctl completion fish | source\n")
	b.WriteString("# (or save it as ~/.config/fish/completions/dpctl.fish)\n\n")

	// Which words take a value: the word after them is not a command.
	valueFlags := map[string]bool{}
	for _, f := range m.globals {
		if !isBool(f) {
			valueFlags[dashed(f.Name, "")] = true
		}
	}
	for _, c := range commands {
		for _, f := range m.flags[c.name] {
			if !isBool(f) {
				valueFlags[dashed(f.Name, c.name)] = true
			}
		}
	}
	b.WriteString("function __dpctl_cmd --description 'the dpctl command on the line, e.g. \"policy apply\"'\n")
	b.WriteString("    set -l words (commandline -opc)\n")
	b.WriteString("    set -e words[1]\n")
	fmt.Fprintf(&b, "    set -l valueflags %s\n", fishWords(sortedKeys(valueFlags)))
	fmt.Fprintf(&b, "    set -l groups %s\n", fishWords(m.groupNames()))
	b.WriteString(`    set -l cmd
    set -l skip 0
    for w in $words
        if test $skip = 1
            set skip 0
            continue
        end
        switch $w
            case '-*=*'
            case '-*'
                contains -- $w $valueflags; and set skip 1
            case '*'
                if test (count $cmd) = 0
                    set cmd $w
                else if test (count $cmd) = 1; and contains -- $cmd[1] $groups
                    set -a cmd $w
                end
        end
    end
    echo $cmd
end

function __dpctl_is --description 'the command on the line is $argv[1]'
    set -l cmd (__dpctl_cmd)
    test "$cmd" = "$argv[1]"
end

`)
	var withGlobals []string
	for _, c := range commands {
		if takesGlobals(c) {
			withGlobals = append(withGlobals, c.name)
		}
	}
	b.WriteString("function __dpctl_globals --description 'the command on the line takes the global flags'\n")
	fmt.Fprintf(&b, "    set -l cmd (__dpctl_cmd)\n    contains -- \"$cmd\" '' %s\nend\n\n", fishWords(withGlobals))

	b.WriteString("complete -c dpctl -f\n")
	b.WriteString("complete -c dpctl -s h -l help -d 'usage and examples'\n")
	for _, word := range m.top {
		desc := ""
		if c := lookup(word); c != nil {
			desc = c.short
		} else {
			desc = strings.Join(m.groups[word], ", ")
		}
		fmt.Fprintf(&b, "complete -c dpctl -n %s -a %s -d %s\n", fishQuote(`__dpctl_is ''`), fishQuote(word), fishQuote(desc))
	}
	for _, g := range m.groupNames() {
		for _, sub := range m.groups[g] {
			fmt.Fprintf(&b, "complete -c dpctl -n %s -a %s -d %s\n",
				fishQuote("__dpctl_is "+g), fishQuote(sub), fishQuote(lookup(g+" "+sub).short))
		}
	}
	fmt.Fprintf(&b, "complete -c dpctl -n %s -a %s\n", fishQuote("__dpctl_is help"), fishQuote(strings.Join(m.top, " ")))
	fmt.Fprintf(&b, "complete -c dpctl -n %s -a %s\n", fishQuote("__dpctl_is completion"), fishQuote(strings.Join(shells, " ")))
	for _, f := range m.globals {
		fishFlag(&b, "__dpctl_globals", f, "")
	}
	for _, c := range commands {
		cond := "__dpctl_is " + fishQuote(c.name)
		for _, f := range m.flags[c.name] {
			fishFlag(&b, cond, f, c.name)
		}
	}
	return b.String()
}

// fishFlag writes the completion of one flag of cmd ("" for a global).
func fishFlag(b *strings.Builder, cond string, f *flag.Flag, cmd string) {
	fmt.Fprintf(b, "complete -c dpctl -n %s", fishQuote(cond))
	switch w := dashed(f.Name, cmd); {
	case strings.HasPrefix(w, "--"):
		fmt.Fprintf(b, " -l %s", f.Name)
	case len(f.Name) == 1:
		fmt.Fprintf(b, " -s %s", f.Name)
	default:
		fmt.Fprintf(b, " -o %s", f.Name)
	}
	switch {
	case isBool(f):
	case flagChoices[f.Name] != "":
		fmt.Fprintf(b, " -x -a %s", fishQuote(flagChoices[f.Name]))
	case slices.Contains(fileFlags, f.Name):
		b.WriteString(" -r -F")
	case slices.Contains(dirFlags, f.Name):
		b.WriteString(" -x -a '(__fish_complete_directories)'")
	default:
		b.WriteString(" -x")
	}
	usage, _, _ := strings.Cut(f.Usage, "\n")
	fmt.Fprintf(b, " -d %s\n", fishQuote(usage))
}

// fishQuote quotes s for fish: inside single quotes only \ and ' are
// special.
func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

func fishWords(words []string) string {
	quoted := make([]string, len(words))
	for i, w := range words {
		quoted[i] = fishQuote(w)
	}
	return strings.Join(quoted, " ")
}
