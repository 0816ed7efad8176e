package main

import (
	"bufio"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
)

func TestZZClassify(t *testing.T) {
	cmd := exec.Command("perf", "script", "-i", os.Getenv("PERFDATA"), "-F", "ip,sym")
	out, _ := cmd.StdoutPipe()
	cmd.Start()
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var frames []string
	leaf := map[string]map[string]int{}
	total := 0
	want := os.Getenv("CAT")
	flush := func() {
		if len(frames) == 0 {
			return
		}
		total++
		c := classify(frames)
		if leaf[c] == nil {
			leaf[c] = map[string]int{}
		}
		k := frames[0]
		depth := 0
		for _, f := range frames {
			if !strings.HasPrefix(f, "runtime.") && !strings.HasPrefix(f, "sync.") && !strings.HasPrefix(f, "internal/") && !strings.HasPrefix(f, "crypto/") {
				k += " <- " + f
				if depth++; depth == 3 {
					break
				}
			}
		}
		leaf[c][k]++
		frames = frames[:0]
	}
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			flush()
			continue
		}
		_, sym, ok := strings.Cut(line, " ")
		if ok {
			frames = append(frames, sym)
		}
	}
	flush()
	cmd.Wait()
	for c, m := range leaf {
		if want != "" && !strings.Contains(c, want) {
			continue
		}
		n := 0
		type kv struct {
			k string
			v int
		}
		var l []kv
		for k, v := range m {
			n += v
			l = append(l, kv{k, v})
		}
		sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v })
		t.Logf("== %5.1f%% %s", 100*float64(n)/float64(total), c)
		for i := 0; i < len(l) && i < 12; i++ {
			t.Logf("      %4.1f%% %s", 100*float64(l[i].v)/float64(total), l[i].k)
		}
	}
}
