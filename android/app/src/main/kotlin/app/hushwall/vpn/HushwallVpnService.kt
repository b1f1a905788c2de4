package app.hushwall.vpn

import android.app.Notification
import android.app.NotificationChannel
import android.app.NotificationManager
import android.app.PendingIntent
import android.content.Context
import android.content.Intent
import android.content.pm.PackageManager
import android.net.ConnectivityManager
import android.net.VpnService
import android.os.Build
import android.os.ParcelFileDescriptor
import android.util.Log
import app.hushwall.R
import app.hushwall.engine.Callbacks
import app.hushwall.engine.Engine
import app.hushwall.engine.EngineConfig
import app.hushwall.engine.UidSource
import app.hushwall.ui.MainActivity
import java.io.IOException
import java.net.InetAddress
import java.net.InetSocketAddress

/**
 * The VPN: routes all IPv4 and IPv6 traffic of every other app through a tun and hands its fd to the engine.
 *
 * Follows AOSP's ToyVpn: `startForeground` before anything else (otherwise background-start rules may stop
 * the service before `onRevoke`), `START_STICKY` so Android restarts it (and Always-on VPN starts it with a
 * null or `android.net.VpnService` intent, handled like [ACTION_CONNECT]), and the new interface is
 * established before the old one is closed. Unlike ToyVpn it null-checks `establish()`, overrides
 * [onRevoke], uses immutable `PendingIntent`s and leaves all packet I/O to the native engine.
 *
 * Skeleton: network changes (`setUnderlyingNetworks`), start on boot, live counts in the notification and the
 * Quick Settings tile come with the app's screens (issue 5).
 */
class HushwallVpnService : VpnService() {

    private var tun: ParcelFileDescriptor? = null
    private var engine: Engine? = null

    override fun onStartCommand(intent: Intent?, flags: Int, startId: Int): Int {
        if (intent?.action == ACTION_DISCONNECT) {
            disconnect()
            stopSelf()
            return START_NOT_STICKY
        }
        connect()
        return START_STICKY
    }

    override fun onRevoke() {
        // Another VPN took over or the user revoked consent: the interface is already gone.
        Log.i(TAG, "VPN revoked")
        disconnect()
        stopSelf()
    }

    override fun onDestroy() {
        disconnect()
        super.onDestroy()
    }

    @Synchronized
    private fun connect() {
        startForeground(NOTIFICATION_ID, buildNotification())
        if (engine != null) return
        val newTun = try {
            establishTun()
        } catch (e: Exception) {
            fail("could not establish the VPN interface: $e")
            return
        }
        if (newTun == null) {
            // Not prepared (consent missing or revoked) or another always-on VPN owns the slot.
            fail("the VPN is not prepared (VpnService.prepare): open Hushwall and press Start")
            return
        }
        val started = try {
            startEngine(newTun)
        } catch (e: Exception) {
            closeQuietly(newTun)
            fail("engine did not start: $e")
            return
        }
        val oldTun = tun
        tun = newTun
        engine = started
        closeQuietly(oldTun)
        running = true
        Log.i(TAG, "VPN up")
    }

    /**
     * The one call into the engine (`app.hushwall.engine`, owned by the JNI work). The engine keeps working
     * on a dup of the fd; [tun] stays ours and is closed in [disconnect].
     */
    private fun startEngine(tun: ParcelFileDescriptor): Engine {
        // Android 10+ answers "which app owns this flow" for the active VPN; Android 9 only via /proc/net.
        val uids = if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.Q) UidSource.CALLBACK else UidSource.PROC_NET
        val connectivity = getSystemService(ConnectivityManager::class.java)
        return Engine.start(tun.fd, EngineConfig(mtu = MTU, uids = uids), object : Callbacks {
            override fun protect(fd: Int): Boolean = this@HushwallVpnService.protect(fd)

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
        })
    }

    private fun establishTun(): ParcelFileDescriptor? {
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
        try {
            // Our own sockets (forwarded flows, DNS upstream, list downloads) bypass the tunnel; the engine
            // also protect()s each upstream socket.
            builder.addDisallowedApplication(packageName)
        } catch (e: PackageManager.NameNotFoundException) {
            Log.w(TAG, "cannot exclude own package", e)
        }
        return builder.establish()
    }

    @Synchronized
    private fun disconnect() {
        val e = engine
        engine = null
        if (e != null) {
            try {
                e.stop()
            } catch (ex: Exception) {
                Log.w(TAG, "engine stop failed", ex)
            }
            e.close()
        }
        closeQuietly(tun)
        tun = null
        running = false
        stopForeground(STOP_FOREGROUND_REMOVE)
    }

    private fun fail(message: String) {
        Log.e(TAG, message)
        disconnect()
        stopSelf()
    }

    private fun buildNotification(): Notification {
        val manager = getSystemService(NotificationManager::class.java)
        val channel = NotificationChannel(CHANNEL_ID, getString(R.string.channel_name), NotificationManager.IMPORTANCE_LOW)
        channel.description = getString(R.string.channel_description)
        manager.createNotificationChannel(channel)
        val stop = PendingIntent.getService(
            this, 0, Intent(this, HushwallVpnService::class.java).setAction(ACTION_DISCONNECT),
            PendingIntent.FLAG_IMMUTABLE or PendingIntent.FLAG_UPDATE_CURRENT,
        )
        return Notification.Builder(this, CHANNEL_ID)
            .setSmallIcon(R.drawable.ic_notification)
            .setContentTitle(getString(R.string.notification_title))
            .setContentText(getString(R.string.notification_text))
            .setContentIntent(openAppIntent())
            .setOngoing(true)
            .setShowWhen(false)
            .addAction(Notification.Action.Builder(null, getString(R.string.notification_stop), stop).build())
            .build()
    }

    private fun openAppIntent(): PendingIntent = PendingIntent.getActivity(
        this, 0, Intent(this, MainActivity::class.java), PendingIntent.FLAG_IMMUTABLE,
    )

    companion object {
        private const val TAG = "HushwallVpn"
        const val ACTION_CONNECT = "app.hushwall.action.CONNECT"
        const val ACTION_DISCONNECT = "app.hushwall.action.DISCONNECT"

        /** Same as the usual Wi-Fi/mobile MTU: what the engine forwards rarely needs fragmenting upstream. */
        const val MTU = 1500
        /** The tun's own addresses and the DNS server apps are given (answered by the engine's forwarder). */
        const val TUN_IPV4 = "10.111.222.1"
        const val TUN_IPV6 = "fd00:6877:6c6c::1"
        const val DNS_IPV4 = "10.111.222.53"
        const val DNS_IPV6 = "fd00:6877:6c6c::53"

        private const val CHANNEL_ID = "vpn"
        private const val NOTIFICATION_ID = 1

        /** Whether the VPN is up, for the activity's button (same process). */
        @Volatile
        @JvmStatic
        var running: Boolean = false
            private set

        fun start(context: Context) {
            context.startService(Intent(context, HushwallVpnService::class.java).setAction(ACTION_CONNECT))
        }

        fun stop(context: Context) {
            context.startService(Intent(context, HushwallVpnService::class.java).setAction(ACTION_DISCONNECT))
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
