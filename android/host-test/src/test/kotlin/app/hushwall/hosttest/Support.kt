package app.hushwall.hosttest

import app.hushwall.engine.Callbacks
import app.hushwall.engine.Engine
import java.io.File
import java.security.MessageDigest
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicInteger

/** The mark run.sh routes around the tun. */
const val MARK = 0x6877

fun env(name: String): String = System.getenv(name) ?: error("$name not set: run android/host-test/run.sh")

/** What the VpnService does in the app, with Linux stand-ins: protect = SO_MARK; uid = a fixed answer. */
class TestCallbacks(private val refuse: Boolean = false, private val uid: Int = 4242) : Callbacks {
    /** SO_TYPE of every socket the engine asked to protect, in order. */
    val protectedTypes = CopyOnWriteArrayList<Int>()
    val uidCalls = AtomicInteger()
    val threads = CopyOnWriteArrayList<String>()

    override fun protect(fd: Int): Boolean {
        threads.add(Thread.currentThread().name)
        protectedTypes.add(TestNative.socketType(fd))
        if (refuse) return false
        return TestNative.markSocket(fd, MARK)
    }

    override fun uidOf(protocol: Int, srcAddr: ByteArray, srcPort: Int, dstAddr: ByteArray, dstPort: Int): Int {
        uidCalls.incrementAndGet()
        require(protocol == Engine.IPPROTO_TCP || protocol == Engine.IPPROTO_UDP) { "protocol $protocol" }
        require(srcAddr.size == 4 || srcAddr.size == 16) { "src ${srcAddr.size} bytes" }
        return uid
    }

    val tcpProtects: Int get() = protectedTypes.count { it == 1 }
    val udpProtects: Int get() = protectedTypes.count { it == 2 }
}

class Result(val exit: Int, val out: String, val err: String)

/** Runs a command (in the phone netns, as this JVM is), bounded in time. */
fun run(vararg command: String, timeoutSeconds: Long = 20): Result {
    val out = File.createTempFile("hw-out", ".txt")
    val err = File.createTempFile("hw-err", ".txt")
    try {
        val process = ProcessBuilder(*command).redirectOutput(out).redirectError(err).start()
        if (!process.waitFor(timeoutSeconds, TimeUnit.SECONDS)) {
            process.destroyForcibly()
            process.waitFor()
            return Result(-1, out.readText(), "timed out: " + err.readText())
        }
        return Result(process.exitValue(), out.readText(), err.readText())
    } finally {
        out.delete()
        err.delete()
    }
}

fun dig(name: String, type: String = "A"): Result =
    run("dig", "+time=3", "+tries=1", "+noall", "+comments", "+answer", name, type)

/** curl over HTTPS with the test CA; extra args e.g. --resolve, -6. */
fun curl(url: String, vararg extra: String, output: File? = null): Result {
    val args = mutableListOf("curl", "-sS", "--max-time", "10", "--cacert", env("HUSHWALL_CA"))
    if (output != null) args += listOf("-o", output.path) else args += listOf("-o", "/dev/null")
    args += extra
    args += url
    return run(*args.toTypedArray())
}

fun sha256(file: File): String =
    MessageDigest.getInstance("SHA-256").digest(file.readBytes()).joinToString("") { "%02x".format(it) }

/** Lines the HTTPS server logged (ACCEPT <peer>, SNI <name>, HTTP ...). */
fun serverLog(): List<String> = File(env("HUSHWALL_HTTPS_LOG")).readLines()

fun fdCount(): Int = File("/proc/self/fd").list()!!.size

fun fdTargets(): List<String> = File("/proc/self/fd").listFiles()!!.map {
    try { java.nio.file.Files.readSymbolicLink(it.toPath()).toString() } catch (e: Exception) { "?" }
}.sorted()

fun threadNames(): List<String> = File("/proc/self/task").listFiles()!!.map {
    try { File(it, "comm").readText().trim() } catch (e: Exception) { "?" }
}

fun rssKiB(): Long = File("/proc/self/status").readLines().first { it.startsWith("VmRSS:") }
    .split(Regex("\\s+"))[1].toLong()
