package app.hushwall.engine

/** A built-in set of lists. */
enum class Profile(internal val json: String) {
    /** Telemetry and ads; never breaks updates, Mi Account, push, Find My Device or security-app updates. */
    BALANCED("balanced"),
    /** Balanced plus more aggressive lists and the Alibaba Cloud Singapore/Russia ranges. */
    STRICT("strict"),
    /** No built-in lists: only the extra lists. */
    NONE("none"),
}

/** Whether a list's rules block or allow (allow wins over every block rule). */
enum class ListRole(internal val json: String) { BLOCK("block"), ALLOW("allow") }

/** One extra list, in any format the engine reads (hosts, plain domains, `*.domain`, `||domain^`, CIDRs). */
sealed class ListSpec {
    abstract val role: ListRole

    /** A list given as text; [name] is what events show as the rule's list. */
    data class Text(val name: String, override val role: ListRole, val text: String) : ListSpec()

    /** A list file the engine reads itself (e.g. in the app's files dir); events show [name] or the path. */
    data class File(val path: String, override val role: ListRole, val name: String? = null) : ListSpec()
}

/**
 * The policy: a profile plus extra lists. [Engine.replacePolicy] swaps it without restarting the tunnel.
 * [blockDoh] adds the engine's built-in list of public DNS-over-HTTPS/TLS resolvers (`doh-resolvers.txt`) to
 * [Profile.BALANCED]; [Profile.STRICT] always has it, [Profile.NONE] has no built-in list at all.
 */
data class PolicyConfig(
    val profile: Profile = Profile.BALANCED,
    val lists: List<ListSpec> = emptyList(),
    val blockDoh: Boolean = false,
) {
    internal fun toJson(): String {
        val out = StringBuilder(256)
        out.append("{\"profile\":").appendJson(profile.json)
        out.append(",\"blockDoh\":").append(blockDoh)
        out.append(",\"lists\":[")
        lists.forEachIndexed { i, list ->
            if (i > 0) out.append(',')
            out.append("{\"role\":").appendJson(list.role.json)
            when (list) {
                is ListSpec.Text -> out.append(",\"name\":").appendJson(list.name).append(",\"text\":").appendJson(list.text)
                is ListSpec.File -> {
                    out.append(",\"path\":").appendJson(list.path)
                    if (list.name != null) out.append(",\"name\":").appendJson(list.name)
                }
            }
            out.append('}')
        }
        return out.append("]}").toString()
    }
}

/** How blocked names are answered. */
enum class BlockAnswer(internal val json: String) {
    /** NXDOMAIN: the name does not exist. */
    NXDOMAIN("nxdomain"),
    /** 0.0.0.0 / :: addresses. */
    UNSPECIFIED("unspecified"),
}

/** Where flow → app attribution comes from. */
enum class UidSource(internal val json: String) {
    /** [Callbacks.uidOf] (Android 10+). */
    CALLBACK("callback"),
    /** `/proc/net/{tcp,udp}{,6}` read natively (Android 9). */
    PROC_NET("proc_net"),
    /** None: events carry uid -1. */
    NONE("none"),
}

/**
 * Everything [Engine.start] needs besides the tun fd. Crosses JNI as JSON (see `android/native/src/config.rs`
 * for the schema); only [policy] has no default.
 */
data class EngineConfig(
    val policy: PolicyConfig = PolicyConfig(),
    /**
     * The network's own resolvers that allowed DNS queries go to, `IP:PORT` (`[v6]:port`), tried in order; the
     * app reads them from the default network's `LinkProperties`, and [Engine.networkChanged] replaces them.
     */
    val dnsUpstreams: List<String> = emptyList(),
    /** Resolvers tried after [dnsUpstreams] (down, or none known); null: the engine's default (Cloudflare). */
    val dnsFallbacks: List<String>? = null,
    /** Report allowed flows and queries too, not only blocks. */
    val logAllowed: Boolean = false,
    /** Payload peek: refused plain-HTTP requests are read locally and summarised (redacted) in their event. */
    val payloadPeek: Boolean = false,
    /** Record every packet through the tunnel as pcapng (verdicts as packet comments) to this file; null: off. */
    val capturePath: String? = null,
    val blockAnswer: BlockAnswer = BlockAnswer.NXDOMAIN,
    /** MTU of the tun, as given to `VpnService.Builder.setMtu`. */
    val mtu: Int = 1500,
    val uids: UidSource = UidSource.CALLBACK,
    /** 0: a seed from the OS (tests may fix it). */
    val randomSeed: Long = 0,
) {
    internal fun toJson(): String {
        val out = StringBuilder(256)
        out.append("{\"policy\":").append(policy.toJson())
        out.append(",\"dnsUpstreams\":").appendJsonList(dnsUpstreams)
        if (dnsFallbacks != null) out.append(",\"dnsFallbacks\":").appendJsonList(dnsFallbacks)
        out.append(",\"logAllowed\":").append(logAllowed)
        out.append(",\"payloadPeek\":").append(payloadPeek)
        if (capturePath != null) out.append(",\"capturePath\":").appendJson(capturePath)
        out.append(",\"blockAnswer\":").appendJson(blockAnswer.json)
        out.append(",\"mtu\":").append(mtu)
        out.append(",\"uids\":").appendJson(uids.json)
        // JSON has no unsigned longs; the engine reads the seed as u64, so send the unsigned value.
        out.append(",\"randomSeed\":").append(java.lang.Long.toUnsignedString(randomSeed))
        return out.append('}').toString()
    }
}

/** Appends [list] as a JSON array of strings. */
internal fun StringBuilder.appendJsonList(list: List<String>): StringBuilder {
    append('[')
    list.forEachIndexed { i, s ->
        if (i > 0) append(',')
        appendJson(s)
    }
    return append(']')
}

/** Appends [s] as a JSON string literal. */
internal fun StringBuilder.appendJson(s: String): StringBuilder {
    append('"')
    for (c in s) {
        when {
            c == '"' -> append("\\\"")
            c == '\\' -> append("\\\\")
            c == '\n' -> append("\\n")
            c == '\r' -> append("\\r")
            c == '\t' -> append("\\t")
            c < ' ' -> {
                append("\\u00")
                append(HEX[c.code shr 4]).append(HEX[c.code and 0xf])
            }
            else -> append(c)
        }
    }
    return append('"')
}

private const val HEX = "0123456789abcdef"
