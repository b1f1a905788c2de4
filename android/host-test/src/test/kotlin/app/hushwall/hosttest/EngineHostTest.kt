package app.hushwall.hosttest

import app.hushwall.engine.Action
import app.hushwall.engine.BlockEvent
import app.hushwall.engine.Engine
import app.hushwall.engine.EngineConfig
import app.hushwall.engine.ListRole
import app.hushwall.engine.ListSpec
import app.hushwall.engine.NativeBridge
import app.hushwall.engine.NetworkInfo
import app.hushwall.engine.PolicyConfig
import app.hushwall.engine.Profile
import app.hushwall.engine.Protocol
import app.hushwall.engine.UidSource
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNotEquals
import org.junit.jupiter.api.Assertions.assertNotNull
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertSame
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.MethodOrderer
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.TestMethodOrder
import org.junit.jupiter.api.Timeout
import org.junit.jupiter.api.assertThrows
import java.io.File

/**
 * The JNI bridge on a real JVM with a real tun fd: run by android/host-test/run.sh, which puts this JVM in the
 * phone network namespace (tun `hwj0`, routes into it, marked sockets routed around it) next to an internet
 * namespace with dnsmasq and an HTTPS server. Clients are real `dig` and `curl` processes.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@TestMethodOrder(MethodOrderer.OrderAnnotation::class)
@Timeout(180)
class EngineHostTest {
    private var tunFd = -1
    private val userBlock = ListSpec.Text("user-block", ListRole.BLOCK, "# mine\n||ads.hushwall.test^\n")

    private fun config(
        profile: Profile = Profile.BALANCED,
        lists: List<ListSpec> = listOf(userBlock),
        uids: UidSource = UidSource.CALLBACK,
    ) = EngineConfig(policy = PolicyConfig(profile, lists), dnsUpstreams = listOf(env("HUSHWALL_DNS")), uids = uids)

    @BeforeAll
    fun openTun() {
        tunFd = TestNative.openTun(env("HUSHWALL_TUN"))
        assertTrue(tunFd >= 0)
    }

    @AfterAll
    fun closeTun() {
        if (tunFd >= 0) TestNative.closeFd(tunFd)
    }

    /** Polls until [done] holds for everything received, or fails after [timeoutMs]. */
    private fun collect(engine: Engine, into: MutableList<BlockEvent>, timeoutMs: Long = 5000, done: (List<BlockEvent>) -> Boolean) {
        val deadline = System.currentTimeMillis() + timeoutMs
        while (!done(into)) {
            val left = deadline - System.currentTimeMillis()
            assertTrue(left > 0, "events did not arrive in time; got $into")
            into.addAll(engine.pollEvents(waitMillis = minOf(left, 500)))
        }
    }

    private fun upstreamAccepts() = serverLog().count { it == "ACCEPT 198.18.0.1" || it == "ACCEPT fd00:6877::1" }

    @Test
    @org.junit.jupiter.api.Order(1)
    fun `blocked names and SNI are refused, allowed HTTPS is byte-exact, protect covers every socket`() {
        val callbacks = TestCallbacks()
        val acceptsBefore = upstreamAccepts()
        val logBefore = serverLog().size
        val engine = Engine.start(tunFd, config(), callbacks)
        val events = ArrayList<BlockEvent>()
        try {
            assertTrue(engine.isRunning)
            // DNS: allowed answers come from the real server; blocked names get NXDOMAIN from the engine.
            val allowed = dig("allowed.test")
            assertTrue(allowed.out.contains("status: NOERROR") && allowed.out.contains("198.18.1.10"), allowed.out + allowed.err)
            assertTrue(dig("tracking.intl.miui.com").out.contains("status: NXDOMAIN"))
            assertTrue(dig("ads.hushwall.test").out.contains("status: NXDOMAIN"))

            // HTTPS through the engine, v4 and v6, byte for byte.
            val blob = File(env("HUSHWALL_WWW"), "blob.bin")
            for (family in listOf("-4", "-6")) {
                val out = File.createTempFile("blob", family)
                try {
                    val r = curl("https://allowed.test/blob.bin", family, output = out)
                    assertEquals(0, r.exit, "curl $family: ${r.err}")
                    assertEquals(sha256(blob), sha256(out), "curl $family body differs")
                } finally {
                    out.delete()
                }
            }

            // SNI: the name resolves to the same (allowed) address, so only the ClientHello can tell.
            val sni = curl("https://tracking.intl.miui.com/blob.bin", "--resolve", "tracking.intl.miui.com:443:198.18.1.10")
            assertNotEquals(0, sni.exit, "blocked SNI must not connect")

            collect(engine, events) { got ->
                got.any { it.reason == "tls_sni" } && got.count { it.reason == "dns_query" } >= 2
            }
        } finally {
            val result = engine.stop()
            events.addAll(result.events)
            // Counters add up: every block is an event, none were lost, traffic was counted.
            val c = result.counters
            val blobSize = File(env("HUSHWALL_WWW"), "blob.bin").length()
            assertEquals(events.count { it.action == Action.BLOCK }.toLong(), c.blocked, "blocks vs events: $c")
            assertEquals(3L, c.blocked, "$c")
            assertEquals(0L, c.eventsDropped)
            assertTrue(c.dnsQueries >= 5, "$c") // allowed.test, 2 blocked, A+AAAA lookups by curl
            assertTrue(c.tcpFlows >= 3, "$c")
            assertTrue(c.bytesOut >= 2 * blobSize, "$c")
            assertTrue(c.packetsIn > 0 && c.bytesIn > 0 && c.packetsOut > 0, "$c")
            assertNull(result.failure)
        }

        // Events reached Kotlin with host, reason, rule and the callback's uid.
        val dns = events.first { it.host == "tracking.intl.miui.com" && it.reason == "dns_query" }
        assertEquals(Action.BLOCK, dns.action)
        assertEquals(Protocol.DNS, dns.protocol)
        assertEquals("builtin:xiaomi-telemetry.txt", dns.rule?.list)
        // The line of the rule in the built-in list the engine compiled (the list's own file in the repository).
        val ruleLine = File(env("HUSHWALL_BLOCKLISTS"), "xiaomi-telemetry.txt").readLines()
            .indexOfFirst { it.startsWith("||tracking.intl.miui.com^") } + 1
        assertTrue(ruleLine > 0, "the rule is in xiaomi-telemetry.txt")
        assertEquals(ruleLine, dns.rule?.line)
        assertEquals("||tracking.intl.miui.com^", dns.rule?.text)
        assertEquals(4242, dns.uid)
        assertEquals(53, dns.dst.port)
        val user = events.first { it.host == "ads.hushwall.test" }
        assertEquals("user-block", user.rule?.list)
        assertEquals(2, user.rule?.line)
        val sni = events.first { it.reason == "tls_sni" }
        assertEquals("tracking.intl.miui.com", sni.host)
        assertEquals(Protocol.TCP, sni.protocol)
        assertEquals("198.18.1.10", sni.dst.address.hostAddress)
        assertEquals(443, sni.dst.port)
        assertEquals(4242, sni.uid)
        assertTrue(events.all { it.timeMillis > 1_600_000_000_000L })

        // The server never saw the blocked name; every upstream TCP socket was protected first.
        val newLog = serverLog().drop(logBefore)
        assertTrue(newLog.none { it.contains("tracking.intl.miui.com") }, "$newLog")
        assertEquals(2, upstreamAccepts() - acceptsBefore, "$newLog")
        assertEquals(2, callbacks.tcpProtects, "TCP protects ${callbacks.protectedTypes}")
        assertTrue(callbacks.udpProtects >= 1, "DNS upstream sockets are protected too: ${callbacks.protectedTypes}")
        assertTrue(callbacks.protectedTypes.all { it == 1 || it == 2 })
        assertTrue(callbacks.threads.all { it == "hushwall-engine" }, "callbacks ran on ${callbacks.threads.toSet()}")
        assertTrue(callbacks.uidCalls.get() in 1..events.size, "uid lookups ${callbacks.uidCalls} for ${events.size} events")
    }

    @Test
    @org.junit.jupiter.api.Order(2)
    fun `a protector that refuses fails the connection instead of leaking it`() {
        val callbacks = TestCallbacks(refuse = true)
        val acceptsBefore = upstreamAccepts()
        val engine = Engine.start(tunFd, config(), callbacks)
        val events = ArrayList<BlockEvent>()
        val counters = try {
            val r = curl("https://allowed.test/blob.bin", "--resolve", "allowed.test:443:198.18.1.10")
            assertNotEquals(0, r.exit, "the connection must fail")
            events.addAll(engine.pollEvents(waitMillis = 2_000))
            engine.counters()
        } finally {
            engine.stop()
        }
        assertTrue(callbacks.tcpProtects >= 1, "protect was asked: ${callbacks.protectedTypes}")
        assertEquals(acceptsBefore, upstreamAccepts(), "nothing reached the server")
        assertTrue(counters.upstreamErrors >= 1, "$counters")
        // The failure crossed JNI as an event: action ERROR, its reason, the host, and what went wrong.
        val failure = events.firstOrNull { it.action == Action.ERROR }
        assertNotNull(failure, "an error event: $events")
        assertEquals("connect_failed", failure!!.reason)
        assertEquals("allowed.test", failure.host)
        assertTrue(!failure.error.isNullOrEmpty(), "$failure")
    }

    @Test
    @org.junit.jupiter.api.Order(3)
    fun `replacePolicy swaps lists while running and keeps the old policy on a bad list`() {
        val engine = Engine.start(tunFd, config(profile = Profile.NONE, lists = emptyList()), TestCallbacks())
        try {
            assertTrue(dig("ads.hushwall.test").out.contains("198.18.1.10"))
            engine.replacePolicy(PolicyConfig(Profile.NONE, listOf(ListSpec.Text("late-block", ListRole.BLOCK, "ads.hushwall.test"))))
            assertTrue(dig("ads.hushwall.test").out.contains("status: NXDOMAIN"))
            val events = ArrayList<BlockEvent>()
            collect(engine, events) { got -> got.any { it.host == "ads.hushwall.test" } }
            assertEquals("late-block", events.first().rule?.list)

            val bad = assertThrows<IllegalArgumentException> {
                engine.replacePolicy(PolicyConfig(Profile.NONE, listOf(ListSpec.Text("broken", ListRole.BLOCK, "ok.example\n|||x"))))
            }
            assertTrue(bad.message!!.contains("broken:2"), bad.message)
            assertTrue(dig("ads.hushwall.test").out.contains("status: NXDOMAIN"), "old policy kept")
        } finally {
            engine.stop()
        }
    }

    @Test
    @org.junit.jupiter.api.Order(4)
    fun `proc_net attribution finds the uid that owns the flow (Android 9 path)`() {
        val callbacks = TestCallbacks()
        val engine = Engine.start(tunFd, config(uids = UidSource.PROC_NET), callbacks)
        val events = ArrayList<BlockEvent>()
        try {
            val r = run("setpriv", "--reuid=4321", "--regid=4321", "--clear-groups", "curl", "-sS", "-k", "--max-time", "10",
                "--resolve", "tracking.intl.miui.com:443:198.18.1.10", "-o", "/dev/null", "https://tracking.intl.miui.com/")
            assertNotEquals(0, r.exit)
            collect(engine, events) { got -> got.any { it.reason == "tls_sni" } }
        } finally {
            engine.stop()
        }
        assertEquals(4321, events.first { it.reason == "tls_sni" }.uid)
        assertEquals(0, callbacks.uidCalls.get(), "proc_net mode never calls uidOf")
    }

    @Test
    @org.junit.jupiter.api.Order(5)
    fun `bad fds, bad configs and null arguments give IllegalArgumentException`() {
        val cb = TestCallbacks()
        for (fd in listOf(-1, 987_654)) {
            val e = assertThrows<IllegalArgumentException> { Engine.start(fd, config(), cb) }
            assertTrue(e.message!!.contains("fd"), e.message)
        }
        // fd 0 is surefire's pipe here, not a tun.
        val notTun = assertThrows<IllegalArgumentException> { Engine.start(0, config(), cb) }
        assertTrue(notTun.message!!.contains("not a tun device"), notTun.message)

        for ((json, needle) in listOf("{" to "JSON", "[]" to "JSON", """{"policy":{"profile":"paranoid"}}""" to "paranoid",
                """{"policy":{"profile":"none"},"dnsUpstreams":["nowhere"]}""" to "dnsUpstreams",
                """{"policy":{"profile":"none"},"dnsFallbacks":["1.1.1.1"]}""" to "dnsFallbacks")) {
            val e = assertThrows<IllegalArgumentException> { NativeBridge.nativeStart(tunFd, json, cb) }
            assertTrue(e.message!!.contains(needle), e.message)
        }
        assertThrows<IllegalArgumentException> { NativeBridge.nativeStart(tunFd, null, cb) }
        assertThrows<IllegalArgumentException> { NativeBridge.nativeStart(tunFd, config().toJson(), null) }
        val lists = assertThrows<IllegalArgumentException> {
            Engine.start(tunFd, config(lists = listOf(ListSpec.Text("mine", ListRole.BLOCK, "good.example\n||bad^^"))), cb)
        }
        assertTrue(lists.message!!.contains("mine:2"), lists.message)
        val file = assertThrows<IllegalArgumentException> {
            Engine.start(tunFd, config(lists = listOf(ListSpec.File("/nonexistent/list.txt", ListRole.ALLOW))), cb)
        }
        assertTrue(file.message!!.contains("/nonexistent/list.txt"), file.message)
        assertEquals(0L, NativeBridge.nativeDiagnostics()[0], "no engine left behind by failed starts")
        assertTrue(cb.protectedTypes.isEmpty())
    }

    @Test
    @org.junit.jupiter.api.Order(6)
    fun `calls after stop give IllegalStateException and stop is idempotent`() {
        val engine = Engine.start(tunFd, config(), TestCallbacks())
        val first = engine.stop()
        assertSame(first, engine.stop())
        engine.close()
        assertThrows<IllegalStateException> { engine.pollEvents() }
        assertThrows<IllegalStateException> { engine.counters() }
        assertThrows<IllegalStateException> { engine.replacePolicy(PolicyConfig()) }
        assertTrue(!engine.isRunning)

        // The native layer on its own: stale, doubled and made-up handles.
        val handle = NativeBridge.nativeStart(tunFd, config().toJson(), TestCallbacks())
        assertTrue(handle > 0)
        NativeBridge.nativeStop(handle)
        NativeBridge.nativeStop(handle) // idempotent while the handle lives
        assertThrows<IllegalStateException> { NativeBridge.nativeReplacePolicy(handle, """{"profile":"none"}""") }
        NativeBridge.nativeDestroy(handle)
        assertThrows<IllegalStateException> { NativeBridge.nativeDestroy(handle) }
        assertThrows<IllegalStateException> { NativeBridge.nativeCounters(handle) }
        assertThrows<IllegalStateException> { NativeBridge.nativePollEvents(handle, 10, 0) }
        assertThrows<IllegalStateException> { NativeBridge.nativeStop(handle) }
        assertThrows<IllegalStateException> { NativeBridge.nativeCounters(0x1234_5678_9abcL) }
        val live = Engine.start(tunFd, config(), TestCallbacks())
        try {
            assertThrows<IllegalArgumentException> { live.pollEvents(max = 0) }
            assertThrows<IllegalArgumentException> { live.pollEvents(waitMillis = -1) }
        } finally {
            live.stop()
        }
    }

    @Test
    @org.junit.jupiter.api.Order(7)
    fun `a panic in native code becomes a Java exception and the library keeps working`() {
        val e = assertThrows<RuntimeException> { TestNative.panic() }
        assertTrue(e.message!!.contains("hushwall native panic") && e.message!!.contains("index out of bounds"), e.message)
        val engine = Engine.start(tunFd, config(), TestCallbacks())
        assertTrue(engine.isRunning)
        engine.stop()
    }

    @Test
    @org.junit.jupiter.api.Order(8)
    fun `start and stop 50 times leaks no fds, threads or memory`() {
        fun cycle(i: Int) {
            val callbacks = TestCallbacks()
            val engine = Engine.start(tunFd, config(), callbacks)
            val r = dig(if (i % 2 == 0) "tracking.intl.miui.com" else "allowed.test")
            assertTrue(r.out.contains("status:"), "cycle $i: ${r.out} ${r.err}")
            val result = engine.stop()
            assertNull(result.failure)
            assertEquals(0L, result.counters.eventsDropped)
        }
        repeat(5) { cycle(it) }
        System.gc()
        val fdsBefore = fdTargets()
        val tasksBefore = threadNames()
        val rssBefore = rssKiB()
        val attachedBefore = NativeBridge.nativeDiagnostics()[1]
        repeat(50) { cycle(it) }
        System.gc()
        Thread.sleep(200)
        val fdsAfter = fdTargets()
        val tasksAfter = threadNames()
        val rssAfter = rssKiB()
        val diag = NativeBridge.nativeDiagnostics()
        println("leak check: fds ${fdsBefore.size} -> ${fdsAfter.size}, threads ${tasksBefore.size} -> ${tasksAfter.size}, " +
            "RSS ${rssBefore / 1024} -> ${rssAfter / 1024} MiB, live engines ${diag[0]}, attached threads $attachedBefore -> ${diag[1]}")
        assertEquals(fdsBefore, fdsAfter, "fds")
        assertTrue(tasksAfter.none { it == "hushwall-engine" }, "$tasksAfter")
        // The JVM may start a compiler or GC thread on its own; the engine would add one per cycle.
        assertTrue(tasksAfter.size <= tasksBefore.size + 3, "threads $tasksBefore -> $tasksAfter")
        assertEquals(0L, diag[0], "live engines")
        assertEquals(attachedBefore, diag[1], "threads attached to the JVM")
        assertTrue(rssAfter - rssBefore < 32 * 1024, "RSS grew ${(rssAfter - rssBefore) / 1024} MiB")
    }

    @Test
    @org.junit.jupiter.api.Order(9)
    fun `networkChanged without IPv6 refuses IPv6 connects at once while IPv4 works, and IPv6 comes back`() {
        val engine = Engine.start(tunFd, config(), TestCallbacks())
        val events = ArrayList<BlockEvent>()
        try {
            assertEquals(0, curl("https://allowed.test/blob.bin", "-6").exit, "dual-stack: IPv6 works")
            // What the service reports on an IPv4-only Wi-Fi.
            engine.networkChanged(NetworkInfo(ipv4 = true, ipv6 = false, dnsServers = listOf("198.18.1.53"), mtu = 1500))
            val started = System.nanoTime()
            val v6 = curl("https://allowed.test/blob.bin", "-6")
            val tookMs = (System.nanoTime() - started) / 1_000_000
            // curl exit 7: could not connect (the SYN was reset), not 35/56 (reset after the ClientHello).
            assertEquals(7, v6.exit, "IPv6 refused at the connect: ${v6.err}")
            assertTrue(tookMs < 2_000, "refused at once, took $tookMs ms")
            assertEquals(0, curl("https://allowed.test/blob.bin", "-4").exit, "IPv4 still works")
            collect(engine, events) { got -> got.any { it.reason == "no_route" } }
            val refusal = events.first { it.reason == "no_route" }
            assertEquals(Action.ERROR, refusal.action)
            assertEquals("fd00:6877:2:0:0:0:0:10", refusal.dst.address.hostAddress, "$refusal")
            assertTrue(refusal.error!!.contains("IPv6"), "$refusal")

            engine.networkChanged(NetworkInfo(ipv4 = true, ipv6 = true))
            assertEquals(0, curl("https://allowed.test/blob.bin", "-6").exit, "IPv6 works again")
            assertThrows<IllegalArgumentException> {
                engine.networkChanged(NetworkInfo(ipv4 = true, ipv6 = true, dnsServers = listOf("not an address")))
            }
        } finally {
            engine.stop()
        }
    }

    @Test
    @org.junit.jupiter.api.Order(10)
    fun `identical blocks folded by the engine reach Kotlin with their repeat count`() {
        val engine = Engine.start(tunFd, config(), TestCallbacks())
        val events = ArrayList<BlockEvent>()
        val queries = 6
        try {
            // The same blocked query again and again from one app: the engine reports the first at once and folds
            // the rest into one event (repeats = 5) when its 10 s window ends.
            repeat(queries) { assertTrue(dig("tracking.intl.miui.com").out.contains("status: NXDOMAIN")) }
            collect(engine, events, timeoutMs = 20_000) { got ->
                got.filter { it.host == "tracking.intl.miui.com" }.sumOf { it.repeats } >= queries
            }
            val blocks = events.filter { it.host == "tracking.intl.miui.com" }
            assertTrue(blocks.size < queries, "folded: $blocks")
            assertEquals(queries.toLong(), blocks.sumOf { it.repeats }, "$blocks")
            assertTrue(blocks.any { it.repeats == (queries - 1).toLong() }, "one summary for the folded ones: $blocks")
            assertTrue(blocks.all { it.repeats >= 1 && it.action == Action.BLOCK })
            assertEquals(queries.toLong(), engine.counters().blocked, "the counters count each attempt too")
        } finally {
            engine.stop()
        }
    }
}
