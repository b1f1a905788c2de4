package app.hushwall.ui

import android.text.InputType
import android.view.View
import android.widget.Button
import android.widget.EditText
import android.widget.RadioButton
import android.widget.RadioGroup
import android.widget.ScrollView
import android.widget.TextView
import app.hushwall.R
import app.hushwall.data.Lists
import app.hushwall.engine.Profile
import app.hushwall.vpn.HushwallVpnService

/**
 * Lists: the built-in profile (balanced/strict), extra block-list URLs, "Update now" and the last update's
 * result. Downloads run on a background thread; the engine takes the new lists without restarting the tunnel.
 */
internal class ListsScreen(activity: MainActivity) : Screen(activity) {
    override val titleRes = R.string.tab_lists
    private val ctx = activity
    private val colors = activity.colors
    private val profile: RadioGroup
    private val urls: EditText
    private val update: Button
    private val result: TextView
    override val view: View
    @Volatile private var updating = false

    init {
        val column = Ui.vertical(ctx)
        column.setPadding(0, Ui.dp(ctx, 6), 0, Ui.dp(ctx, 12))

        val profileCard = Ui.card(ctx, ctx.getString(R.string.lists_profile))
        profile = RadioGroup(ctx)
        profile.id = R.id.lists_profile
        profile.addView(RadioButton(ctx).apply { id = R.id.lists_balanced; setText(R.string.lists_balanced) })
        profile.addView(Ui.text(ctx, ctx.getString(R.string.lists_balanced_text), 13f, colors.text2).apply { setPadding(Ui.dp(ctx, 32), 0, 0, Ui.dp(ctx, 8)) })
        profile.addView(RadioButton(ctx).apply { id = R.id.lists_strict; setText(R.string.lists_strict) })
        profile.addView(Ui.text(ctx, ctx.getString(R.string.lists_strict_text), 13f, colors.text2).apply { setPadding(Ui.dp(ctx, 32), 0, 0, 0) })
        profile.setOnCheckedChangeListener { _, checked ->
            val chosen = if (checked == R.id.lists_strict) Profile.STRICT else Profile.BALANCED
            if (chosen != activity.prefs.profile) {
                activity.prefs.profile = chosen
                HushwallVpnService.notifyChanged(ctx, HushwallVpnService.ACTION_POLICY_CHANGED)
            }
        }
        profileCard.addView(profile)
        column.addView(profileCard)

        val extraCard = Ui.card(ctx, ctx.getString(R.string.lists_extra))
        extraCard.addView(Ui.text(ctx, ctx.getString(R.string.lists_extra_hint), 13f, colors.text2))
        urls = EditText(ctx)
        urls.id = R.id.lists_urls
        urls.inputType = InputType.TYPE_CLASS_TEXT or InputType.TYPE_TEXT_VARIATION_URI or InputType.TYPE_TEXT_FLAG_MULTI_LINE
        urls.minLines = 3
        urls.textSize = 14f
        urls.setHint(R.string.lists_urls_hint)
        extraCard.addView(urls, Ui.matchWrap())
        update = Ui.button(ctx, ctx.getString(R.string.lists_update)) { saveAndUpdate() }
        update.id = R.id.lists_update
        extraCard.addView(update)
        column.addView(extraCard)

        val resultCard = Ui.card(ctx, ctx.getString(R.string.lists_last_update))
        result = Ui.text(ctx, "", 14f)
        result.id = R.id.lists_result
        resultCard.addView(result)
        column.addView(resultCard)

        view = ScrollView(ctx).apply { addView(column) }
    }

    override fun refresh() {
        profile.check(if (activity.prefs.profile == Profile.STRICT) R.id.lists_strict else R.id.lists_balanced)
        if (!urls.hasFocus()) urls.setText(activity.prefs.listUrls.joinToString("\n"))
        renderResult()
    }

    private fun renderResult() {
        val prefs = activity.prefs
        update.isEnabled = !updating
        result.text = when {
            updating -> ctx.getString(R.string.lists_updating)
            prefs.lastUpdateMillis == 0L -> ctx.getString(R.string.lists_never)
            else -> ctx.getString(
                if (prefs.lastUpdateOk) R.string.lists_result_ok else R.string.lists_result_failed,
                Ui.time(ctx, prefs.lastUpdateMillis, withDate = true),
            ) + "\n" + prefs.lastUpdateMessage
        }
        result.setTextColor(if (!updating && !prefs.lastUpdateOk) colors.warn else colors.text)
    }

    private fun saveAndUpdate() {
        val entered = urls.text.toString().split('\n', ' ', ',').map { it.trim() }.filter { it.isNotEmpty() }.distinct()
        val bad = entered.filter { !it.startsWith("https://") }
        if (bad.isNotEmpty()) {
            urls.error = ctx.getString(R.string.lists_https_only, bad.first())
            return
        }
        activity.prefs.listUrls = entered
        updating = true
        renderResult()
        val appContext = ctx.applicationContext
        Thread {
            // The running engine validates each new list (replacePolicy throws on a bad one and keeps the old).
            Lists(appContext).update { policy -> HushwallVpnService.replacePolicyIfRunning(policy) }
            updating = false
            activity.runOnUiThread { renderResult() }
        }.start()
    }
}
