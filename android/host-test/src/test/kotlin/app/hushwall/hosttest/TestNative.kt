package app.hushwall.hosttest

/**
 * Test-only exports of libhushwall.so (cargo feature `host-test`, module `host_test.rs`): what Android's
 * framework provides on a phone, and synthetic events for the benchmark.
 */
object TestNative {
    init {
        System.loadLibrary("hushwall")
    }

    /** Opens /dev/net/tun attached to [name] (IFF_TUN | IFF_NO_PI); the caller owns the fd. */
    @JvmStatic external fun openTun(name: String): Int

    @JvmStatic external fun closeFd(fd: Int)

    /** SO_MARK: Linux's stand-in for `VpnService.protect` (run.sh routes marked sockets around the tun). */
    @JvmStatic external fun markSocket(fd: Int, mark: Int): Boolean

    /** SO_TYPE: 1 stream, 2 datagram, -1 not a socket. */
    @JvmStatic external fun socketType(fd: Int): Int

    /** Queues [count] synthetic block events on a running engine. */
    @JvmStatic external fun injectEvents(handle: Long, count: Int)

    /** Like nativePollEvents, but serde JSON (benchmark comparison). */
    @JvmStatic external fun pollEventsJson(handle: Long, max: Int): String?

    /** Nanoseconds for [iterations] calls of [protect, uidOf, cached uid] from an attached native thread. */
    @JvmStatic external fun benchCallbacks(callbacks: app.hushwall.engine.Callbacks, iterations: Int): LongArray

    /** Panics inside an export. */
    @JvmStatic external fun panic()
}
