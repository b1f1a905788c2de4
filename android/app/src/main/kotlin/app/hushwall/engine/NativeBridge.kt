package app.hushwall.engine

/**
 * The `native` methods of `libhushwall.so` (Rust crate `android/native`, module `exports.rs`). Internal: the
 * app uses [Engine]. Arguments that Kotlin's types would make non-null are nullable here so tests can prove the
 * native side refuses nulls with an exception instead of crashing.
 */
internal object NativeBridge {
    init {
        System.loadLibrary("hushwall")
    }

    /** Starts an engine on a `dup` of [tunFd]; returns a live handle. */
    @JvmStatic external fun nativeStart(tunFd: Int, configJson: String?, callbacks: Callbacks?): Long

    /** Compiles [policyJson] on this thread and swaps it into the running engine. */
    @JvmStatic external fun nativeReplacePolicy(handle: Long, policyJson: String?)

    /** The network under the VPN changed ([NetworkInfo.toJson]). */
    @JvmStatic external fun nativeNetworkChanged(handle: Long, networkJson: String?)

    /** One batch (see [EventDecoder]) of at most [max] events, waiting up to [waitMs] for the first; null if none. */
    @JvmStatic external fun nativeSetBlockedUids(handle: Long, uids: IntArray?)

    @JvmStatic external fun nativePollEvents(handle: Long, max: Int, waitMs: Long): ByteArray?

    /** Counters in [Counters.fromArray]'s order. */
    @JvmStatic external fun nativeCounters(handle: Long): LongArray

    /** Stops the engine and joins its thread (idempotent); returns the final counters. The handle stays live. */
    @JvmStatic external fun nativeStop(handle: Long): LongArray

    /** Why the engine ended on its own, if it did. */
    @JvmStatic external fun nativeFailure(handle: Long): String?

    /** Stops if needed and frees the handle; a second call throws [IllegalStateException]. */
    @JvmStatic external fun nativeDestroy(handle: Long)

    /** [live engine instances, threads the library attached to the JVM]. */
    @JvmStatic external fun nativeDiagnostics(): LongArray
}
