package app.hushwall.engine

/**
 * A running engine on a tun file descriptor: the app's whole interface to `libhushwall.so`.
 *
 * ```
 * val pfd = builder.establish() ?: return
 * val engine = Engine.start(pfd.fd, EngineConfig(policy = PolicyConfig(Profile.BALANCED), dnsUpstreams = listOf("192.168.1.1:53")), this)
 * // reader thread: while (running) log.addAll(engine.pollEvents(waitMillis = 5_000))
 * engine.stop(); pfd.close()
 * ```
 *
 * **The fd stays yours.** The engine works on a `dup` of [start]'s `tunFd` and closes only that, when it
 * stops; keep and close your `ParcelFileDescriptor` as usual (or pass `pfd.detachFd()` and close that right
 * after [start]). Android removes the VPN interface once both are closed.
 *
 * **Threads.** Every method may be called from any thread. [start] and [replacePolicy] compile lists on the
 * calling thread (milliseconds for the built-in profiles): keep them off the main thread for big lists.
 * [pollEvents] with `waitMillis > 0` blocks until an event arrives, the wait ends or the engine stops, so a
 * reader thread wakes only when there is something to show. After [stop], every method but [stop] throws
 * [IllegalStateException]; bad arguments throw [IllegalArgumentException]; neither ever crashes the process.
 */
class Engine private constructor(private val handle: Long) : AutoCloseable {
    private val lock = Any()
    @Volatile private var stopped: StopResult? = null

    /** The final counters and the events still queued when the engine stopped. */
    data class StopResult(val counters: Counters, val events: List<BlockEvent>, val failure: String?)

    /** True until [stop], or until the engine ended on its own (see [failure]). */
    val isRunning: Boolean
        get() = stopped == null && NativeBridge.nativeCounters(liveHandle())[Counters.SIZE - 1] == 1L

    /** Swaps in a new policy without touching the tunnel; a bad list throws and the old policy stays. */
    fun replacePolicy(policy: PolicyConfig) {
        NativeBridge.nativeReplacePolicy(liveHandle(), policy.toJson())
    }

    /**
     * Refuses all new traffic (connections, datagrams, DNS queries) of these apps from now on, with reason
     * `app_blocked`; replaces the previous set. Call it again when the rules or the network type (Wi-Fi/mobile)
     * change. While the set is empty, no flow's owner is ever looked up.
     */
    fun setBlockedUids(uids: IntArray) {
        NativeBridge.nativeSetBlockedUids(liveHandle(), uids)
    }

    /**
     * Tells the engine that the network under the VPN changed: call it from the default-network callback
     * (`onAvailable`, `onLinkPropertiesChanged`) with what `LinkProperties` says. From then on new connections of a
     * family without a route are refused at once (TCP reset, ICMP for UDP; event reason `no_route`), so apps fall
     * back to the other family as they would without the VPN, and flows whose socket lost its address end.
     */
    fun networkChanged(info: NetworkInfo) {
        NativeBridge.nativeNetworkChanged(liveHandle(), info.toJson())
    }

    /**
     * Takes up to [max] events, oldest first, as one JNI call. With [waitMillis] > 0 waits that long for the
     * first event. The engine keeps 8192 events for you; beyond that the oldest are dropped and counted in
     * [Counters.eventsDropped].
     */
    fun pollEvents(max: Int = 1024, waitMillis: Long = 0): List<BlockEvent> {
        val batch = NativeBridge.nativePollEvents(liveHandle(), max, waitMillis) ?: return emptyList()
        return EventDecoder.decode(batch)
    }

    /** The counters now. */
    fun counters(): Counters = Counters.fromArray(NativeBridge.nativeCounters(liveHandle()))

    /** Why the engine ended on its own (e.g. the tun was closed), or null while it runs normally. */
    fun failure(): String? = NativeBridge.nativeFailure(liveHandle())

    /**
     * Stops the engine, waits for its thread, closes its copy of the tun fd and frees the native object.
     * Idempotent: later calls return the same result.
     */
    fun stop(): StopResult {
        synchronized(lock) {
            stopped?.let { return it }
            val counters = Counters.fromArray(NativeBridge.nativeStop(handle))
            val events = ArrayList<BlockEvent>()
            while (true) {
                val batch = NativeBridge.nativePollEvents(handle, 8192, 0) ?: break
                events.addAll(EventDecoder.decode(batch))
            }
            val failure = NativeBridge.nativeFailure(handle)
            NativeBridge.nativeDestroy(handle)
            return StopResult(counters, events, failure).also { stopped = it }
        }
    }

    /** Same as [stop]. */
    override fun close() {
        stop()
    }

    private fun liveHandle(): Long {
        check(stopped == null) { "the engine is stopped" }
        return handle
    }

    companion object {
        /** `OsConstants.IPPROTO_TCP`, as passed to [Callbacks.uidOf]. */
        const val IPPROTO_TCP = 6
        /** `OsConstants.IPPROTO_UDP`. */
        const val IPPROTO_UDP = 17

        /**
         * Starts the engine on [tunFd] (the VPN interface; it stays owned by the caller, see the class docs).
         * Throws [IllegalArgumentException] for an fd that is not an open tun device or a bad configuration
         * (the message names list and line), `java.io.IOException` if the engine thread cannot start.
         */
        @JvmStatic
        fun start(tunFd: Int, config: EngineConfig, callbacks: Callbacks): Engine =
            Engine(NativeBridge.nativeStart(tunFd, config.toJson(), callbacks))
    }
}
