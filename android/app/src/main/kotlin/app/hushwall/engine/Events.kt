package app.hushwall.engine

import java.net.InetAddress
import java.net.InetSocketAddress
import java.nio.ByteBuffer

/** Allowed, refused, or (not a verdict) an allowed flow that failed upstream or was ended by the engine. */
enum class Action { ALLOW, BLOCK, ERROR }

/** The transport a verdict applied to. */
enum class Protocol { TCP, UDP, DNS, ICMP }

/** The list rule that decided: list display name (`builtin:<file>` or the user's list name), 1-based line, rule. */
data class Rule(val list: String, val line: Int, val text: String)

/**
 * One decision about one flow or DNS query, as the block log shows it, or (action [Action.ERROR]) a failure.
 *
 * [reason] is the engine's stable code: `dns_query`, `dns_cname`, `tls_sni`, `http_host`, `ip_cidr`,
 * `dns_mapped_ip`, `dns_over_tls`, `uninspectable`, `local_destination`, `flow_limit`, `client_limit`,
 * `icmp_unsupported` (allowed flows: `allow_rule`, `no_match`, `private_dns`).
 * Errors: `connect_failed`, `upstream_reset`, `udp_failed`, `dns_failed`, `flow_evicted`, `no_route` (the
 * destination's family has no route upstream: refused at once, see [Engine.networkChanged]), with [error] saying
 * what happened. It is a string so reasons added to the engine reach the UI without a Kotlin change. [uid] is -1
 * if unknown.
 * [peekJson] is the redacted summary of a refused plain-HTTP request (payload peek, when switched on), as JSON.
 * [repeats] is how many identical events this one stands for: the engine folds a flood of identical blocks (same
 * app, source address, destination, host and reason within 10 s) into one event with their count; 1 otherwise.
 */
data class BlockEvent(
    val timeMillis: Long,
    val action: Action,
    val protocol: Protocol,
    val src: InetSocketAddress,
    val dst: InetSocketAddress,
    val host: String?,
    val reason: String,
    val rule: Rule?,
    val uid: Int,
    val peekJson: String? = null,
    val error: String? = null,
    val repeats: Long = 1,
)

/**
 * Reads one event batch as written by `android/native/src/events.rs` (format version 4, big-endian):
 * `u8 version, u32 count`, then per event `i64 time, u8 action, u8 protocol, addr src, addr dst, i32 uid,
 * str host, str reason, str ruleList, i32 ruleLine, str ruleText, str peekJson, str error, i64 repeats`; `addr = u8 len(4|16),
 * bytes, u16 port`;
 * `str = i32 len (-1 null), UTF-8`.
 */
internal object EventDecoder {
    private const val VERSION = 4
    private val ACTIONS = Action.values()
    private val PROTOCOLS = Protocol.values()

    fun decode(batch: ByteArray): List<BlockEvent> {
        val buf = ByteBuffer.wrap(batch)
        val version = buf.get().toInt()
        check(version == VERSION) { "event batch version $version, expected $VERSION (app and libhushwall.so differ)" }
        val count = buf.int
        val events = ArrayList<BlockEvent>(count)
        // Reason codes and list names repeat in every batch: share the String objects.
        val strings = HashMap<String, String>()
        repeat(count) {
            val time = buf.long
            val action = ACTIONS[buf.get().toInt()]
            val protocol = PROTOCOLS[buf.get().toInt()]
            val src = address(buf)
            val dst = address(buf)
            val uid = buf.int
            val host = string(buf, batch, null)
            val reason = string(buf, batch, strings) ?: ""
            val list = string(buf, batch, strings)
            val line = buf.int
            val text = string(buf, batch, strings)
            val rule = if (list != null) Rule(list, line, text ?: "") else null
            val peek = string(buf, batch, null)
            val error = string(buf, batch, null)
            val repeats = buf.long.coerceAtLeast(1)
            events.add(BlockEvent(time, action, protocol, src, dst, host, reason, rule, uid, peek, error, repeats))
        }
        return events
    }

    private fun address(buf: ByteBuffer): InetSocketAddress {
        val bytes = ByteArray(buf.get().toInt())
        buf.get(bytes)
        val port = buf.short.toInt() and 0xffff
        // getByAddress never does a DNS lookup.
        return InetSocketAddress(InetAddress.getByAddress(bytes), port)
    }

    private fun string(buf: ByteBuffer, array: ByteArray, intern: HashMap<String, String>?): String? {
        val length = buf.int
        if (length < 0) return null
        val s = String(array, buf.position(), length, Charsets.UTF_8)
        buf.position(buf.position() + length)
        if (intern == null) return s
        val known = intern[s]
        if (known != null) return known
        intern[s] = s
        return s
    }
}
