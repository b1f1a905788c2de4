package app.hushwall.hosttest

import app.hushwall.engine.Action
import app.hushwall.engine.BlockEvent
import app.hushwall.engine.Callbacks
import app.hushwall.engine.EngineConfig
import app.hushwall.engine.EventDecoder
import app.hushwall.engine.NativeBridge
import app.hushwall.engine.PolicyConfig
import app.hushwall.engine.Profile
import app.hushwall.engine.Protocol
import app.hushwall.engine.Rule
import org.json.JSONArray
import org.json.JSONObject
import org.junit.jupiter.api.Test
import java.net.InetAddress
import java.net.InetSocketAddress

/**
 * JNI overhead, run by `android/host-test/run.sh bench` (release build of libhushwall.so). Prints the
 * BENCHMARKS.md table. Each figure is the median of 5 rounds after a warm-up round.
 */
class JniBenchmark {
    private fun median(rounds: Int = 5, f: () -> Double): Double {
        f() // warm-up (JIT)
        return (1..rounds).map { f() }.sorted()[rounds / 2]
    }

    /** Decodes the serde JSON form of a batch into the same objects, with the org.json API Android has. */
    private fun decodeJson(json: String): List<BlockEvent> {
        val array = JSONArray(json)
        return (0 until array.length()).map { i ->
            val o = array.getJSONObject(i)
            val rule = if (o.isNull("rule")) null else o.getJSONObject("rule").let { Rule(it.getString("list"), it.getInt("line"), it.getString("rule")) }
            BlockEvent(
                o.getLong("time_ms"),
                Action.valueOf(o.getString("action").uppercase()),
                Protocol.valueOf(o.getString("protocol").uppercase()),
                socketAddress(o.getString("src")),
                socketAddress(o.getString("dst")),
                if (o.isNull("host")) null else o.getString("host"),
                o.getString("reason"),
                rule,
                if (o.isNull("uid")) -1 else o.getInt("uid"),
            )
        }
    }

    private fun socketAddress(s: String): InetSocketAddress {
        val colon = s.lastIndexOf(':')
        return InetSocketAddress(InetAddress.getByName(s.substring(0, colon).trim('[', ']')), s.substring(colon + 1).toInt())
    }

    @Test
    fun jniOverhead() {
        val tunFd = TestNative.openTun(env("HUSHWALL_TUN"))
        val config = EngineConfig(policy = PolicyConfig(Profile.NONE), dnsUpstreams = listOf(env("HUSHWALL_DNS")))
        val handle = NativeBridge.nativeStart(tunFd, config.toJson(), TestCallbacks())
        val rows = ArrayList<String>()
        try {
            val emptyNs = median {
                val n = 200_000
                val t = System.nanoTime()
                repeat(n) { NativeBridge.nativePollEvents(handle, 1024, 0) }
                (System.nanoTime() - t).toDouble() / n
            }
            rows += "| `pollEvents()` with nothing queued (JNI call + handle lookup) | ${"%.0f".format(emptyNs)} ns |"
            val countersNs = median {
                val n = 200_000
                val t = System.nanoTime()
                repeat(n) { NativeBridge.nativeCounters(handle) }
                (System.nanoTime() - t).toDouble() / n
            }
            rows += "| `counters()` (15 longs) | ${"%.0f".format(countersNs)} ns |"

            for (batch in listOf(1, 64, 1024)) {
                val iterations = maxOf(20, 200_000 / batch)
                var bytes = 0
                var callNs = 0L
                var decodeNs = 0L
                val total = median {
                    callNs = 0; decodeNs = 0
                    repeat(iterations) {
                        TestNative.injectEvents(handle, batch)
                        val t0 = System.nanoTime()
                        val data = NativeBridge.nativePollEvents(handle, batch, 0)!!
                        val t1 = System.nanoTime()
                        val events = EventDecoder.decode(data)
                        val t2 = System.nanoTime()
                        check(events.size == batch)
                        bytes = data.size
                        callNs += t1 - t0
                        decodeNs += t2 - t1
                    }
                    (callNs + decodeNs).toDouble() / iterations
                }
                val perEvent = total / batch
                rows += "| binary batch of $batch: native call (encode + copy) / Kotlin decode / per event | " +
                    "${"%.1f".format(callNs.toDouble() / iterations / 1000)} µs / ${"%.1f".format(decodeNs.toDouble() / iterations / 1000)} µs / " +
                    "${"%.0f".format(perEvent)} ns → **${"%,.0f".format(1e9 / perEvent)} events/s**, ${bytes / batch} B/event |"

                var jsonChars = 0
                val jsonTotal = median {
                    var sum = 0L
                    repeat(iterations) {
                        TestNative.injectEvents(handle, batch)
                        val t0 = System.nanoTime()
                        val json = TestNative.pollEventsJson(handle, batch)!!
                        val events = decodeJson(json)
                        sum += System.nanoTime() - t0
                        check(events.size == batch)
                        jsonChars = json.length
                    }
                    sum.toDouble() / iterations
                }
                val jsonPerEvent = jsonTotal / batch
                rows += "| JSON batch of $batch (serde_json + org.json), total per event | " +
                    "${"%.0f".format(jsonPerEvent)} ns → ${"%,.0f".format(1e9 / jsonPerEvent)} events/s, ${jsonChars / batch} chars/event |"
            }

            val pure = object : Callbacks {
                override fun protect(fd: Int) = true
                override fun uidOf(protocol: Int, srcAddr: ByteArray, srcPort: Int, dstAddr: ByteArray, dstPort: Int) = 10123
            }
            val n = 100_000
            val times = (0..5).map { TestNative.benchCallbacks(pure, n) }.drop(1)
            fun med(i: Int) = times.map { it[i].toDouble() / n }.sorted()[2]
            rows += "| `protect(fd)` round trip, engine thread → Kotlin → engine | ${"%.0f".format(med(0))} ns |"
            rows += "| `uidOf(...)` round trip (two `byte[]` per call) | ${"%.0f".format(med(1))} ns |"
            rows += "| uid through the bridge's cache (hit) | ${"%.0f".format(med(2))} ns |"
        } finally {
            NativeBridge.nativeDestroy(handle)
            TestNative.closeFd(tunFd)
        }
        println("JNI benchmark results:")
        println("| what | cost |")
        println("|---|---|")
        rows.forEach(::println)
    }
}
