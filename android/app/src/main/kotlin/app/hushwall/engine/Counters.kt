package app.hushwall.engine

/** The engine's counters since it started. */
data class Counters(
    /** Packets read from the tun. */
    val packetsIn: Long,
    /** Bytes read from the tun. */
    val bytesIn: Long,
    /** Packets written to the tun. */
    val packetsOut: Long,
    /** Bytes written to the tun. */
    val bytesOut: Long,
    /** Packets that did not parse and were dropped. */
    val malformed: Long,
    /** Packets dropped for other reasons (unsupported protocol, full queues, tun write failures). */
    val dropped: Long,
    /** TCP flows opened. */
    val tcpFlows: Long,
    /** UDP flows opened (not counting DNS). */
    val udpFlows: Long,
    /** TCP flows open now. */
    val tcpActive: Long,
    /** UDP flows open now. */
    val udpActive: Long,
    /** DNS queries seen. */
    val dnsQueries: Long,
    /** Blocks of any kind (each one is also an event). */
    val blocked: Long,
    /** Upstream failures (connect failures, resets, UDP errors, DNS SERVFAILs); each is also an `ERROR` event. */
    val upstreamErrors: Long,
    /** Events lost because nobody polled them in time (engine queue and bridge queue). */
    val eventsDropped: Long,
    /** Idle flows closed to make room at the flow caps (each is also an `ERROR` event, `flow_evicted`). */
    val flowsEvicted: Long,
) {
    internal companion object {
        /** Entries in the native array: the 15 counters above, then `running` (1/0). */
        const val SIZE = 16

        fun fromArray(a: LongArray): Counters {
            check(a.size == SIZE) { "counter array of ${a.size}, expected $SIZE (app and libhushwall.so differ)" }
            return Counters(
                a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13], a[14],
            )
        }
    }
}
