package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"
)

// connectionRate: new mTLS connections per second through the server proxy,
// against the bare crypto/tls server and ghostunnel.
func (b *bench) connectionRate() error {
	echoAddr := freePort()
	if _, err := b.helper("echo", "ADDRS="+echoAddr); err != nil {
		return err
	}
	bareAddr := freePort()
	bare, err := b.helper("bare-echo", "ADDRS="+bareAddr, "CERT="+b.pki.serverCert, "KEY="+b.pki.serverKey, "CA="+b.pki.caFile)
	if err != nil {
		return err
	}
	proxyAddr := freePort()
	prx, err := b.proxy("server-proxy", b.pki.serverDir, ppcYAML("STRICT", nil), "--inbound-listen="+proxyAddr+"="+portOf(echoAddr))
	if err != nil {
		return err
	}
	ghostAddr := freePort()
	var ghost *process
	if b.ghostBin != "" {
		if ghost, err = b.ghostServer(ghostAddr, echoAddr); err != nil {
			return err
		}
	}
	cfg := b.clientTLS()
	group := func(addr string) string {
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			return "?"
		}
		defer c.Close()
		return tls.CurveID(c.ConnectionState().CurveID).String()
	}

	section(fmt.Sprintf("New mTLS connections per second (TLS 1.3, ECDSA P-256, client certificate + SPIFFE check, one 1-byte round trip each, %d concurrent clients)", *workers))
	rate, cpuPer := map[string]float64{}, map[string]float64{}
	targets := []struct{ name, addr string }{{"bare", bareAddr}, {"proxy", proxyAddr}}
	if ghost != nil {
		targets = append(targets, struct{ name, addr string }{"ghostunnel", ghostAddr})
	}
	// Interleave the targets round by round, so that a slow moment of the machine
	// does not fall on one of them only.
	samples, cpus, serverCPUs := map[string][]float64{}, map[string][]float64{}, map[string][]float64{}
	for r := 0; r < *rounds; r++ {
		for _, tg := range targets {
			if r == 0 && tg.name == "proxy" {
				profile("connrate", *duration, prx)
			}
			v, cpu, servers, err := b.measureSplit(func() (float64, error) { return connRate(tlsDialer(tg.addr, cfg), *workers, *duration) })
			if err != nil {
				return fmt.Errorf("%s: %w", tg.name, err)
			}
			samples[tg.name] = append(samples[tg.name], v)
			cpus[tg.name] = append(cpus[tg.name], cpu/(v*duration.Seconds()))
			serverCPUs[tg.name] = append(serverCPUs[tg.name], servers/(v*duration.Seconds()))
		}
	}
	serverCPU := map[string]float64{}
	for name, s := range samples {
		rate[name] = medianOf(s)
		cpuPer[name] = medianOf(cpus[name])
		serverCPU[name] = medianOf(serverCPUs[name])
	}
	capacity := func(name string) string {
		return fmt.Sprintf("server side %s/conn: %s on %d cores with the clients elsewhere", us(cpuDur(serverCPU[name])), perSec(float64(numCPU())/serverCPU[name]), numCPU())
	}
	eff := func(name string) float64 { return cpuPer["bare"] / cpuPer[name] }
	row("bare crypto/tls server (same handshake)", perSec(rate["bare"]), fmt.Sprintf("reference; issue measured 1,780-1,960/s; CPU %s/conn; group %s", us(cpuDur(cpuPer["bare"])), group(bareAddr)))
	row("", "", capacity("bare"))
	row("meshtls-proxy (server side)", perSec(rate["proxy"]), fmt.Sprintf("target >= 1,500/s: %s; CPU %s/conn; group %s", verdict(rate["proxy"] >= 1500), us(cpuDur(cpuPer["proxy"])), group(proxyAddr)))
	row("", "", capacity("proxy"))
	row("  ratio to bare", fmt.Sprintf("%.2f", rate["proxy"]/rate["bare"]), fmt.Sprintf("target >= 0.80: %s (by CPU per connection: %.2f)", verdict(rate["proxy"]/rate["bare"] >= 0.8), eff("proxy")))
	if ghost != nil {
		row("ghostunnel "+ghostunnelVersion+" --allow-uri", perSec(rate["ghostunnel"]), fmt.Sprintf("reference; issue measured 1,370-1,410/s; CPU %s/conn; group %s", us(cpuDur(cpuPer["ghostunnel"])), group(ghostAddr)))
		row("", "", capacity("ghostunnel"))
		row("  meshtls-proxy / ghostunnel", fmt.Sprintf("%.2fx", rate["proxy"]/rate["ghostunnel"]), fmt.Sprintf("target >= 1.10x: %s (by CPU per connection: %.2fx)", verdict(rate["proxy"]/rate["ghostunnel"] >= 1.1), cpuPer["ghostunnel"]/cpuPer["proxy"]))
	}
	// The same with the hybrid post-quantum group, to show what the default avoids.
	pq, err := b.proxy("server-proxy-pq", b.pki.serverDir, ppcYAML("STRICT", nil), "--inbound-listen="+freePortFor(&proxyAddr)+"="+portOf(echoAddr), "--key-exchange=X25519MLKEM768,X25519,P-256")
	if err != nil {
		return err
	}
	var pqRates, pqCPU []float64
	for r := 0; r < *rounds; r++ {
		v, cpu, err := b.measure(func() (float64, error) { return connRate(tlsDialer(proxyAddr, cfg), *workers, *duration) })
		if err != nil {
			return err
		}
		pqRates, pqCPU = append(pqRates, v), append(pqCPU, cpu/(v*duration.Seconds()))
	}
	v, pqc := medianOf(pqRates), medianOf(pqCPU)
	row("meshtls-proxy --key-exchange=X25519MLKEM768,...", perSec(v), fmt.Sprintf("for comparison: %.2f of the default's rate, CPU %s/conn (%+.0f%%); group %s",
		v/rate["proxy"], us(cpuDur(pqc)), 100*(pqc/cpuPer["proxy"]-1), group(proxyAddr)))
	pq.stop()
	bare.stop()
	prx.stop()
	if ghost != nil {
		ghost.stop()
	}
	return nil
}

// measure runs fn and returns its result with the CPU time all processes spent.
func (b *bench) measure(fn func() (float64, error)) (float64, float64, error) {
	v, all, _, err := b.measureSplit(fn)
	return v, all, err
}

// measureSplit also returns the CPU time of the server side alone (every process
// but the clients').
func (b *bench) measureSplit(fn func() (float64, error)) (v, all, servers float64, err error) {
	before, beforeServers := b.cpu(), b.cpuServers()
	v, err = fn()
	return v, (b.cpu() - before).Seconds(), (b.cpuServers() - beforeServers).Seconds(), err
}

func cpuDur(seconds float64) time.Duration { return time.Duration(seconds * float64(time.Second)) }

func freePortFor(addr *string) string {
	*addr = freePort()
	return *addr
}

func medianOf(s []float64) float64 {
	c := append([]float64(nil), s...)
	for i := range c {
		for j := i + 1; j < len(c); j++ {
			if c[j] < c[i] {
				c[i], c[j] = c[j], c[i]
			}
		}
	}
	return c[len(c)/2]
}

// bulkAndLatency: throughput and added latency through a client proxy and a server
// proxy, against direct TLS, plain TCP and a ghostunnel pair.
func (b *bench) bulkAndLatency() error {
	sinkAddr, echoAddr := freePort(), freePort()
	if _, err := b.helper("sink", "ADDRS="+sinkAddr); err != nil {
		return err
	}
	if _, err := b.helper("echo", "ADDRS="+echoAddr); err != nil {
		return err
	}
	bareSink, bareEcho := freePort(), freePort()
	if _, err := b.helper("bare-sink", "ADDRS="+bareSink, "CERT="+b.pki.serverCert, "KEY="+b.pki.serverKey, "CA="+b.pki.caFile); err != nil {
		return err
	}
	if _, err := b.helper("bare-echo", "ADDRS="+bareEcho, "CERT="+b.pki.serverCert, "KEY="+b.pki.serverKey, "CA="+b.pki.caFile); err != nil {
		return err
	}
	// The pair: the client proxy originates mTLS to the server proxy's inbound
	// listeners (explicit outbound destinations), which forward to the sink or echo.
	srvSink, srvEcho := freePort(), freePort()
	srvPair, err := b.proxy("server-proxy-pair", b.pki.serverDir, ppcYAML("STRICT", nil),
		"--inbound-listen="+srvSink+"="+portOf(sinkAddr), "--inbound-listen="+srvEcho+"="+portOf(echoAddr))
	if err != nil {
		return err
	}
	cliSink, cliEcho := freePort(), freePort()
	cliPair, err := b.proxy("client-proxy", b.pki.clientDir, ppcYAML("STRICT", nil),
		"--outbound-listen="+cliSink+"="+srvSink, "--outbound-listen="+cliEcho+"="+srvEcho,
		"--outbound-destination="+srvSink+"="+serverID, "--outbound-destination="+srvEcho+"="+serverID)
	if err != nil {
		return err
	}
	var ghostSink, ghostEcho string
	if b.ghostBin != "" {
		gsSink, gsEcho := freePort(), freePort()
		ghostSink, ghostEcho = freePort(), freePort()
		for _, pair := range [][4]string{{gsSink, sinkAddr, ghostSink, gsSink}, {gsEcho, echoAddr, ghostEcho, gsEcho}} {
			if _, err := b.ghostServer(pair[0], pair[1]); err != nil {
				return err
			}
			if _, err := b.ghostClient(pair[2], pair[3]); err != nil {
				return err
			}
		}
	}
	cfg := b.clientTLS()

	section(fmt.Sprintf("Bulk throughput, one connection, %d MiB in 64 KiB writes (client proxy + server proxy, mTLS between them)", *bulk))
	tput := map[string]float64{}
	paths := []struct {
		name string
		dial dialer
	}{
		{"plain TCP", plainDialer(sinkAddr)},
		{"direct crypto/tls", tlsDialer(bareSink, cfg)},
		{"meshtls-proxy pair", plainDialer(cliSink)},
	}
	if ghostSink != "" {
		paths = append(paths, struct {
			name string
			dial dialer
		}{"ghostunnel pair", plainDialer(ghostSink)})
	}
	samples, cpus := map[string][]float64{}, map[string][]float64{}
	for r := 0; r < *rounds; r++ {
		for _, pth := range paths {
			if r == 0 && pth.name == "meshtls-proxy pair" {
				profile("bulk", 1*time.Second, srvPair, cliPair)
			}
			v, cpu, err := b.measure(func() (float64, error) { return throughput(pth.dial) })
			if err != nil {
				return fmt.Errorf("%s: %w", pth.name, err)
			}
			samples[pth.name] = append(samples[pth.name], v)
			cpus[pth.name] = append(cpus[pth.name], cpu/float64(*bulk)*1024) // CPU per GiB
		}
	}
	cpuGiB := map[string]float64{}
	for k, s := range samples {
		tput[k] = medianOf(s)
		cpuGiB[k] = medianOf(cpus[k])
	}
	perGiB := func(k string) string { return fmt.Sprintf("CPU %.2fs/GiB", cpuGiB[k]) }
	row("plain TCP", mibps(tput["plain TCP"]), "reference; "+perGiB("plain TCP"))
	row("direct crypto/tls", mibps(tput["direct crypto/tls"]), "reference; "+perGiB("direct crypto/tls"))
	row("meshtls-proxy client + server", mibps(tput["meshtls-proxy pair"]), perGiB("meshtls-proxy pair"))
	row("  ratio to direct crypto/tls", fmt.Sprintf("%.2f", tput["meshtls-proxy pair"]/tput["direct crypto/tls"]), "target >= 0.80: "+verdict(tput["meshtls-proxy pair"]/tput["direct crypto/tls"] >= 0.8))
	row("  ratio to plain TCP", fmt.Sprintf("%.2f", tput["meshtls-proxy pair"]/tput["plain TCP"]), "target >= 0.55: "+verdict(tput["meshtls-proxy pair"]/tput["plain TCP"] >= 0.55))
	if ghostSink != "" {
		row("ghostunnel client + server", mibps(tput["ghostunnel pair"]), "reference; "+perGiB("ghostunnel pair"))
		row("  meshtls-proxy / ghostunnel", fmt.Sprintf("%.2fx", tput["meshtls-proxy pair"]/tput["ghostunnel pair"]), "target >= 1.00x: "+verdict(tput["meshtls-proxy pair"]/tput["ghostunnel pair"] >= 1.0))
	}

	section("Latency per 64-byte request/response on a kept-alive connection (20,000 round trips)")
	const n = 20000
	direct, err := latencies(plainDialer(echoAddr), n)
	if err != nil {
		return err
	}
	viaPair, err := latencies(plainDialer(cliEcho), n)
	if err != nil {
		return err
	}
	directTLS, err := latencies(tlsDialer(bareEcho, cfg), n)
	if err != nil {
		return err
	}
	row("plain TCP, direct", fmt.Sprintf("p50 %s p99 %s", us(pct(direct, .5)), us(pct(direct, .99))), "reference")
	row("direct crypto/tls", fmt.Sprintf("p50 %s p99 %s", us(pct(directTLS, .5)), us(pct(directTLS, .99))), "reference")
	row("through meshtls-proxy client + server", fmt.Sprintf("p50 %s p99 %s", us(pct(viaPair, .5)), us(pct(viaPair, .99))), "")
	added50, added99 := pct(viaPair, .5)-pct(direct, .5), pct(viaPair, .99)-pct(direct, .99)
	row("  added by the two proxies", fmt.Sprintf("p50 %s p99 %s", us(added50), us(added99)),
		"target p99 < 300µs: "+verdict(added99 < 300*time.Microsecond)+" (Istio: two Envoys ~300µs, two ztunnels ~200µs)")
	if ghostEcho != "" {
		viaGhost, err := latencies(plainDialer(ghostEcho), n)
		if err != nil {
			return err
		}
		row("through ghostunnel client + server", fmt.Sprintf("p50 %s p99 %s", us(pct(viaGhost, .5)), us(pct(viaGhost, .99))),
			fmt.Sprintf("reference: adds p50 %s p99 %s", us(pct(viaGhost, .5)-pct(direct, .5)), us(pct(viaGhost, .99)-pct(direct, .99))))
	}
	return nil
}

func us(d time.Duration) string { return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond)) }

// modes: PERMISSIVE against STRICT for TLS clients and against DISABLE for
// plaintext clients. One proxy, one port per mode (modes are per application port).
func (b *bench) modes() error {
	strictApp, permApp, disApp := freePort(), freePort(), freePort()
	if _, err := b.helper("echo", "ADDRS="+strictApp+","+permApp+","+disApp); err != nil {
		return err
	}
	strict, perm, dis := freePort(), freePort(), freePort()
	if _, err := b.proxy("modes-proxy", b.pki.serverDir,
		ppcYAML("STRICT", map[string]string{portOf(permApp): "PERMISSIVE", portOf(disApp): "DISABLE"}),
		"--inbound-listen="+strict+"="+portOf(strictApp), "--inbound-listen="+perm+"="+portOf(permApp), "--inbound-listen="+dis+"="+portOf(disApp)); err != nil {
		return err
	}
	cfg := b.clientTLS()
	section("Connection setup by mode (connections per second; sniffing never waits on a timer for a client that speaks first)")
	s, cpus := map[string][]float64{}, map[string][]float64{}
	for r := 0; r < *rounds; r++ {
		for _, m := range []struct {
			name string
			dial dialer
		}{
			{"tls-strict", tlsDialer(strict, cfg)}, {"tls-permissive", tlsDialer(perm, cfg)},
			{"plain-disable", plainDialer(dis)}, {"plain-permissive", plainDialer(perm)},
		} {
			v, cpu, err := b.measure(func() (float64, error) { return connRate(m.dial, *workers, *duration) })
			if err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
			s[m.name] = append(s[m.name], v)
			cpus[m.name] = append(cpus[m.name], cpu/(v*duration.Seconds()))
		}
	}
	med := func(k string) (float64, float64) { return medianOf(s[k]), medianOf(cpus[k]) }
	ts, tsc := med("tls-strict")
	tp, tpc := med("tls-permissive")
	pd, pdc := med("plain-disable")
	pp, ppc := med("plain-permissive")
	row("TLS clients, STRICT port", perSec(ts), fmt.Sprintf("reference; CPU %s/conn", us(cpuDur(tsc))))
	row("TLS clients, PERMISSIVE port", perSec(tp), fmt.Sprintf("STRICT/PERMISSIVE %.3f, target <= 1.05: %s (by CPU per connection: %.3f)", ts/tp, verdict(ts/tp <= 1.05), tpc/tsc))
	row("plaintext clients, DISABLE port", perSec(pd), fmt.Sprintf("reference; CPU %s/conn", us(cpuDur(pdc))))
	row("plaintext clients, PERMISSIVE port", perSec(pp), fmt.Sprintf("DISABLE/PERMISSIVE %.3f, target <= 1.05: %s (by CPU per connection: %.3f)", pd/pp, verdict(pd/pp <= 1.05), ppc/pdc))
	return nil
}

// memory: the server proxy's RSS with 100 busy connections and with 1,000 idle
// ones, each in a fresh process.
func (b *bench) memory() error {
	app := freePort()
	if _, err := b.helper("echo", "ADDRS="+app); err != nil {
		return err
	}
	cfg := b.clientTLS()
	section("Server proxy memory (RSS of the process, mTLS connections)")

	busyAddr := freePort()
	busy, err := b.proxy("rss-busy", b.pki.serverDir, ppcYAML("STRICT", nil), "--inbound-listen="+busyAddr+"="+portOf(app))
	if err != nil {
		return err
	}
	base := rssKiB(busy.pid())
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 100)
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := tlsDialer(busyAddr, cfg)()
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			msg, got := make([]byte, 4096), make([]byte, 4096)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := c.Write(msg); err != nil {
					errs <- err
					return
				}
				if _, err := readFull(c, got); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	peak := sampleRSS(busy.pid(), *duration)
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		return fmt.Errorf("busy connections: %w", err)
	default:
	}
	row("idle process, before connections", kib(base), "")
	row("100 connections under load (4 KiB echo loop)", kib(peak), "target < 20 MiB: "+verdict(peak < 20<<10)+" (Envoy sidecars: ~60 MB)")
	busy.stop()

	idleAddr := freePort()
	idle, err := b.proxy("rss-idle", b.pki.serverDir, ppcYAML("STRICT", nil), "--inbound-listen="+idleAddr+"="+portOf(app))
	if err != nil {
		return err
	}
	conns := make([]net.Conn, 0, 1000)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 1000; i++ {
		c, err := tlsDialer(idleAddr, cfg)()
		if err != nil {
			return fmt.Errorf("idle connection %d: %w", i, err)
		}
		if _, err := c.Write([]byte("x")); err != nil {
			return err
		}
		if _, err := readFull(c, make([]byte, 1)); err != nil {
			return err
		}
		conns = append(conns, c)
	}
	time.Sleep(time.Second)
	idlePeak := sampleRSS(idle.pid(), 2*time.Second)
	row("1,000 idle connections (after one round trip each)", kib(idlePeak), "target < 64 MiB: "+verdict(idlePeak < 64<<10))
	return nil
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func sampleRSS(pid int, d time.Duration) int {
	peak := 0
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		peak = max(peak, rssKiB(pid))
	}
	return peak
}

func kib(k int) string { return fmt.Sprintf("%.1f MiB", float64(k)/1024) }
