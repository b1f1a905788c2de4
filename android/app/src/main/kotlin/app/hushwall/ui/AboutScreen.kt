package app.hushwall.ui

import android.view.View
import android.widget.ScrollView
import app.hushwall.R

/** About: version, what is collected (nothing), licences and the blocklist sources. */
internal class AboutScreen(activity: MainActivity) : Screen(activity) {
    override val titleRes = R.string.tab_about
    private val ctx = activity
    private val colors = activity.colors
    override val view: View

    init {
        val column = Ui.vertical(ctx)
        column.setPadding(0, Ui.dp(ctx, 6), 0, Ui.dp(ctx, 12))
        val version = try {
            @Suppress("DEPRECATION")
            ctx.packageManager.getPackageInfo(ctx.packageName, 0).versionName ?: "?"
        } catch (e: Exception) {
            "?"
        }
        val head = Ui.card(ctx, null)
        head.addView(Ui.text(ctx, ctx.getString(R.string.app_name), 22f, colors.text, bold = true))
        head.addView(Ui.text(ctx, ctx.getString(R.string.about_version, version), 14f, colors.text2).apply { id = R.id.about_version })
        head.addView(Ui.text(ctx, ctx.getString(R.string.about_tagline), 14f, colors.text))
        column.addView(head)
        for ((title, text) in listOf(
            R.string.about_collected_title to R.string.about_collected,
            R.string.about_licence_title to R.string.about_licence,
            R.string.about_sources_title to R.string.about_sources,
        )) {
            val card = Ui.card(ctx, ctx.getString(title))
            val body = Ui.text(ctx, ctx.getString(text), 14f)
            if (title == R.string.about_collected_title) body.id = R.id.about_collected
            if (title == R.string.about_sources_title) body.id = R.id.about_sources
            card.addView(body)
            column.addView(card)
        }
        view = ScrollView(ctx).apply { addView(column) }
    }
}
