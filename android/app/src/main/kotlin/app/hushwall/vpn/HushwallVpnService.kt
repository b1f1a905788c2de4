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
import android.net.IpPrefix
import android.net.LinkProperties
import android.net.Network
import android.net.NetworkCapabilities
import android.net.VpnService
import android.os.Build
import android.os.Handler
import android.os.HandlerThread
import android.os.ParcelFileDescriptor
import android.os.SystemClock
import android.service.quicksettings.TileService
import android.util.Log
import app.hushwall.R
import app.hushwall.data.Lists
import app.hushwall.data.Prefs
import app.hushwall.data.Resolvers
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
 * Threads: the main thread only takes commands and hands them to [worker], one thread that does all lifecycle
 * work in order (establish, list reading, policy compile, engine start/stop), so a big list never blocks the
 * main looper. [reader] drains [Engine.pollEvents] into the [Store] in batches; it blocks in native code until
 * events arrive or the engine stops, so an idle phone sees no wake-ups from us. Network callbacks run on
 * ConnectivityManager's thread and hand their work to [worker].
 *
 * If the engine ends on its own, it is restarted with bounded backoff; if that keeps failing the VPN is torn
 * down and a notification says why: never a tunnel that looks up but carries nothing.
 */
class HushwallVpnService : VpnService() {

    // Owned by the worker thread.
    private var tun: ParcelFileDescriptor? = null
    @Volatile private var engine: Engine? = null
    private var reader: Thread? = null
    private var networkCallback: ConnectivityManager.NetworkCallback? = null
    @Volatile private var netType = NetType.OTHER
    @Volatile private var network: Network? = null
    @Volatile private var linkProperties: LinkProperties? = null
    private var bypassedNow: List<String> = emptyList()
    private var lanExcludedNow: List<Prefix> = emptyList()
    @Volatile private var lastNotified = 0L
    private var engineStartedAt = 0L
    private var restartAttempts = 0
    private val pendingRestart = Runnable { restartAfterFailure() }

    private lateinit var workerThread: HandlerThread
    private lateinit var worker: Handler

    override fun onCreate() {
        super.onCreate()
        workerThread = HandlerThread("hushwall-lifecycle")
        workerThread.start()
        worker = Handler(workerThread.looper)
    }

    override fun onStartCommand(intent: Intent?, flags: Int, startId: Int): Int {
        when (intent?.action) {
            ACTION_DISCONNECT -> {
                Prefs(this).vpnWanted = false
                worker.post {
                    disconnect()
                    stopSelf()
                }
                return START_NOT_STICKY
            }
            ACTION_RULES_CHANGED, ACTION_POLICY_CHANGED -> {
                val action = intent.action
                worker.post {
                    when {
                        // The VPN went down meanwhile: the new rules apply at the next start.
                        engine == null -> Unit
                        action == ACTION_POLICY_CHANGED -> applyPolicy()
                        // Bypass changes need a new interface (the disallowed-apps set is fixed at establish()).
                        AppRules.bypassed(this) != bypassedNow -> startTunnel()
                        else -> applyBlockedUids()
                    }
                    policyGeneration++
                }
                return START_STICKY
            }
        }
        // ACTION_CONNECT, a null intent (sticky restart) or android.net.VpnService (Always-on VPN, boot).
        val consent = try {
            prepare(this) == null
        } catch (e: RuntimeException) {
            false
        }
        if (intent == null && !Prefs(this).vpnWanted) {
            // Restarted after a kill, but the user had stopped it meanwhile.
            stopSelf(startId)
            return START_NOT_STICKY
        }
        val foreground = goForeground()
        if (foreground != null && !consent) {
            // Android refused the foreground start (API 31+ from the background) and we may not run a VPN:
            // nothing can be done without the user; say why and stop without a crash loop.
            Log.e(TAG, "cannot start: $foreground")
            Prefs(this).lastError = getString(R.string.error_background_start, foreground)
            stopSelf(startId)
            return START_NOT_STICKY
        }
        if (foreground != null) Log.w(TAG, "foreground start refused ($foreground); consent holds, going on")
        worker.post { connect() }
        return START_STICKY
    }

    override fun onRevoke() {
        // Another VPN took over or the user revoked consent: the interface is already gone. Not wanted any more:
        // start-on-boot must not fight the other VPN.
        Log.i(TAG, "VPN revoked")
        Prefs(this).vpnWanted = false
        worker.post {
            disconnect()
            stopSelf()
        }
    }

    override fun onDestroy() {
        worker.post { disconnect() }
        workerThread.quitSafely()
        super.onDestroy()
    }

    private fun connect() {
        if (engine != null) return
        Prefs(this).vpnWanted = true
        worker.removeCallbacks(pendingRestart)
        restarting = false
        restartAttempts = 0
        startTunnel()
    }

    /** On the worker: a new interface and a new engine on it, then the old ones go. False if it failed. */
    private fun startTunnel(restarting: Boolean = false): Boolean {
        val bypass = AppRules.bypassed(this)
        val lan = lanExclusions()
        val newTun = try {
            establishTun(bypass, lan)
        } catch (e: Exception) {
            return fail(getString(R.string.error_establish, e.toString()), restarting)
        }
        // Not prepared (consent missing or revoked) or another always-on VPN owns the slot.
        if (newTun == null) return fail(getString(R.string.error_not_prepared), restarting)
        val started = try {
            startEngine(newTun)
        } catch (e: Exception) {
            closeQuietly(newTun)
            return fail(getString(R.string.engine_failed, e.message ?: e.toString()), restarting)
        } catch (e: LinkageError) {
            // libhushwall.so missing or not loadable on this phone: show it instead of crashing.
            closeQuietly(newTun)
            Log.e(TAG, "native library", e)
            return fail(getString(R.string.error_native, e.toString()), false)
        }
        stopEngine()
        // The old engine has stopped and closed its capture file: only the newest capture stays (the new engine's,
        // or with capture off the last one, for export).
        CaptureFiles.removeAllBut(this, CaptureFiles.latest(this))
        closeQuietly(tun)
        tun = newTun
        engine = started
        liveEngine = started
        engineStartedAt = SystemClock.elapsedRealtime()
        bypassedNow = bypass
        lanExcludedNow = lan
        Prefs(this).lastError = ""
        watchNetwork()
        // A restarted engine starts out assuming a dual-stack network: tell it what the current one is.
        linkProperties?.let { lp ->
            try {
                started.networkChanged(networkInfoOf(lp))
            } catch (ex: RuntimeException) {
                Log.w(TAG, "networkChanged failed", ex)
            }
        }
        applyBlockedUids()
        startReader(started)
        running = true
        updateNotification()
        refreshTile()
        Log.i(TAG, "VPN up (bypassing ${bypass.size} apps)")
        return true
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
        val capture = if (prefs.capture) CaptureFiles.next(this) else null
        val base = EngineConfig(
            policy = policy,
            mtu = MTU,
            uids = uids,
            // The network's own resolvers from the start (the callback replaces them when the network changes),
            // then the user's fallbacks, then a public resolver that does not filter.
            dnsUpstreams = networkResolvers(),
            dnsFallbacks = prefs.dnsFallbacks + Resolvers.PUBLIC_DEFAULT,
            payloadPeek = prefs.peek,
            // A new file per engine: the engine it replaces may still write to its own until it has stopped.
            capturePath = capture?.path,
        )
        return try {
            try {
                Engine.start(tun.fd, base, callbacks)
            } catch (e: IllegalArgumentException) {
                if (policy.lists.isEmpty()) throw e
                Log.w(TAG, "extra lists rejected, starting with the profile only", e)
                prefs.lastError = getString(R.string.error_lists_rejected, e.message ?: "")
                Engine.start(tun.fd, base.copy(policy = policy.copy(lists = emptyList())), callbacks)
            }
        } catch (e: Throwable) {
            // No engine writes to it: the running engine's capture stays the newest.
            capture?.delete()
            throw e
        }
    }

    /** The default network's resolvers (port 53), as the callback reports them later; empty if not known. */
    private fun networkResolvers(): List<String> {
        val lp = linkProperties ?: try {
            val cm = getSystemService(ConnectivityManager::class.java)
            cm.activeNetwork?.let { cm.getLinkProperties(it) }
        } catch (e: RuntimeException) {
            null
        }
        return lp?.dnsServers.orEmpty().mapNotNull { Resolvers.of(it) }
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

    private fun establishTun(bypass: List<String>, lan: List<Prefix>): ParcelFileDescriptor? {
        val builder = Builder()
            .setSession(getString(R.string.app_name))
            .setMtu(MTU)
            .addAddress(address(TUN_IPV4), 32)
            .addAddress(address(TUN_IPV6), 128)
            .addDnsServer(address(DNS_IPV4))
            .addDnsServer(address(DNS_IPV6))
            .setBlocking(false)
            .setConfigureIntent(openAppIntent())
        if (lan.isEmpty()) {
            builder.addRoute(address("0.0.0.0"), 0).addRoute(address("::"), 0)
        } else if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.TIRAMISU) {
            builder.addRoute(address("0.0.0.0"), 0).addRoute(address("::"), 0)
            for (p in lan) builder.excludeRoute(IpPrefix(InetAddress.getByAddress(p.address), p.length))
        } else {
            for (p in Routes.complement(lan, ipv6 = false) + Routes.complement(lan, ipv6 = true)) {
                builder.addRoute(InetAddress.getByAddress(p.address), p.length)
            }
        }
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
        builder.setUnderlyingNetworks(network?.let { arrayOf(it) })
        return builder.establish()
    }

    /**
     * With "Allow LAN devices" on: multicast, broadcast and the current network's own subnets stay outside the
     * tunnel (printers, casting, NAS). Link-local IPv6 never enters a VPN anyway.
     */
    private fun lanExclusions(): List<Prefix> {
        if (!Prefs(this).allowLan) return emptyList()
        val lp = linkProperties ?: try {
            val cm = getSystemService(ConnectivityManager::class.java)
            cm.activeNetwork?.let { cm.getLinkProperties(it) }
        } catch (e: RuntimeException) {
            null
        }
        val local = lp?.linkAddresses.orEmpty()
            .filter { !it.address.isLinkLocalAddress && !it.address.isLoopbackAddress }
            .map { Prefix(it.address.address, it.prefixLength) }
        return (Routes.LAN_ALWAYS + local).distinct()
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
                val type = when {
                    caps.hasTransport(NetworkCapabilities.TRANSPORT_WIFI) -> NetType.WIFI
                    caps.hasTransport(NetworkCapabilities.TRANSPORT_CELLULAR) -> NetType.MOBILE
                    else -> NetType.OTHER
                }
                worker.post { onNetwork(network, type) }
            }

            override fun onLinkPropertiesChanged(network: Network, lp: LinkProperties) {
                worker.post { onLinkProperties(lp) }
            }

            override fun onLost(network: Network) {
                worker.post { onNetworkLost(network) }
            }
        }
        try {
            connectivity.registerDefaultNetworkCallback(callback)
            networkCallback = callback
        } catch (e: RuntimeException) {
            Log.w(TAG, "cannot watch the default network", e)
        }
    }

    /** On the worker: the default network or its type changed (capability updates arrive often: act on changes). */
    private fun onNetwork(net: Network, type: NetType) {
        if (engine == null) return
        if (net != network) {
            // Our own package is outside the VPN, so our default network is the physical one.
            network = net
            setUnderlyingNetworks(arrayOf(net))
        }
        if (type != netType) {
            netType = type
            applyBlockedUids()
        }
    }

    /** On the worker: Private DNS and local subnets of the default network. */
    private fun onLinkProperties(lp: LinkProperties) {
        if (engine == null) return
        linkProperties = lp
        val dns = lp.isPrivateDnsActive
        val changed = dns != privateDnsActive
        privateDnsActive = dns
        privateDnsServer = if (dns) lp.privateDnsServerName else null
        if (changed) updateNotification()
        // Families with a route, resolvers, Private DNS, MTU (issue 12): refuse what the network cannot carry.
        try {
            engine?.networkChanged(networkInfoOf(lp))
        } catch (ex: RuntimeException) {
            Log.w(TAG, "networkChanged failed", ex)
        }
        // New local subnets (another Wi-Fi): the LAN exclusions are fixed at establish(), so re-establish.
        if (Prefs(this).allowLan && lanExclusions() != lanExcludedNow) startTunnel()
    }

    private fun onNetworkLost(net: Network) {
        if (net != network && network != null) return
        network = null
        linkProperties = null
        privateDnsActive = null
        privateDnsServer = null
        if (engine == null) return
        setUnderlyingNetworks(null)
        updateNotification()
    }

    private fun startReader(e: Engine) {
        val thread = Thread(EventReader(this, e, Store.get(this), Prefs(this)), "hushwall-events")
        thread.isDaemon = true
        reader = thread
        thread.start()
    }

    /**
     * Drains the engine's events into storage, one transaction per batch, pruning the log at most hourly. Blocks
     * until events arrive or the engine stops (no timed wake-ups).
     */
    private class EventReader(
        private val service: HushwallVpnService,
        private val engine: Engine,
        private val store: Store,
        private val prefs: Prefs,
    ) : Runnable {
        override fun run() {
            var nextPrune = 0L
            try {
                while (true) {
                    val events = engine.pollEvents(max = 512, waitMillis = WAIT_FOREVER_MS)
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
                    // An empty batch means the queue closed: stopped by us, or the engine ended on its own.
                    if (events.isEmpty() || !engine.isRunning) break
                }
            } catch (e: IllegalStateException) {
                // Stopped by the service (its stop() returns the events still queued).
            } catch (e: Exception) {
                Log.w(TAG, "event reader ended", e)
            }
            service.worker.post { service.onEngineEnded(engine) }
        }
    }

    /** Live counts in the notification, at most every few seconds. */
    private fun onEvents() {
        val now = SystemClock.elapsedRealtime()
        if (now - lastNotified >= NOTIFY_INTERVAL_MS) {
            lastNotified = now
            worker.post { updateNotification() }
        }
    }

    /**
     * On the worker, when a reader ends. Stopped by us (not the current engine any more): nothing to say. Ended
     * on its own: restart with backoff; an engine that ran for a while starts a fresh series of attempts.
     */
    private fun onEngineEnded(e: Engine) {
        if (e !== engine) return
        val why = try {
            e.failure()
        } catch (ex: IllegalStateException) {
            null
        } ?: "stopped"
        Log.e(TAG, "engine ended: $why")
        stopEngine()
        lastFailure = why
        if (SystemClock.elapsedRealtime() - engineStartedAt >= STABLE_MS) restartAttempts = 0
        scheduleRestart()
    }

    /** Keeps the tun (nothing leaks while we retry) and tries again after 1, 2, 4… × [restartBackoffMs]. */
    private fun scheduleRestart() {
        if (restartAttempts >= MAX_RESTARTS) return giveUp()
        val delay = restartBackoffMs shl restartAttempts
        restartAttempts++
        restarting = true
        updateNotification()
        Log.w(TAG, "restarting the engine in $delay ms (attempt $restartAttempts of $MAX_RESTARTS)")
        worker.postDelayed(pendingRestart, delay)
    }

    private fun restartAfterFailure() {
        if (tun == null) return // stopped meanwhile
        if (startTunnel(restarting = true)) {
            restarting = false
            Log.i(TAG, "engine restarted")
        }
    }

    /** The engine keeps failing: the VPN goes down (apps get the normal network back) and the user is told. */
    private fun giveUp() {
        val message = getString(R.string.engine_gave_up, lastFailure ?: "?")
        Log.e(TAG, message)
        Prefs(this).lastError = message
        disconnect()
        notifyStopped(message)
        stopSelf()
    }

    private fun stopEngine() {
        val e = engine ?: return
        engine = null
        liveEngine = null
        reader = null
        try {
            val result = e.stop()
            Store.get(this).insert(result.events.filter { it.action == app.hushwall.engine.Action.BLOCK }, Prefs(this).peek)
        } catch (ex: Exception) {
            Log.w(TAG, "engine stop failed", ex)
        }
    }

    /** On the worker: everything down, nothing left running. */
    private fun disconnect() {
        worker.removeCallbacks(pendingRestart)
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
        network = null
        linkProperties = null
        running = false
        restarting = false
        blockedSinceStart = 0
        privateDnsActive = null
        privateDnsServer = null
        stopForeground(STOP_FOREGROUND_REMOVE)
        refreshTile()
    }

    /** A start failed: while restarting, the next attempt follows; otherwise the VPN goes down and Home says why. */
    private fun fail(message: String, restarting: Boolean): Boolean {
        Log.e(TAG, message)
        if (restarting) {
            lastFailure = message
            scheduleRestart()
            return false
        }
        Prefs(this).lastError = message
        disconnect()
        stopSelf()
        return false
    }

    /** Null when the service is in the foreground, else why Android refused (API 31+ background start rules). */
    private fun goForeground(): String? {
        val notification = buildNotification()
        return try {
            if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.UPSIDE_DOWN_CAKE) {
                startForeground(NOTIFICATION_ID, notification, ServiceInfo.FOREGROUND_SERVICE_TYPE_SPECIAL_USE)
            } else {
                startForeground(NOTIFICATION_ID, notification)
            }
            null
        } catch (e: IllegalStateException) {
            // ForegroundServiceStartNotAllowedException (API 31+) is an IllegalStateException.
            e.toString()
        } catch (e: SecurityException) {
            e.toString()
        }
    }

    private fun updateNotification() {
        if (engine == null && !restarting) return
        try {
            getSystemService(NotificationManager::class.java).notify(NOTIFICATION_ID, buildNotification())
        } catch (e: RuntimeException) {
            Log.w(TAG, "notification", e)
        }
    }

    private fun createChannel(manager: NotificationManager) {
        val channel = NotificationChannel(CHANNEL_ID, getString(R.string.channel_name), NotificationManager.IMPORTANCE_LOW)
        channel.description = getString(R.string.channel_description)
        channel.setShowBadge(false)
        manager.createNotificationChannel(channel)
    }

    private fun buildNotification(): Notification {
        val manager = getSystemService(NotificationManager::class.java)
        createChannel(manager)
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
        val counts = if (last != null) getString(R.string.notification_counts_last, today, last)
        else getString(R.string.notification_counts, today)
        val builder = Notification.Builder(this, CHANNEL_ID)
            .setSmallIcon(R.drawable.ic_notification)
            .setContentIntent(openAppIntent())
            .setOngoing(true)
            .setOnlyAlertOnce(true)
            .setShowWhen(false)
            .setCategory(Notification.CATEGORY_SERVICE)
        when {
            restarting -> builder.setContentTitle(getString(R.string.notification_restarting)).setContentText(lastFailure ?: "")
            privateDnsActive == true -> {
                val text = getString(R.string.notification_private_dns, privateDnsServer ?: getString(R.string.private_dns_automatic))
                builder.setContentTitle(getString(R.string.notification_title_private_dns))
                    .setContentText(text)
                    .setStyle(Notification.BigTextStyle().bigText("$text\n$counts"))
                    .addAction(Notification.Action.Builder(null, getString(R.string.private_dns_settings), privateDnsSettingsIntent()).build())
            }
            else -> builder.setContentTitle(getString(R.string.notification_title)).setContentText(counts)
        }
        return builder.addAction(Notification.Action.Builder(null, getString(R.string.notification_stop), stop).build()).build()
    }

    /** After giving up: a separate, dismissable notification that says why the VPN went down. */
    private fun notifyStopped(message: String) {
        try {
            val manager = getSystemService(NotificationManager::class.java)
            createChannel(manager)
            val n = Notification.Builder(this, CHANNEL_ID)
                .setSmallIcon(R.drawable.ic_notification)
                .setContentTitle(getString(R.string.notification_stopped))
                .setContentText(message)
                .setStyle(Notification.BigTextStyle().bigText(message))
                .setContentIntent(openAppIntent())
                .setAutoCancel(true)
                .build()
            manager.notify(STOPPED_NOTIFICATION_ID, n)
        } catch (e: RuntimeException) {
            Log.w(TAG, "notification", e)
        }
    }

    private fun privateDnsSettingsIntent(): PendingIntent = PendingIntent.getActivity(
        this, 2, Intent(this, MainActivity::class.java).setAction(MainActivity.ACTION_PRIVATE_DNS), PendingIntent.FLAG_IMMUTABLE,
    )

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
        /**
         * The packet capture to export: the newest engine's file (internal storage; exported through the document
         * picker). It may not exist.
         */
        fun captureFile(context: android.content.Context): java.io.File =
            CaptureFiles.latest(context) ?: java.io.File(CaptureFiles.dir(context), "none.pcapng")

        private const val TAG = "HushwallVpn"
        const val ACTION_CONNECT = "app.hushwall.action.CONNECT"
        const val ACTION_DISCONNECT = "app.hushwall.action.DISCONNECT"
        /** The per-app rules changed: re-apply blocked UIDs (or re-establish if the bypass set changed). */
        const val ACTION_RULES_CHANGED = "app.hushwall.action.RULES_CHANGED"
        /** The profile or the extra lists changed: replace the engine's policy. */
        const val ACTION_POLICY_CHANGED = "app.hushwall.action.POLICY_CHANGED"

        /**
         * The tun MTU. TCP ends in the engine, so the tun hop's MTU is ours: 9000 halves the CPU per GB of 1500
         * (BENCHMARKS.md, "The app's tun MTU"). UDP that must not be fragmented and exceeds the network's MTU is
         * answered with ICMP "fragmentation needed" / "packet too big" naming the network's MTU, as a router would.
         */
        const val MTU = 9000
        /** The tun's own addresses and the DNS server apps are given (the engine answers port 53 anyway). */
        const val TUN_IPV4 = "10.111.222.1"
        const val TUN_IPV6 = "fd00:6877:6c6c::1"
        const val DNS_IPV4 = "10.111.222.53"
        const val DNS_IPV6 = "fd00:6877:6c6c::53"
        private const val CHANNEL_ID = "vpn"
        /** The ongoing status notification; [STOPPED_NOTIFICATION_ID] says why the VPN went down. */
        const val NOTIFICATION_ID = 1
        const val STOPPED_NOTIFICATION_ID = 2
        /** Engine restarts after it ended on its own, before the VPN is torn down. */
        const val MAX_RESTARTS = 3
        /** An engine that ran this long starts a fresh series of restarts. */
        private const val STABLE_MS = 60_000L
        /** `pollEvents` without a timeout: the reader wakes only for events or the engine's end. */
        private const val WAIT_FOREVER_MS = Long.MAX_VALUE
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

        /** The name of the network's Private DNS server while [privateDnsActive] (null in automatic mode). */
        @Volatile
        @JvmStatic
        var privateDnsServer: String? = null
            private set

        /** The engine ended on its own and is being restarted. */
        @Volatile
        @JvmStatic
        var restarting: Boolean = false
            private set

        @Volatile private var lastFailure: String? = null

        /** First restart delay (doubles per attempt); a field so the host tests need not wait seconds. */
        @Volatile internal var restartBackoffMs = 1_000L

        /** Incremented by the worker after each rules/policy change it applied (tests wait for it). */
        @Volatile internal var policyGeneration = 0L

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

        /** A numeric address literal (getByName does no lookup for one). */
        private fun address(literal: String): InetAddress = InetAddress.getByName(literal)

        private fun closeQuietly(pfd: ParcelFileDescriptor?) {
            try {
                pfd?.close()
            } catch (e: IOException) {
                Log.w(TAG, "close failed", e)
            }
        }
    }
}
