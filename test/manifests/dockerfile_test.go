package manifests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/meshtls/meshtls-operator/internal/testenv"
)

// The Dockerfile's image targets and the package each one builds.
var dockerTargets = map[string]string{
	"manager": "./cmd/manager",
	"proxy":   "./cmd/proxy",
}

const distroless = "gcr.io/distroless/static:nonroot"

// TestDockerfileBuilds replays the Dockerfile without a Docker engine: for each image
// target it copies into an empty directory exactly what the target's stages COPY from
// the build context (less what .dockerignore leaves out), runs the same `go build`
// commands there, and checks that the final stage copies the binary that was built.
// A package the Dockerfile does not copy, or a file .dockerignore keeps out, fails the
// build here as it would in `docker build`.
func TestDockerfileBuilds(t *testing.T) {
	df := parseDockerfile(t, filepath.Join(testenv.RepoRoot(), "Dockerfile"))
	ignore := parseDockerignore(t, filepath.Join(testenv.RepoRoot(), ".dockerignore"))

	if last := df.stages[len(df.stages)-1]; last.name != "manager" {
		t.Errorf("the last stage (what `docker build .` builds) is %q, want the manager", last.name)
	}
	for target, pkg := range dockerTargets {
		t.Run(target, func(t *testing.T) {
			final := df.stage(target)
			if final == nil {
				t.Fatalf("the Dockerfile has no stage %q (docker build --target %s)", target, target)
			}
			checkFinalStage(t, df, final)

			// Replay the stages the final one copies its binary from.
			from := df.stage(final.copies[0].from)
			chain := df.chain(from)
			work := t.TempDir()
			workdir := ""
			var built []string
			for _, st := range chain {
				for _, step := range st.steps {
					switch step.kind {
					case "WORKDIR":
						if workdir != "" && step.args != workdir {
							t.Fatalf("stage %s changes WORKDIR to %s; this test replays one WORKDIR per target", st.name, step.args)
						}
						workdir = step.args
					case "COPY":
						c := step.copy
						if c.from != "" {
							t.Fatalf("stage %s: COPY --from=%s in a build stage; this test does not replay it", st.name, c.from)
						}
						for _, src := range c.srcs {
							copyFromContext(t, ignore, src, filepath.Join(work, c.dst), len(c.srcs) > 1 || strings.HasSuffix(c.dst, "/"))
						}
					case "RUN":
						cmd := step.run
						switch {
						case strings.Contains(cmd, "go build"):
							goBuild(t, work, cmd)
							built = append(built, outputOf(t, cmd))
							if !strings.Contains(cmd, " "+pkg) {
								t.Errorf("target %s builds `%s`, want package %s", target, cmd, pkg)
							}
						case strings.TrimSpace(cmd) == "go mod download":
							// Only fills the module cache; the builds below use it.
						default:
							t.Fatalf("stage %s: RUN %q is neither `go mod download` nor a `go build` this test can replay", st.name, cmd)
						}
					}
				}
			}
			if workdir == "" {
				t.Fatal("no WORKDIR in the build stages")
			}
			src := final.copies[0].srcs[0]
			rel, ok := strings.CutPrefix(src, strings.TrimSuffix(workdir, "/")+"/")
			if !ok || !contains(built, rel) {
				t.Fatalf("stage %s copies %s from stage %s, which builds %v in %s", final.name, src, from.name, built, workdir)
			}
			if info, err := os.Stat(filepath.Join(work, rel)); err != nil || info.Size() == 0 {
				t.Fatalf("the build left no %s: %v", rel, err)
			}
		})
	}
}

// TestDockerignoreKeepsBuildsOut checks the paths that must never reach an image.
func TestDockerignoreKeepsBuildsOut(t *testing.T) {
	ignore := parseDockerignore(t, filepath.Join(testenv.RepoRoot(), ".dockerignore"))
	for _, p := range []string{"manager", "localcp", "meshtls-proxy", "cert-manager", "bin/manager", "cover.out",
		".git/config", "config/default/kustomization.yaml", "bundle/manifests/x.yaml", "test/e2e/run_test.go",
		"internal/policy/policy.test", "internal/policy/resolve_test.go", "cmd/proxy/proxy", "cpu.prof"} {
		if !ignore.excluded(p) {
			t.Errorf(".dockerignore lets %s into the build context", p)
		}
	}
	for _, p := range []string{"go.mod", "go.sum", "cmd/manager/main.go", "internal/policy/resolve.go", "webhooks/setup.go", "api/v1alpha1/podproxyconfig_types.go"} {
		if ignore.excluded(p) {
			t.Errorf(".dockerignore keeps %s out of the build context", p)
		}
	}
}

func checkFinalStage(t *testing.T, df *dockerfile, st *stage) {
	t.Helper()
	if st.base != distroless {
		t.Errorf("stage %s is FROM %s, want %s", st.name, st.base, distroless)
	}
	if len(st.copies) != 1 || st.copies[0].from == "" || df.stage(st.copies[0].from) == nil {
		t.Fatalf("stage %s must copy exactly one binary from a build stage, copies %+v", st.name, st.copies)
	}
	uid, _, _ := strings.Cut(st.user, ":")
	if n, err := strconv.Atoi(uid); st.user == "" || (err == nil && n == 0) || uid == "root" {
		t.Errorf("stage %s runs as %q; want a non-root USER", st.name, st.user)
	}
	var entry []string
	if err := json.Unmarshal([]byte(st.entrypoint), &entry); err != nil || len(entry) == 0 {
		t.Fatalf("stage %s: ENTRYPOINT %q is not an exec-form JSON array (distroless has no shell)", st.name, st.entrypoint)
	}
	if dst := st.copies[0].dst; entry[0] != dst {
		t.Errorf("stage %s runs %s but copies its binary to %s", st.name, entry[0], dst)
	}
}

// goBuild runs a RUN line's shell command in dir, with what BuildKit passes for a
// linux build on this machine's architecture.
func goBuild(t *testing.T, dir, cmdline string) {
	t.Helper()
	cmd := exec.Command("sh", "-c", cmdline)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TARGETOS=linux", "TARGETARCH="+runtime.GOARCH, "GOFLAGS=-mod=readonly", "GOWORK=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("`%s` in a copy of what the Dockerfile copies: %v\n%s", cmdline, err, out)
	}
}

var outputFlag = regexp.MustCompile(`\s-o\s+(\S+)`)

func outputOf(t *testing.T, cmd string) string {
	t.Helper()
	m := outputFlag.FindStringSubmatch(cmd)
	if m == nil || strings.HasPrefix(m[1], "/") {
		t.Fatalf("`%s`: want `-o <file>` relative to WORKDIR", cmd)
	}
	return path.Clean(m[1])
}

// copyFromContext copies src (relative to the build context, the repository root)
// into dst as COPY does: a directory's content into dst, a file to dst or, when dst
// is a directory, into it. What .dockerignore excludes is not in the context.
func copyFromContext(t *testing.T, ignore dockerignore, src, dst string, intoDir bool) {
	t.Helper()
	root := testenv.RepoRoot()
	src = path.Clean(src)
	info, err := os.Stat(filepath.Join(root, src))
	if err != nil {
		t.Fatalf("COPY %s: %v", src, err)
	}
	if !info.IsDir() {
		if ignore.excluded(src) {
			t.Fatalf("COPY %s: .dockerignore keeps it out of the build context", src)
		}
		if intoDir {
			dst = filepath.Join(dst, filepath.Base(src))
		}
		copyFile(t, filepath.Join(root, src), dst)
		return
	}
	n := 0
	err = filepath.WalkDir(filepath.Join(root, src), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if ignore.excluded(filepath.ToSlash(rel)) {
			return nil
		}
		inner, _ := filepath.Rel(filepath.Join(root, src), p)
		copyFile(t, p, filepath.Join(dst, inner))
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatalf("COPY %s: .dockerignore leaves nothing of it in the build context", src)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// A parsed Dockerfile: the instructions this project uses, and nothing else (an
// instruction the parser does not know fails the test, rather than being skipped).
type dockerfile struct{ stages []*stage }

type stage struct {
	name, base       string
	steps            []step
	copies           []copyStep
	user, entrypoint string
}

type step struct {
	kind, args string
	copy       copyStep
	run        string
}

type copyStep struct {
	from string
	srcs []string
	dst  string
}

func (d *dockerfile) stage(name string) *stage {
	for _, s := range d.stages {
		if s.name == name {
			return s
		}
	}
	return nil
}

// chain is st and the stages it is built FROM, first to last.
func (d *dockerfile) chain(st *stage) []*stage {
	var out []*stage
	for s := st; s != nil; s = d.stage(s.base) {
		out = append([]*stage{s}, out...)
	}
	return out
}

func parseDockerfile(t *testing.T, file string) *dockerfile {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	df := &dockerfile{}
	var cur *stage
	var logical strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if logical.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			logical.WriteString(cont + " ")
			continue
		}
		logical.WriteString(line)
		instr := logical.String()
		logical.Reset()
		kind, args, _ := strings.Cut(instr, " ")
		kind, args = strings.ToUpper(kind), strings.TrimSpace(args)
		if kind != "FROM" && kind != "ARG" && cur == nil {
			t.Fatalf("Dockerfile: %s before FROM", kind)
		}
		switch kind {
		case "FROM":
			f := strings.Fields(args)
			cur = &stage{base: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				cur.name = f[2]
			}
			df.stages = append(df.stages, cur)
			checkGoImage(t, cur.base)
		case "ARG":
		case "WORKDIR":
			cur.steps = append(cur.steps, step{kind: kind, args: args})
		case "COPY":
			f := strings.Fields(args)
			c := copyStep{}
			for len(f) > 0 && strings.HasPrefix(f[0], "--") {
				if v, ok := strings.CutPrefix(f[0], "--from="); ok {
					c.from = v
				} else {
					t.Fatalf("Dockerfile: COPY flag %s is not replayed by this test", f[0])
				}
				f = f[1:]
			}
			if len(f) < 2 {
				t.Fatalf("Dockerfile: COPY %s", args)
			}
			c.srcs, c.dst = f[:len(f)-1], f[len(f)-1]
			cur.steps = append(cur.steps, step{kind: kind, copy: c})
			cur.copies = append(cur.copies, c)
		case "RUN":
			rest := args
			for strings.HasPrefix(rest, "--mount=") {
				_, rest, _ = strings.Cut(rest, " ")
				rest = strings.TrimSpace(rest)
			}
			cur.steps = append(cur.steps, step{kind: kind, run: rest})
		case "USER":
			cur.user = args
		case "ENTRYPOINT":
			cur.entrypoint = args
		default:
			t.Fatalf("Dockerfile: instruction %s is not understood by this test; teach it (test/manifests/dockerfile_test.go)", kind)
		}
	}
	if len(df.stages) == 0 {
		t.Fatal("Dockerfile: no stages")
	}
	return df
}

// checkGoImage fails when the builder's Go is older than go.mod's go line.
func checkGoImage(t *testing.T, base string) {
	t.Helper()
	v, ok := strings.CutPrefix(base, "golang:")
	if !ok {
		return
	}
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+)\.(\d+)`).FindSubmatch(b)
	img := regexp.MustCompile(`^(\d+)\.(\d+)`).FindStringSubmatch(v)
	if m == nil || img == nil {
		t.Fatalf("cannot compare the builder image %s with go.mod's go line", base)
	}
	atoi := func(s string) int { n, _ := strconv.Atoi(s); return n }
	if atoi(img[1]) < atoi(string(m[1])) || atoi(img[1]) == atoi(string(m[1])) && atoi(img[2]) < atoi(string(m[2])) {
		t.Errorf("the builder image %s is older than go.mod's go %s.%s", base, m[1], m[2])
	}
}

// dockerignore is a parsed .dockerignore: patterns in order, the last match wins, a
// pattern matching a directory matches what is inside it, and ** spans directories
// (the rules of Docker's patternmatcher).
type dockerignore []ignoreRule

type ignoreRule struct {
	re     *regexp.Regexp
	negate bool
}

func parseDockerignore(t *testing.T, file string) dockerignore {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v: the build context would hold the whole tree", err)
	}
	var rules dockerignore
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r := ignoreRule{}
		if p, ok := strings.CutPrefix(line, "!"); ok {
			r.negate, line = true, p
		}
		line = path.Clean(strings.TrimPrefix(line, "/"))
		r.re = regexp.MustCompile("^" + globToRegexp(line) + "$")
		rules = append(rules, r)
	}
	return rules
}

func globToRegexp(glob string) string {
	var re strings.Builder
	for i := 0; i < len(glob); i++ {
		switch c := glob[i]; {
		case c == '*' && i+1 < len(glob) && glob[i+1] == '*':
			i++
			if i+1 < len(glob) && glob[i+1] == '/' {
				i++
				re.WriteString("(.*/)?")
			} else {
				re.WriteString(".*")
			}
		case c == '*':
			re.WriteString("[^/]*")
		case c == '?':
			re.WriteString("[^/]")
		default:
			re.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	return re.String()
}

func (d dockerignore) excluded(rel string) bool {
	out := false
	for _, r := range d {
		for p := rel; p != "." && p != "/"; p = path.Dir(p) {
			if r.re.MatchString(p) {
				out = !r.negate
				break
			}
		}
	}
	return out
}
