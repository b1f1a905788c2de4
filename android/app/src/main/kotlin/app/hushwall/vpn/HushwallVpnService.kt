package app.hushwall.vpn

import android.app.Notification
import android.app.NotificationChannel
import android.app.NotificationManager
import android.app.PendingIntent
import android.content.ComponentName
import android.content.Context
import android.content.Intent
import android.content.pm.PackageManager
import android.content.pm.ServiceInfo
import android.net.ConnectivityManager
import android.net.LinkProperties
import android.net.Network
import android.net.NetworkCapabilities
import android.net.VpnService
import android.os.Build
import android.os.ParcelFileDescriptor
import android.os.SystemClock
import android.service.quicksettings.TileService
import android.util.Log
import app.hushwall.R
import app.hushwall.data.Apps
import app.hushwall.data.Lists
import app.hushwall.data.Prefs
import app.hushwall.data.Store
import app.hushwall.engine.Callbacks
import app.hushwall.engine.Engine
import app.hushwall.engine.EngineConfig
import app.hushwall.engine.PolicyConfig
import app.hushwall.engine.UidSource
import app.hushwall.ui.MainActivity
import java.io.IOException
import java.net.InetAddress
import java.net.InetSocketAddress

/**
 * The VPN: routes all IPv4 and IPv6 traffic of every other app through a tun and hands its fd to the engine.
 *
 * Lifecycle after AOSP's ToyVpn, with its known gaps closed: `startForeground` first (background-start rules may
 * otherwise stop the service before [onRevoke]); `START_STICKY`, and a null or `android.net.VpnService` intent
 * (restart, Always-on VPN) means connect; `establish()` is null-checked; [onRevoke] is handled; all
 * `PendingIntent`s are immutable; the app's own package is excluded from the tunnel (list downloads, and the
 * engine `protect()`s its upstream sockets). A new interface is established before the old one is closed.
 *
 * Threads: the main thread runs the lifecycle; [reader] drains [Engine.pollEvents] into the [Store] in batches
 * (it blocks in native code until events arrive, so an idle phone does not wake us); network callbacks run on
 * ConnectivityManager's thread and only touch the engine through its thread-safe calls.
 */
class HushwallVpnService : VpnService() {

    private var tun: ParcelFileDescriptor? = null
    @Volatile private var engine: Engine? = null
    private var reader: Thread? = null
    private var networkCallback: ConnectivityManager.NetworkCallback? = null
    @Volatile private var netType = NetType.OTHER
    private var bypassedNow: List<String> = emptyList()
    @Volatile private var lastNotified = 0L

    override fun onStartCommand(intent: Intent?, flags: Int, startId: Int): Int {
        when (intent?.action) {
            ACTION_DISCONNECT -> {
                Prefs(this).vpnWanted = false
                disconnect()
                stopSelf()
                return START_NOT_STICKY
            }
            ACTION_RULES_CHANGED, ACTION_POLICY_CHANGED -> {
                if (engine == null) {
                    // The VPN went down meanwhile: the new rules apply at the next start.
                    stopSelf(startId)
                    return START_NOT_STICKY
                }
                if (intent.action == ACTION_POLICY_CHANGED) applyPolicy()
                // Bypass changes need a new interface (the disallowed-apps set is fixed at establish()).
                else if (AppRules.bypassed(this) != bypassedNow) reconnect()
                else applyBlockedUids()
                return START_STICKY
            }
        }
        // ACTION_CONNECT, a null intent (sticky restart) or android.net.VpnService (Always-on VPN, boot).
        connect()
        return START_STICKY
    }

    override fun onRevoke() {
        // Another VPN took over or the user revoked consent: the interface is already gone. Not wanted any more:
        // start-on-boot must not fight the other VPN.
        Log.i(TAG, "VPN revoked")
        Prefs(this).vpnWanted = false
        disconnect()
        stopSelf()
    }

    override fun onDestroy() {
        disconnect()
        super.onDestroy()
    }

    @Synchronized
    private fun connect() {
        goForeground()
        if (engine != null) return
        Prefs(this).vpnWanted = true
        startTunnel()
    }

    /** New interface (e.g. the bypass set changed) and a new engine on it, then the old ones go. */
    @Synchronized
    private fun reconnect() {
        if (engine == null) return connect()
        startTunnel()
    }

    private fun startTunnel() {
        val bypass = AppRules.bypassed(this)
        val newTun = try {
            establishTun(bypass)
        } catch (e: Exception) {
            return fail(getString(R.string.error_establish, e.toString()))
        }
        // Not prepared (consent missing or revoked) or another always-on VPN owns the slot.
        if (newTun == null) return fail(getString(R.string.error_not_prepared))
        val started = try {
            startEngine(newTun)
        } catch (e: Exception) {
            closeQuietly(newTun)
            return fail(getString(R.string.engine_failed, e.message ?: e.toString()))
        }
        stopEngine()
        closeQuietly(tun)
        tun = newTun
        engine = started
        liveEngine = started
        bypassedNow = bypass
        running = true
        Prefs(this).lastError = ""
        watchNetwork()
        applyBlockedUids()
        startReader(started)
        updateNotification()
        refreshTile()
        Log.i(TAG, "VPN up (bypassing ${bypass.size} apps)")
    }

    /**
     * The one place the engine starts. It keeps working on a dup of the fd; [tun] stays ours. If the extra lists
     * are what fails (a list file the engine rejects), it starts with the built-in profile alone and says so.
     */
    private fun startEngine(tun: ParcelFileDescriptor): Engine {
        // Android 10+ answers "which app owns this flow" for the active VPN; Android 9 only via /proc/net.
        val uids = if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.Q) UidSource.CALLBACK else UidSource.PROC_NET
        val policy = Lists(this).policy()
        val callbacks = EngineCallbacks(this)
        val prefs = Prefs(this)
        val base = EngineConfig(
            policy = policy,
            mtu = MTU,
            uids = uids,
            dnsUpstream = DNS_UPSTREAM,
            payloadPeek = prefs.peek,
            capturePath = if (prefs.capture) captureFile(this).path else null,
        )
        return try {
            Engine.start(tun.fd, base, callbacks)
        } catch (e: IllegalArgumentException) {
            if (policy.lists.isEmpty()) throw e
            Log.w(TAG, "extra lists rejected, starting with the profile only", e)
            prefs.lastError = getString(R.string.error_lists_rejected, e.message ?: "")
            Engine.start(tun.fd, base.copy(policy = PolicyConfig(policy.profile)), callbacks)
        }
    }

    private class EngineCallbacks(private val service: HushwallVpnService) : Callbacks {
        private val connectivity = service.getSystemService(ConnectivityManager::class.java)

        override fun protect(fd: Int): Boolean = service.protect(fd)

        override fun uidOf(protocol: Int, srcAddr: ByteArray, srcPort: Int, dstAddr: ByteArray, dstPort: Int): Int {
            if (Build.VERSION.SDK_INT < Build.VERSION_CODES.Q) return -1
            return try {
                connectivity.getConnectionOwnerUid(
                    protocol,
                    InetSocketAddress(InetAddress.getByAddress(srcAddr), srcPort),
                    InetSocketAddress(InetAddress.getByAddress(dstAddr), dstPort),
                )
            } catch (e: Exception) {
                -1
            }
        }
    }

    private fun establishTun(bypass: List<String>): ParcelFileDescriptor? {
        val builder = Builder()
            .setSession(getString(R.string.app_name))
            .setMtu(MTU)
            .addAddress(TUN_IPV4, 32)
            .addAddress(TUN_IPV6, 128)
            .addRoute("0.0.0.0", 0)
            .addRoute("::", 0)
            .addDnsServer(DNS_IPV4)
            .addDnsServer(DNS_IPV6)
            .setBlocking(false)
            .setConfigureIntent(openAppIntent())
        if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.Q) {
            // Traffic is not metered by us: let apps see the underlying network's meteredness.
            builder.setMetered(false)
        }
        for (pkg in listOf(packageName) + bypass) {
            try {
                // Our own sockets (forwarded flows, DNS upstream, list downloads) and bypassed apps skip the tunnel.
                builder.addDisallowedApplication(pkg)
            } catch (e: PackageManager.NameNotFoundException) {
                Log.w(TAG, "cannot exclude $pkg (not installed)")
            }
        }
        // Until the network callback says otherwise: follow the default network.
        builder.setUnderlyingNetworks(null)
        return builder.establish()
    }

    /** The engine's blocked-UID set for the current network type (per-app Wi-Fi/mobile rules). */
    private fun applyBlockedUids() {
        val e = engine ?: return
        val uids = AppRules.blockedUids(this, netType)
        try {
            AppRules.apply(e, uids)
        } catch (ex: Exception) {
            Log.w(TAG, "setBlockedUids failed", ex)
        }
    }

    private fun applyPolicy() {
        val e = engine ?: return
        try {
            e.replacePolicy(Lists(this).policy())
        } catch (ex: Exception) {
            Log.w(TAG, "policy rejected; the old one stays", ex)
            Prefs(this).lastError = getString(R.string.error_lists_rejected, ex.message ?: "")
        }
    }

    /** Follows the default network: tells Android what we run over and re-applies per-network rules. */
    private fun watchNetwork() {
        if (networkCallback != null) return
        val connectivity = getSystemService(ConnectivityManager::class.java)
        val callback = object : ConnectivityManager.NetworkCallback() {
            override fun onCapabilitiesChanged(network: Network, caps: NetworkCapabilities) {
                // Our own package is outside the VPN, so our default network is the physical one.
                setUnderlyingNetworks(arrayOf(network))
                val type = when {
                    caps.hasTransport(NetworkCapabilities.TRANSPORT_WIFI) -> NetType.WIFI
                    caps.hasTransport(NetworkCapabilities.TRANSPORT_CELLULAR) -> NetType.MOBILE
                    else -> NetType.OTHER
                }
                if (type != netType) {
                    netType = type
                    applyBlockedUids()
                }
            }

            override fun onLinkPropertiesChanged(network: Network, lp: LinkProperties) {
                privateDnsActive = lp.isPrivateDnsActive
                // Families with a route, resolvers, Private DNS, MTU (issue 12): refuse what the network cannot carry.
                try {
                    engine?.networkChanged(networkInfoOf(lp))
                } catch (ex: RuntimeException) {
                    Log.w(TAG, "networkChanged failed", ex)
                }
            }

            override fun onLost(network: Network) {
                setUnderlyingNetworks(null)
            }
        }
        try {
            connectivity.registerDefaultNetworkCallback(callback)
            networkCallback = callback
        } catch (e: RuntimeException) {
            Log.w(TAG, "cannot watch the default network", e)
        }
    }

    private fun startReader(e: Engine) {
        val store = Store.get(this)
        val prefs = Prefs(this)
        val thread = Thread(EventReader(this, e, store, prefs), "hushwall-events")
        thread.isDaemon = true
        reader?.interrupt()
        reader = thread
        thread.start()
    }

    /** Drains the engine's events into storage, one transaction per batch, and prunes the log hourly. */
    private class EventReader(
        private val service: HushwallVpnService,
        private val engine: Engine,
        private val store: Store,
        private val prefs: Prefs,
    ) : Runnable {
        override fun run() {
            var nextPrune = 0L
            try {
                while (!Thread.currentThread().isInterrupted) {
                    val events = engine.pollEvents(max = 512, waitMillis = 5_000)
                    val blocks = events.filter { it.action == app.hushwall.engine.Action.BLOCK }
                    if (blocks.isNotEmpty()) {
                        store.insert(blocks, prefs.peek)
                        blockedSinceStart += blocks.size
                        lastBlockedHost = blocks.last().host ?: lastBlockedHost
                        service.onEvents()
                    }
                    // Upstream failures are not blocks: they go to logcat (a few per batch), not the block log.
                    events.asSequence()
                        .filter { it.action == app.hushwall.engine.Action.ERROR }
                        .take(ERRORS_LOGGED_PER_BATCH)
                        .forEach { Log.w(TAG, "${it.reason} ${it.host ?: it.dst}: ${it.error}") }
                    val now = SystemClock.elapsedRealtime()
                    if (now >= nextPrune) {
                        store.prune()
                        nextPrune = now + PRUNE_INTERVAL_MS
                    }
                    if (!engine.isRunning) {
                        service.onEngineEnded(engine)
                        return
                    }
                }
            } catch (e: IllegalStateException) {
                // The engine was stopped: the events still queued come back from stop() (see stopEngine).
            } catch (e: Exception) {
                Log.w(TAG, "event reader ended", e)
            }
        }
    }

    /** Live counts in the notification, at most every few seconds. */
    private fun onEvents() {
        val now = SystemClock.elapsedRealtime()
        if (now - lastNotified >= NOTIFY_INTERVAL_MS) {
            lastNotified = now
            updateNotification()
        }
    }

    private fun onEngineEnded(e: Engine) {
        val why = try {
            e.failure()
        } catch (ex: IllegalStateException) {
            null
        }
        Log.e(TAG, "engine ended: $why")
        Prefs(this).lastError = getString(R.string.engine_failed, why ?: "?")
    }

    private fun stopEngine() {
        val e = engine ?: return
        engine = null
        liveEngine = null
        reader?.interrupt()
        reader = null
        try {
            val result = e.stop()
            Store.get(this).insert(result.events.filter { it.action == app.hushwall.engine.Action.BLOCK }, Prefs(this).peek)
        } catch (ex: Exception) {
            Log.w(TAG, "engine stop failed", ex)
        }
    }

    @Synchronized
    private fun disconnect() {
        networkCallback?.let {
            try {
                getSystemService(ConnectivityManager::class.java).unregisterNetworkCallback(it)
            } catch (e: RuntimeException) {
                Log.w(TAG, "unregister failed", e)
            }
        }
        networkCallback = null
        stopEngine()
        closeQuietly(tun)
        tun = null
        running = false
        blockedSinceStart = 0
        stopForeground(STOP_FOREGROUND_REMOVE)
        refreshTile()
    }

    private fun fail(message: String) {
        Log.e(TAG, message)
        Prefs(this).lastError = message
        disconnect()
        stopSelf()
    }

    private fun goForeground() {
        val notification = buildNotification()
        if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.UPSIDE_DOWN_CAKE) {
            startForeground(NOTIFICATION_ID, notification, ServiceInfo.FOREGROUND_SERVICE_TYPE_SPECIAL_USE)
        } else {
            startForeground(NOTIFICATION_ID, notification)
        }
    }

    private fun updateNotification() {
        if (engine == null) return
        getSystemService(NotificationManager::class.java).notify(NOTIFICATION_ID, buildNotification())
    }

    private fun buildNotification(): Notification {
        val manager = getSystemService(NotificationManager::class.java)
        val channel = NotificationChannel(CHANNEL_ID, getString(R.string.channel_name), NotificationManager.IMPORTANCE_LOW)
        channel.description = getString(R.string.channel_description)
        channel.setShowBadge(false)
        manager.createNotificationChannel(channel)
        val stop = PendingIntent.getService(
            this, 0, Intent(this, HushwallVpnService::class.java).setAction(ACTION_DISCONNECT),
            PendingIntent.FLAG_IMMUTABLE or PendingIntent.FLAG_UPDATE_CURRENT,
        )
        val today = try {
            Store.get(this).countSince(Store.startOfToday())
        } catch (e: RuntimeException) {
            0
        }
        val last = lastBlockedHost
        val text = if (last != null) getString(R.string.notification_counts_last, today, last)
        else getString(R.string.notification_counts, today)
        return Notification.Builder(this, CHANNEL_ID)
            .setSmallIcon(R.drawable.ic_notification)
            .setContentTitle(getString(R.string.notification_title))
            .setContentText(text)
            .setContentIntent(openAppIntent())
            .setOngoing(true)
            .setOnlyAlertOnce(true)
            .setShowWhen(false)
            .setCategory(Notification.CATEGORY_SERVICE)
            .addAction(Notification.Action.Builder(null, getString(R.string.notification_stop), stop).build())
            .build()
    }

    private fun openAppIntent(): PendingIntent = PendingIntent.getActivity(
        this, 0, Intent(this, MainActivity::class.java), PendingIntent.FLAG_IMMUTABLE,
    )

    private fun refreshTile() {
        try {
            TileService.requestListeningState(this, ComponentName(this, HushwallTileService::class.java))
        } catch (e: RuntimeException) {
            // No Quick Settings on this build; nothing to refresh.
        }
    }

    companion object {
        /** Where the packet capture goes (internal storage; exported through the document picker). */
        fun captureFile(context: android.content.Context): java.io.File = java.io.File(context.filesDir, "capture.pcapng")

        private const val TAG = "HushwallVpn"
        const val ACTION_CONNECT = "app.hushwall.action.CONNECT"
        const val ACTION_DISCONNECT = "app.hushwall.action.DISCONNECT"
        /** The per-app rules changed: re-apply blocked UIDs (or re-establish if the bypass set changed). */
        const val ACTION_RULES_CHANGED = "app.hushwall.action.RULES_CHANGED"
        /** The profile or the extra lists changed: replace the engine's policy. */
        const val ACTION_POLICY_CHANGED = "app.hushwall.action.POLICY_CHANGED"

        /** Same as the usual Wi-Fi/mobile MTU: what the engine forwards rarely needs fragmenting upstream. */
        const val MTU = 1500
        /** The tun's own addresses and the DNS server apps are given (the engine answers port 53 anyway). */
        const val TUN_IPV4 = "10.111.222.1"
        const val TUN_IPV6 = "fd00:6877:6c6c::1"
        const val DNS_IPV4 = "10.111.222.53"
        const val DNS_IPV6 = "fd00:6877:6c6c::53"
        /** Where allowed queries go (Quad9: filtering-free, no logging of IPs per its policy). */
        const val DNS_UPSTREAM = "9.9.9.9:53"

        private const val CHANNEL_ID = "vpn"
        private const val NOTIFICATION_ID = 1
        private const val NOTIFY_INTERVAL_MS = 5_000L
        private const val PRUNE_INTERVAL_MS = 60L * 60 * 1000
        /** Upstream failures written to logcat per event batch; the rest only count (Counters.upstreamErrors). */
        private const val ERRORS_LOGGED_PER_BATCH = 5

        /** Whether the VPN is up, for the screens and the tile (same process). */
        @Volatile
        @JvmStatic
        var running: Boolean = false
            private set

        /** Blocks since the VPN started (the notification's and Home's live count). */
        @Volatile
        @JvmStatic
        var blockedSinceStart: Long = 0
            private set

        @Volatile
        @JvmStatic
        var lastBlockedHost: String? = null
            private set

        /** From the default network's link properties while the VPN runs (null: unknown). */
        @Volatile
        @JvmStatic
        var privateDnsActive: Boolean? = null
            private set

        @Volatile private var liveEngine: Engine? = null

        /**
         * Hands [policy] to the running engine, if any; throws (and the engine keeps its old policy) if a list
         * is bad. With the VPN off there is nothing to ask: the lists are checked at the next start.
         */
        fun replacePolicyIfRunning(policy: PolicyConfig) {
            val e = liveEngine ?: return
            try {
                e.replacePolicy(policy)
            } catch (ex: IllegalStateException) {
                // Stopped meanwhile: same as off.
            }
        }

        /** Starts the VPN (consent must already be given: see [VpnService.prepare]). */
        fun start(context: Context) {
            val intent = Intent(context, HushwallVpnService::class.java).setAction(ACTION_CONNECT)
            context.startForegroundService(intent)
        }

        fun stop(context: Context) {
            context.startService(Intent(context, HushwallVpnService::class.java).setAction(ACTION_DISCONNECT))
        }

        /** Tells a running VPN that rules or lists changed (no-op when it is off). */
        fun notifyChanged(context: Context, action: String) {
            if (!running) return
            try {
                context.startService(Intent(context, HushwallVpnService::class.java).setAction(action))
            } catch (e: IllegalStateException) {
                Log.w(TAG, "cannot reach the VPN service", e)
            }
        }

        private fun closeQuietly(pfd: ParcelFileDescriptor?) {
            try {
                pfd?.close()
            } catch (e: IOException) {
                Log.w(TAG, "close failed", e)
            }
        }
    }
}
