package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// printReport writes the table of results and, per scenario, the details
// behind it.
func printReport(w io.Writer, o *options, results []*result) {
	m := o.media
	fmt.Fprintf(w, "\nParley SFU forwarding cost: VP8 %d kbit/s at %d fps (packets ≤ %d B payload, %.0f packets/s per publisher)",
		m.VideoBitrate/1000, m.FPS, m.MaxPayload, m.packetsPerSecond())
	if m.Audio {
		fmt.Fprintf(w, " + Opus %d kbit/s", m.AudioBitrate/1000)
	}
	fmt.Fprintf(w, "; window %v per phase; %d CPU cores shared by server and load generator.\n\n", o.duration, cores())

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tpkts/s fwd\tloss %\tseq gaps\tSFU µs/pkt\tfloor µs/pkt\tSFU/floor\tfloor loss %\tRSS/conn KiB\tlatency p50/p99 ms\t")
	for _, r := range results {
		s := r.sfu
		floorCPU, ratio, floorLoss := "-", "-", "-"
		if r.hasFloor && r.floor.forwarded > 0 {
			floorCPU = us(r.floor.cpuPerPacket())
			floorLoss = fmt.Sprintf("%.3f", 100*r.floor.loss())
			if r.floor.cpu > 0 {
				ratio = fmt.Sprintf("%.1f", float64(s.cpuPerPacket())/float64(r.floor.cpuPerPacket()))
			}
		}
		growth := float64(r.rssDuring-r.rssBefore) / 1024
		perFwd := "-"
		if r.forwards > 0 {
			perFwd = fmt.Sprintf("%.0f", growth/float64(r.forwards))
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.3f\t%d\t%s\t%s\t%s\t%s\t%.0f\t%s\t%s/%s\t\n",
			r.sc, s.perSecond(s.forwarded), 100*s.loss(), s.gaps, us(s.cpuPerPacket()), floorCPU, ratio, floorLoss,
			growth/float64(r.sc.participants()), perFwd, ms(s.p50), ms(s.p99))
	}
	tw.Flush()
	fmt.Fprintf(w, "\nGoals of issue 4: %s\n\n", goals(o, results))
	for _, r := range results {
		s := r.sfu
		fmt.Fprintf(w, "%s: %d participants, everyone receiving after %v. SFU: %.0f packets/s sent by publishers, %d expected and %d received in the window;",
			r.sc, r.sc.participants(), r.setup.Round(10*time.Millisecond), s.perSecond(s.sent), s.expected, s.received)
		fmt.Fprintf(w, " server CPU %s of a core, RSS %.1f → %.1f MiB;", pct(s.cpu, s.window), mib(r.rssBefore), mib(r.rssDuring))
		var extra []string
		for _, c := range []struct{ key, name string }{
			{"parley_sfu_dropped_packets_total", "queue drops"},
			{"parley_sfu_nacks_received_total", "NACKed"},
			{"parley_sfu_retransmitted_packets_total", "resent"},
			{"parley_sfu_plis_sent_total", "PLIs to publishers"},
		} {
			extra = append(extra, fmt.Sprintf("%s %.0f", c.name, s.counters[c.key]))
		}
		fmt.Fprintf(w, " %s; late packets %d; frames skipped by publishers %d.", strings.Join(extra, ", "), s.late, s.framesSkipped)
		fmt.Fprintf(w, " Load generator CPU %s of a core; machine busy %s (other processes %s of a core).",
			pct(s.toolCPU, s.window), pct(s.machine.busy, s.machine.total), pct(max(s.machine.busy-s.cpu-s.toolCPU, 0), s.window))
		if r.hasFloor {
			f := r.floor
			fmt.Fprintf(w, " Floor: relay CPU %s of a core for %.0f packets/s, loss %.3f%%, latency p50/p99 %s/%s ms; load generator %s, machine busy %s (others %s).",
				pct(f.cpu, f.window), f.perSecond(f.forwarded), 100*f.loss(), ms(f.p50), ms(f.p99), pct(f.toolCPU, f.window),
				pct(f.machine.busy, f.machine.total), pct(max(f.machine.busy-f.cpu-f.toolCPU, 0), f.window))
		}
		fmt.Fprintln(w)
		if r.perfReport != "" {
			fmt.Fprintf(w, "  Server time by category (perf, stacks sampled during the window): %s", r.perfReport)
		}
	}
	fmt.Fprintln(w, "\nCPU µs/pkt: the process's utime+stime over the window divided by the packets it wrote to receivers"+
		" (on loopback the kernel's delivery to the receiving socket is charged to the sender). Loss: distinct packets received"+
		" of those sent in the window × receivers. RSS/conn, RSS/fwd: RSS growth over the empty server, per PeerConnection"+
		" and per forwarded track (track × receiver)."+
		" Machine busy near 100% means the load generator and the server competed for the cores.")
}

// goals says how each scenario fares against the goals: CPU per
// forwarded packet at most 3× the floor's, and at most 0.5% loss at 1×200
// with 1 Mbit/s video.
func goals(o *options, results []*result) string {
	mark := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	var out []string
	for _, r := range results {
		if r.hasFloor && r.floor.cpu > 0 && r.sfu.forwarded > 0 {
			ratio := float64(r.sfu.cpuPerPacket()) / float64(r.floor.cpuPerPacket())
			out = append(out, fmt.Sprintf("%s CPU ≤ 3× floor %s (%.2f×)", r.sc, mark(ratio <= 3), ratio))
		}
		if r.sc == (scenario{1, 200}) && o.media.VideoBitrate == 1_000_000 {
			out = append(out, fmt.Sprintf("1x200 loss ≤ 0.5%% %s (%.3f%%)", mark(r.sfu.loss() <= 0.005), 100*r.sfu.loss()))
		}
	}
	if len(out) == 0 {
		return "not measured in this run"
	}
	return strings.Join(out, "; ")
}

func us(d time.Duration) string {
	return fmt.Sprintf("%.1f", float64(d)/float64(time.Microsecond))
}

func ms(d time.Duration) string {
	if d > time.Second {
		return ">1000"
	}
	return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond))
}

func pct(part, whole time.Duration) string {
	if whole <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(part)/float64(whole))
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
