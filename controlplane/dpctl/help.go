package dpctl

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/directpipe/directpipe/controlplane/certs"
	"github.com/directpipe/directpipe/controlplane/xdstype"
)

// command is one dpctl command: what `dpctl help` and `-h` show, and the
// flags it takes besides the global ones.
type command struct {
	name     string // "status", "policy apply"
	synopsis string // its arguments, e.g. "-f FILE [--revision REV]"
	short    string // one line for the command list
	long     string // what it does, in a paragraph or two
	examples []string
	// local commands need no control plane.
	local bool
	// flags registers the command's flags into o; nil: none.
	flagsFn func(fs *flag.FlagSet, o *opts)
	// checkFn refuses a command line that cannot work; nil: none.
	checkFn func(o *opts) error
}

func (c *command) flags(fs *flag.FlagSet, o *opts) {
	if c.flagsFn != nil {
		c.flagsFn(fs, o)
	}
}

func (c *command) check(o *opts) error {
	if c.checkFn != nil {
		return c.checkFn(o)
	}
	return nil
}

func fileFlag(fs *flag.FlagSet, o *opts) {
	fs.StringVar(&o.file, "f", "", "policy file (YAML or JSON)")
}

func needFile(name string) func(o *opts) error {
	return func(o *opts) error {
		if o.file == "" {
			return errors.New(name + " needs -f FILE")
		}
		return nil
	}
}

func waitFlags(fs *flag.FlagSet, o *opts) {
	fs.BoolVar(&o.allowDrain, "allow-drain", false, "apply even if listeners are replaced or removed, which drains their connections")
	fs.DurationVar(&o.wait, "wait", o.wait, "wait this long for every connected Envoy to ACK or NACK the change (0: do not wait)")
}

// commands are dpctl's commands in the order help lists them. audit and
// certs parse their own flags (see audit.go and certs.go).
var commands = []*command{
	{
		name: "status", short: "one row per Envoy: its sync state per xDS type and its Wasm VMs",
		long: "Shows every connected Envoy with the version it ACKed of each xDS type (LDS, RDS, CDS, EDS, ECDS), " +
			"what it rejected and why, and whether its Wasm VMs run. A policy edit the control plane refused " +
			"(a file that does not parse or validate) is shown below the table: the last good policy keeps serving.",
		examples: []string{"dpctl status", "dpctl status -o json"},
	},
	{
		name: "nodes", short: "Envoys connected now and recently",
		examples: []string{"dpctl nodes", "dpctl nodes -o yaml"},
	},
	{
		name: "keys", short: "API keys (identity, hash prefix) and key sets (jwks_file, jwks_url)",
		long: "Lists the key sets auth policies read (jwks_file, jwks_url): keys served and skipped, last success, " +
			"last error; a failed refresh keeps the last good keys serving. Then lists the API keys each auth policy " +
			"accepts, by identity and the first 12 hex digits of the key's SHA-256 (the policy holds only hashes).",
		examples: []string{"dpctl keys", "dpctl keys -o json"},
	},
	{
		name: "apikey new", synopsis: "--identity ID [--auth POLICY]", local: true,
		short: "make an API key: prints the key and the policy line that holds its hash",
		long: "Makes a random API key (256 bits, base64url) and prints it once, with the api_keys line to add to " +
			"an auth policy. The policy holds only the key's SHA-256; store the key itself where the client reads it. " +
			"Needs no control plane.",
		examples: []string{"dpctl apikey new --identity agent-7", "dpctl apikey new --identity agent-7 --auth demo"},
		flagsFn: func(fs *flag.FlagSet, o *opts) {
			fs.StringVar(&o.identity, "identity", "", "the identity the key stands for (forwarded upstream once verified)")
			fs.StringVar(&o.auth, "auth", "", "the auth policy the line goes into (only named in the output)")
		},
		checkFn: func(o *opts) error {
			if o.identity == "" {
				return errors.New("apikey new needs --identity ID")
			}
			return nil
		},
	},
	{
		name: "policy get", short: "the policy being served, with its revision",
		long: "Prints the policy being served. With the file store, the file's text is shown as written, comments " +
			"included; otherwise the policy is printed from its fields.",
		examples: []string{"dpctl policy get", "dpctl policy get > policy.yaml", "dpctl policy get -o json"},
	},
	{
		name: "policy validate", synopsis: "-f FILE [--offline]",
		short: "check a policy without applying it",
		long: "Checks a policy file as the control plane would apply it: schema, references, addresses, keys, " +
			"and the translation to Envoy resources. Each error names the field path and the line. With --offline " +
			"no control plane is asked, for CI and GitOps: everything is checked but what only a running control " +
			"plane knows (its own addresses, and the keys behind jwks_file and jwks_url). Exits 1 when invalid.",
		examples: []string{"dpctl policy validate -f policy.yaml", "dpctl policy validate --offline -f policy.yaml"},
		flagsFn: func(fs *flag.FlagSet, o *opts) {
			fileFlag(fs, o)
			fs.BoolVar(&o.offline, "offline", false, "validate here, with no control plane")
		},
		checkFn: needFile("policy validate"),
	},
	{
		name: "policy diff", synopsis: "-f FILE",
		short: "what an apply would change: fields of the policy, and Envoy resources",
		long: "Compares a policy file with the policy being served, field by field (list items with a name are " +
			"matched by name), then lists the Envoy resources an apply would add (+), change (~) or remove (-), " +
			"and the listeners whose connections it would drain. Applies nothing.",
		examples: []string{"dpctl policy diff -f policy.yaml"},
		flagsFn:  fileFlag,
		checkFn:  needFile("policy diff"),
	},
	{
		name: "policy apply", synopsis: "-f FILE [--revision REV] [--allow-drain] [--wait D]",
		short: "apply a policy, kept as written",
		long: "Applies a policy file. The file's text is what the control plane stores (with the file store: " +
			"comments, order and formatting kept). With --revision, only if the served policy is still REV. " +
			"A change that drains listeners needs --allow-drain. Waits up to --wait for every connected Envoy's " +
			"ACK or NACK, and exits 1 if one rejected it or did not answer.",
		examples: []string{
			"dpctl policy apply -f policy.yaml",
			"dpctl policy apply -f policy.yaml --revision 3f2a9c0d1e4b5a6f",
			"dpctl policy apply -f policy.yaml --allow-drain --wait 1m",
		},
		flagsFn: func(fs *flag.FlagSet, o *opts) {
			fileFlag(fs, o)
			fs.StringVar(&o.revision, "revision", "", "apply only if the served policy is still this revision")
			waitFlags(fs, o)
		},
		checkFn: needFile("policy apply"),
	},
	{
		name: "policy history", short: "the last stored revisions (etcd store); the serving one is marked",
		examples: []string{"dpctl policy history"},
	},
	{
		name: "policy rollback", synopsis: "--to REV [--allow-drain] [--wait D]",
		short:    "apply a revision from the history again",
		examples: []string{"dpctl policy rollback --to 3f2a9c0d"},
		flagsFn: func(fs *flag.FlagSet, o *opts) {
			fs.StringVar(&o.to, "to", "", "revision (or a prefix of it) from `dpctl policy history`")
			waitFlags(fs, o)
		},
		checkFn: func(o *opts) error {
			if o.to == "" {
				return errors.New("policy rollback needs --to REV")
			}
			return nil
		},
	},
	{
		name: "config", synopsis: "--node ID [--type T]",
		short: "the resources a node is served, as JSON",
		long: "Prints the Envoy resources a node is served. --type takes LDS, RDS, CDS, EDS or ECDS, or the " +
			"message name (Listener, RouteConfiguration, Cluster, ClusterLoadAssignment, TypedExtensionConfig), " +
			"in any case.",
		examples: []string{"dpctl config --node envoy-1", "dpctl config --node envoy-1 --type RDS"},
		flagsFn: func(fs *flag.FlagSet, o *opts) {
			fs.StringVar(&o.node, "node", "", "node id (from dpctl status)")
			fs.StringVar(&o.typ, "type", "", "only this type: LDS, RDS, CDS, EDS, ECDS (or the message name)")
		},
		checkFn: func(o *opts) error {
			if o.node == "" {
				return errors.New("config needs --node ID")
			}
			if o.typ != "" {
				if _, ok := typeName(o.typ); !ok {
					return fmt.Errorf("--type %s: want LDS, RDS, CDS, EDS or ECDS", o.typ)
				}
			}
			return nil
		},
	},
	{
		name: "events", synopsis: "[--follow]",
		short:    "follow events until interrupted: applies, refusals, pushes, ACKs, NACKs, nodes",
		examples: []string{"dpctl events", "dpctl events -o json"},
		flagsFn: func(fs *flag.FlagSet, o *opts) {
			fs.BoolVar(&o.follow, "follow", true, "follow events until interrupted (the only mode)")
		},
	},
	{
		name: "top", synopsis: "[--backend B]",
		short: "live streams per back end, route, endpoint and node over the fleet, with the drains (also: dpctl streams)",
		long: "Counts come from every Envoy's load reports (a live WebSocket or tcp mode connection is one request " +
			"in progress on its endpoint); any replica answers for the fleet when the store is shared.",
		examples: []string{"dpctl top", "dpctl top --backend voice -o json"},
	},
	{
		name: "drain", synopsis: "BACKEND ENDPOINT [--deadline D] [--wait] [--cancel]",
		short: "mark an endpoint DRAINING on every Envoy: no new stream, live ones go on",
		long: "The endpoint leaves EDS once no stream is left on it, or at the deadline (default 10m, at most 24h). " +
			"--wait shows the fleet-wide count falling; --cancel takes the endpoint back. Ask the back end to end " +
			"its streams with Close 1001 (its drain contract) to finish sooner.",
		examples: []string{"dpctl drain voice 10.0.0.7:8081 --deadline 5m --wait", "dpctl drain voice 10.0.0.7:8081 --cancel"},
	},
	{
		name: "rebalance", synopsis: "BACKEND [--dry-run] [--window D]",
		short: "even out a least_streams back end after scale-out: hot endpoints end their extra streams with Close 1001",
		long: "Plans, from the fleet-wide counts, how many streams each endpoint above its share (the mean, or by max_streams) should end, " +
			"then asks each back end at its drain_path to end that many over the window (default 10s, at most 10m); " +
			"the callers reconnect to where the least_streams weights send them. --dry-run shows the plan only.",
		examples: []string{"dpctl rebalance voice --dry-run", "dpctl rebalance voice --window 30s"},
	},
	{
		name: "audit", synopsis: "--envoy-admin URL|unix:PATH | -f CONFIG_DUMP [--fail-on SEVERITY]", local: true,
		short: "where any Envoy's config hurts WebSocket and raw streams",
		long: "Reads an Envoy's config (live, from its admin interface, or a saved /config_dump) and reports what " +
			"would cut, stall or reorder long-lived streams. Needs no control plane. Exits 3 when a finding is at " +
			"or above --fail-on.",
		examples: []string{
			"dpctl audit --envoy-admin http://127.0.0.1:9901",
			"dpctl audit -f config_dump.json --fail-on medium",
		},
	},
	{
		name: "certs", synopsis: "(-dir DIR | -secrets-namespace NS) [-hosts H,...] [-nodes ID,...] [-identity PATTERN] [-days N]", local: true,
		short: "write a CA, the control plane's certificate and one per Envoy",
		long: "Writes a CA (kept if DIR has one), the control plane's certificate for hosts H and one client " +
			"certificate per Envoy node id. Needs no control plane. Identity pattern default: " + certs.DefaultNodeIdentity + ". " +
			"With -secrets-namespace it creates two Kubernetes Secrets instead (-server-secret, -node-secret; one node id), " +
			"and keeps them when they exist: it never overwrites a certificate in use.",
		examples: []string{"dpctl certs -dir ./certs -hosts cp.internal,10.0.0.5 -nodes envoy-1,envoy-2",
			"dpctl certs -secrets-namespace voice -hosts dp-control-plane.voice.svc -nodes envoy"},
	},
	{
		name: "version", synopsis: "[--client]",
		short:    "the versions of dpctl and of the control plane",
		examples: []string{"dpctl version", "dpctl version --client", "dpctl version -o json"},
		flagsFn: func(fs *flag.FlagSet, o *opts) {
			fs.BoolVar(&o.clientOnly, "client", false, "only dpctl's own version; ask no control plane")
		},
	},
	{
		name: "completion", synopsis: "bash|zsh|fish", local: true,
		short: "a shell completion script",
		long:  "Prints a completion script for bash, zsh or fish: commands, flags, and the values of -o, --type and --fail-on.",
		examples: []string{
			"source <(dpctl completion bash)",
			"dpctl completion bash > /etc/bash_completion.d/dpctl",
			"source <(dpctl completion zsh)",
			"dpctl completion fish > ~/.config/fish/completions/dpctl.fish",
		},
	},
	{name: "help", synopsis: "[COMMAND]", local: true, short: "help for dpctl or a command",
		examples: []string{"dpctl help", "dpctl help policy apply", "dpctl policy apply -h"}},
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// groupOf returns the subcommands of a command group ("policy",
// "apikey"), or nil.
func groupOf(name string) []string {
	var subs []string
	for _, c := range commands {
		if group, sub, ok := strings.Cut(c.name, " "); ok && group == name {
			subs = append(subs, sub)
		}
	}
	return subs
}

func isHelpFlag(arg string) bool {
	switch arg {
	case "-h", "--h", "-help", "--help":
		return true
	}
	return false
}

// globalNames are the flags every command takes, shown once in dpctl's
// help and not again in each command's.
var globalNames = func() map[string]bool {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	(&globals{}).register(fs)
	names := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { names[f.Name] = true })
	return names
}()

func printUsage(w io.Writer) {
	fmt.Fprint(w, "dpctl talks to the directpipe control plane's admin API, and checks policies and Envoy configs.\n\nUsage:\n  dpctl [flags] COMMAND [flags]\n\nCommands:\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.short)
	}
	tw.Flush()
	fmt.Fprint(w, "\nGlobal flags (before or after the command):\n")
	fs := flag.NewFlagSet("dpctl", flag.ContinueOnError)
	defaultGlobals().register(fs)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprint(w, "\nRun `dpctl help COMMAND` or `dpctl COMMAND -h` for a command's flags and examples.\n")
}

func printGroupHelp(w io.Writer, group string) {
	fmt.Fprintf(w, "Usage:\n  dpctl %s COMMAND [flags]\n\nCommands:\n", group)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range commands {
		if strings.HasPrefix(c.name, group+" ") {
			fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.short)
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "\nRun `dpctl help %s COMMAND` for a command's flags and examples.\n", group)
}

// printCommandHelp prints a command's usage, what it does, its own flags
// (from fs, the global ones left out) and examples.
func printCommandHelp(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "%s\n\nUsage:\n  dpctl %s", c.short, c.name)
	if c.synopsis != "" {
		fmt.Fprintf(w, " %s", c.synopsis)
	}
	fmt.Fprintln(w)
	if c.long != "" {
		fmt.Fprintf(w, "\n%s\n", wrap(c.long, 78))
	}
	if fs != nil {
		var own []*flag.Flag
		fs.VisitAll(func(f *flag.Flag) {
			if !globalNames[f.Name] {
				own = append(own, f)
			}
		})
		if len(own) > 0 {
			fmt.Fprint(w, "\nFlags:\n")
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			for _, f := range own {
				dash := "--"
				if len(f.Name) == 1 || c.name == "certs" {
					dash = "-"
				}
				def := ""
				if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0s" {
					def = fmt.Sprintf(" (default %s)", f.DefValue)
				}
				fmt.Fprintf(tw, "  %s%s\t%s%s\n", dash, f.Name, f.Usage, def)
			}
			tw.Flush()
		}
	}
	if len(c.examples) > 0 {
		fmt.Fprint(w, "\nExamples:\n")
		for _, e := range c.examples {
			fmt.Fprintf(w, "  %s\n", e)
		}
	}
	if !c.local {
		fmt.Fprint(w, "\nGlobal flags (--addr, --token-file, --token, -o, --timeout, --tls, ...): see `dpctl help`.\n")
	}
}

// helpCommand runs `dpctl help [COMMAND]`.
func helpCommand(w io.Writer, args []string) error {
	if len(args) == 0 {
		printUsage(w)
		return nil
	}
	if len(args) == 1 && isHelpFlag(args[0]) {
		args = []string{"help"}
	}
	name := strings.Join(args, " ")
	if len(args) == 1 && groupOf(name) != nil {
		printGroupHelp(w, name)
		return nil
	}
	c := lookup(name)
	if c == nil {
		return usageError{msg: fmt.Sprintf("no command %q", name)}
	}
	printCommandHelp(w, c, commandFlags(c))
	return nil
}

// commandFlags is the flag set a command parses, for its help.
func commandFlags(c *command) *flag.FlagSet {
	fs := flag.NewFlagSet("dpctl "+c.name, flag.ContinueOnError)
	switch c.name {
	case "audit":
		auditFlags(fs, &auditOpts{})
	case "certs":
		certsFlags(fs, &certs.Plan{}, new(string), new(string), new(int), &secretFlags{})
	default:
		c.flags(fs, &opts{wait: defaultApplyWait})
	}
	return fs
}

// wrap breaks s into lines of at most width bytes, at spaces.
func wrap(s string, width int) string {
	var b strings.Builder
	n := 0
	for _, word := range strings.Fields(s) {
		if n > 0 && n+1+len(word) > width {
			b.WriteByte('\n')
			n = 0
		} else if n > 0 {
			b.WriteByte(' ')
			n++
		}
		b.WriteString(word)
		n += len(word)
	}
	return b.String()
}

// typeName maps what --type accepts to the admin API's type name.
func typeName(t string) (string, bool) {
	for _, k := range xdstype.Kinds() {
		if strings.EqualFold(t, k.Abbrev) || strings.EqualFold(t, k.Name()) {
			return k.Name(), true
		}
	}
	return "", false
}
