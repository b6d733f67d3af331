/* gst-scoresde: writes docs/elements.md from the GStreamer registry
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 *
 * Loads one plugin file, walks its element factories and writes a Markdown reference:
 * metadata, hierarchy, pad templates with their caps, every property with type,
 * default (read from a fresh instance, as gst-inspect-1.0 does), range or values and
 * flags, and the enum types they use. Output is deterministic (sorted, locale-free
 * numbers, no paths or versions), so a test can compare it with the committed file.
 *
 *   gen-elements-doc --plugin build/plugins/libgstscoresde.so [--output FILE]
 *                    [--check docs/elements.md]
 *
 * --check compares the generated text with FILE and fails (exit 1) with the first
 * difference and the command that regenerates it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <gst/gst.h>

#define REGENERATE_HINT "ninja -C <builddir> elements-doc"

/* ---- values ------------------------------------------------------------------- */

static gchar *
format_double (gdouble v)
{
  gchar buf[G_ASCII_DTOSTR_BUF_SIZE];

  if (v >= G_MAXDOUBLE)
    return g_strdup ("G_MAXDOUBLE");
  if (v <= -G_MAXDOUBLE)
    return g_strdup ("-G_MAXDOUBLE");
  if (v >= G_MAXFLOAT && v < G_MAXFLOAT * 1.0000001)
    return g_strdup ("G_MAXFLOAT");
  if (v <= -G_MAXFLOAT && v > -G_MAXFLOAT * 1.0000001)
    return g_strdup ("-G_MAXFLOAT");
  return g_strdup (g_ascii_formatd (buf, sizeof buf, "%.6g", v));
}

/* The value as Markdown inline code (or a word for NULL strings). */
static gchar *
format_value (const GValue * value, GParamSpec * pspec)
{
  GType t = G_VALUE_TYPE (value);

  if (t == G_TYPE_STRING) {
    const gchar *s = g_value_get_string (value);
    return s ? g_strdup_printf ("`\"%s\"`", s) : g_strdup ("NULL");
  }
  if (t == G_TYPE_BOOLEAN)
    return g_strdup (g_value_get_boolean (value) ? "`true`" : "`false`");
  if (t == G_TYPE_DOUBLE || t == G_TYPE_FLOAT) {
    gdouble v = t == G_TYPE_DOUBLE ? g_value_get_double (value) :
        g_value_get_float (value);
    gchar *d = format_double (v), *ret = g_strdup_printf ("`%s`", d);
    g_free (d);
    return ret;
  }
  if (G_TYPE_IS_ENUM (t)) {
    GEnumClass *klass = g_type_class_ref (t);
    GEnumValue *ev = g_enum_get_value (klass, g_value_get_enum (value));
    gchar *ret = ev ? g_strdup_printf ("`%s` (%d)", ev->value_nick, ev->value) :
        g_strdup_printf ("%d", g_value_get_enum (value));
    g_type_class_unref (klass);
    return ret;
  }
  if (G_TYPE_IS_FLAGS (t)) {
    gchar *s = g_strdup_value_contents (value);
    gchar *ret = g_strdup_printf ("`%s`", s);
    g_free (s);
    return ret;
  }
  if (G_TYPE_IS_OBJECT (t) || G_TYPE_IS_BOXED (t) || t == G_TYPE_POINTER) {
    if (t == GST_TYPE_CAPS && gst_value_get_caps (value) != NULL) {
      gchar *s = gst_caps_to_string (gst_value_get_caps (value));
      gchar *ret = g_strdup_printf ("`%s`", s);
      g_free (s);
      return ret;
    }
    return g_strdup (g_value_peek_pointer (value) ? "(set)" : "NULL");
  }
  {
    gchar *s = g_strdup_value_contents (value);
    gchar *ret = g_strdup_printf ("`%s`", s);
    g_free (s);
    return ret;
  }
}

#define RANGE_INT(spec_type, cast, fmt) \
  do { \
    spec_type *p = (spec_type *) pspec; \
    return g_strdup_printf ("%" fmt " to %" fmt, (cast) p->minimum, \
        (cast) p->maximum); \
  } while (0)

static gchar *
format_range (GParamSpec * pspec)
{
  GType t = G_PARAM_SPEC_VALUE_TYPE (pspec);

  if (G_IS_PARAM_SPEC_INT (pspec))
    RANGE_INT (GParamSpecInt, gint, "d");
  if (G_IS_PARAM_SPEC_UINT (pspec))
    RANGE_INT (GParamSpecUInt, guint, "u");
  if (G_IS_PARAM_SPEC_LONG (pspec))
    RANGE_INT (GParamSpecLong, glong, "ld");
  if (G_IS_PARAM_SPEC_ULONG (pspec))
    RANGE_INT (GParamSpecULong, gulong, "lu");
  if (G_IS_PARAM_SPEC_INT64 (pspec))
    RANGE_INT (GParamSpecInt64, gint64, G_GINT64_FORMAT);
  if (G_IS_PARAM_SPEC_UINT64 (pspec))
    RANGE_INT (GParamSpecUInt64, guint64, G_GUINT64_FORMAT);
  if (G_IS_PARAM_SPEC_DOUBLE (pspec) || G_IS_PARAM_SPEC_FLOAT (pspec)) {
    gdouble lo, hi;
    gchar *a, *b, *ret;
    if (G_IS_PARAM_SPEC_DOUBLE (pspec)) {
      lo = G_PARAM_SPEC_DOUBLE (pspec)->minimum;
      hi = G_PARAM_SPEC_DOUBLE (pspec)->maximum;
    } else {
      lo = G_PARAM_SPEC_FLOAT (pspec)->minimum;
      hi = G_PARAM_SPEC_FLOAT (pspec)->maximum;
    }
    a = format_double (lo);
    b = format_double (hi);
    ret = g_strdup_printf ("%s to %s", a, b);
    g_free (a);
    g_free (b);
    return ret;
  }
  if (G_TYPE_IS_ENUM (t) || G_TYPE_IS_FLAGS (t))
    return g_strdup_printf ("see [%s](#%s)", g_type_name (t), g_type_name (t));
  return g_strdup ("");
}

static const gchar *
type_name (GParamSpec * pspec)
{
  GType t = G_PARAM_SPEC_VALUE_TYPE (pspec);

  if (G_TYPE_IS_ENUM (t))
    return "enum";
  if (G_TYPE_IS_FLAGS (t))
    return "flags";
  if (t == G_TYPE_STRING)
    return "string";
  if (t == G_TYPE_BOOLEAN)
    return "boolean";
  if (t == G_TYPE_INT)
    return "int";
  if (t == G_TYPE_UINT)
    return "uint";
  if (t == G_TYPE_INT64)
    return "int64";
  if (t == G_TYPE_UINT64)
    return "uint64";
  if (t == G_TYPE_DOUBLE)
    return "double";
  if (t == G_TYPE_FLOAT)
    return "float";
  return g_type_name (t);
}

static gchar *
format_flags (GParamSpec * pspec)
{
  GString *s = g_string_new (NULL);

  if (!(pspec->flags & G_PARAM_WRITABLE))
    g_string_append (s, "read-only");
  else if (!(pspec->flags & G_PARAM_READABLE))
    g_string_append (s, "write-only");
  else if (pspec->flags & GST_PARAM_MUTABLE_PLAYING)
    g_string_append (s, "any state");
  else if (pspec->flags & GST_PARAM_MUTABLE_PAUSED)
    g_string_append (s, "up to PAUSED");
  else if (pspec->flags & GST_PARAM_MUTABLE_READY)
    g_string_append (s, "NULL or READY");
  else
    g_string_append (s, "unspecified");
  if (pspec->flags & G_PARAM_CONSTRUCT_ONLY)
    g_string_append (s, ", construct-only");
  if (pspec->flags & GST_PARAM_CONTROLLABLE)
    g_string_append (s, ", controllable");
  return g_string_free (s, FALSE);
}

/* Markdown table cells must not hold '|' or newlines. */
static gchar *
cell (const gchar * text)
{
  GString *s = g_string_new (NULL);
  const gchar *p;

  for (p = text ? text : ""; *p; p++) {
    if (*p == '|')
      g_string_append (s, "\\|");
    else if (*p == '\n')
      g_string_append_c (s, ' ');
    else
      g_string_append_c (s, *p);
  }
  return g_string_free (s, FALSE);
}

/* ---- caps ---------------------------------------------------------------------- */

typedef struct
{
  GString *out;
} FieldCtx;

static gboolean
append_field (GQuark field, const GValue * value, gpointer user)
{
  FieldCtx *ctx = user;
  gchar *v = gst_value_serialize (value);
  gchar **parts;
  gchar *plain;

  /* "{ (string)RGB, (string)RGBA }" reads better as "{ RGB, RGBA }" */
  parts = g_strsplit (v ? v : "?", "(string)", -1);
  plain = g_strjoinv ("", parts);
  g_string_append_printf (ctx->out, "    %s: %s\n", g_quark_to_string (field),
      plain);
  g_strfreev (parts);
  g_free (plain);
  g_free (v);
  return TRUE;
}

static void
append_caps (GString * out, GstCaps * caps)
{
  guint i;

  g_string_append (out, "```\n");
  if (gst_caps_is_any (caps))
    g_string_append (out, "ANY\n");
  else if (gst_caps_is_empty (caps))
    g_string_append (out, "EMPTY\n");
  for (i = 0; i < gst_caps_get_size (caps); i++) {
    GstStructure *st = gst_caps_get_structure (caps, i);
    GstCapsFeatures *f = gst_caps_get_features (caps, i);
    FieldCtx ctx = { out };

    if (f && !gst_caps_features_is_equal (f,
            GST_CAPS_FEATURES_MEMORY_SYSTEM_MEMORY)) {
      gchar *fs = gst_caps_features_to_string (f);
      g_string_append_printf (out, "%s(%s)\n", gst_structure_get_name (st), fs);
      g_free (fs);
    } else {
      g_string_append_printf (out, "%s\n", gst_structure_get_name (st));
    }
    gst_structure_foreach (st, append_field, &ctx);
  }
  g_string_append (out, "```\n\n");
}

/* ---- elements ------------------------------------------------------------------ */

static const gchar *
rank_name (guint rank)
{
  switch (rank) {
    case GST_RANK_NONE:
      return "none";
    case GST_RANK_MARGINAL:
      return "marginal";
    case GST_RANK_SECONDARY:
      return "secondary";
    case GST_RANK_PRIMARY:
      return "primary";
    default:
      return "custom";
  }
}

static gint
compare_pspec (gconstpointer a, gconstpointer b)
{
  return strcmp ((*(GParamSpec **) a)->name, (*(GParamSpec **) b)->name);
}

static gint
compare_feature (gconstpointer a, gconstpointer b)
{
  return strcmp (GST_OBJECT_NAME (a), GST_OBJECT_NAME (b));
}

static gint
compare_template (gconstpointer a, gconstpointer b)
{
  const GstStaticPadTemplate *x = a, *y = b;
  /* sink pads first, as gst-inspect lists them */
  if (x->direction != y->direction)
    return x->direction == GST_PAD_SINK ? -1 : 1;
  return strcmp (x->name_template, y->name_template);
}

static void
append_property_row (GString * out, GObject * obj, GParamSpec * pspec,
    GPtrArray * enums)
{
  GValue v = G_VALUE_INIT;
  gchar *def, *range, *flags, *blurb;
  GType t = G_PARAM_SPEC_VALUE_TYPE (pspec);

  g_value_init (&v, t);
  if (pspec->flags & G_PARAM_READABLE)
    g_object_get_property (obj, pspec->name, &v);
  else
    g_param_value_set_default (pspec, &v);
  def = format_value (&v, pspec);
  g_value_unset (&v);

  range = format_range (pspec);
  flags = format_flags (pspec);
  blurb = cell (g_param_spec_get_blurb (pspec));
  g_string_append_printf (out, "| `%s` | %s | %s | %s | %s | %s |\n",
      pspec->name, type_name (pspec), def, range, flags, blurb);
  if ((G_TYPE_IS_ENUM (t) || G_TYPE_IS_FLAGS (t))
      && !g_ptr_array_find (enums, GSIZE_TO_POINTER (t), NULL))
    g_ptr_array_add (enums, GSIZE_TO_POINTER (t));
  g_free (def);
  g_free (range);
  g_free (flags);
  g_free (blurb);
}

static void
append_element (GString * out, GstElementFactory * factory, GPtrArray * enums)
{
  GstElement *el;
  GType type;
  GObjectClass *klass;
  GParamSpec **specs;
  guint n_specs, i;
  GList *templates, *l;
  GPtrArray *own, *inherited;
  GString *hier = g_string_new (NULL);
  GType *ifaces;
  guint n_ifaces;
  const gchar *name = GST_OBJECT_NAME (factory);

  el = gst_element_factory_create (factory, NULL);
  if (el == NULL) {
    g_printerr ("cannot create %s\n", name);
    exit (2);
  }
  type = G_OBJECT_TYPE (el);
  klass = G_OBJECT_GET_CLASS (el);

  g_string_append_printf (out, "## %s\n\n", name);
  g_string_append_printf (out, "**%s**: %s\n\n",
      gst_element_factory_get_metadata (factory, GST_ELEMENT_METADATA_LONGNAME),
      gst_element_factory_get_metadata (factory,
          GST_ELEMENT_METADATA_DESCRIPTION));

  /* GObject → … → the element's class */
  for (; type != 0; type = g_type_parent (type)) {
    if (hier->len > 0)
      g_string_prepend (hier, " → ");
    g_string_prepend (hier, g_type_name (type));
  }
  type = G_OBJECT_TYPE (el);

  g_string_append (out, "| | |\n|---|---|\n");
  g_string_append_printf (out, "| Class | `%s` |\n", g_type_name (type));
  g_string_append_printf (out, "| Klass | %s |\n",
      gst_element_factory_get_metadata (factory, GST_ELEMENT_METADATA_KLASS));
  g_string_append_printf (out, "| Rank | %s |\n",
      rank_name (gst_plugin_feature_get_rank (GST_PLUGIN_FEATURE (factory))));
  g_string_append_printf (out, "| Author | %s |\n",
      gst_element_factory_get_metadata (factory, GST_ELEMENT_METADATA_AUTHOR));
  g_string_append_printf (out, "| Hierarchy | %s |\n", hier->str);
  ifaces = g_type_interfaces (type, &n_ifaces);
  if (n_ifaces > 0) {
    g_string_append (out, "| Interfaces |");
    for (i = 0; i < n_ifaces; i++)
      g_string_append_printf (out, "%s `%s`", i ? "," : "",
          g_type_name (ifaces[i]));
    g_string_append (out, " |\n");
  }
  g_free (ifaces);
  g_string_append (out, "\n");
  g_string_free (hier, TRUE);

  /* pad templates */
  g_string_append (out, "### Pad templates\n\n");
  templates = g_list_copy ((GList *)
      gst_element_factory_get_static_pad_templates (factory));
  templates = g_list_sort (templates, compare_template);
  for (l = templates; l; l = l->next) {
    GstStaticPadTemplate *t = l->data;
    GstCaps *caps = gst_static_caps_get (&t->static_caps);
    const gchar *presence = t->presence == GST_PAD_ALWAYS ? "always" :
        t->presence == GST_PAD_SOMETIMES ? "sometimes" : "request";

    g_string_append_printf (out, "`%s`: %s pad, %s\n\n", t->name_template,
        t->direction == GST_PAD_SRC ? "source" : "sink", presence);
    append_caps (out, caps);
    gst_caps_unref (caps);
  }
  if (templates == NULL)
    g_string_append (out, "None.\n\n");
  g_list_free (templates);

  /* properties: the element's own, then those of its base classes below GstObject */
  specs = g_object_class_list_properties (klass, &n_specs);
  qsort (specs, n_specs, sizeof (GParamSpec *), compare_pspec);
  own = g_ptr_array_new ();
  inherited = g_ptr_array_new ();
  for (i = 0; i < n_specs; i++) {
    if (specs[i]->owner_type == type)
      g_ptr_array_add (own, specs[i]);
    else if (specs[i]->owner_type != GST_TYPE_OBJECT)
      g_ptr_array_add (inherited, specs[i]);
  }

  g_string_append (out, "### Properties\n\n");
  if (own->len > 0) {
    g_string_append (out, "| Property | Type | Default | Range | Changeable in "
        "| Description |\n|---|---|---|---|---|---|\n");
    for (i = 0; i < own->len; i++)
      append_property_row (out, G_OBJECT (el), own->pdata[i], enums);
    g_string_append (out, "\n");
  } else {
    g_string_append (out, "None.\n\n");
  }
  if (inherited->len > 0) {
    g_string_append (out, "Inherited from the base classes:\n\n");
    g_string_append (out, "| Property | Type | Default | Range | Changeable in "
        "| Description |\n|---|---|---|---|---|---|\n");
    for (i = 0; i < inherited->len; i++)
      append_property_row (out, G_OBJECT (el), inherited->pdata[i], enums);
    g_string_append (out, "\n");
  }
  g_ptr_array_free (own, TRUE);
  g_ptr_array_free (inherited, TRUE);
  g_free (specs);

  /* signals the element defines itself (action signals included) */
  {
    guint n_ids, *ids = g_signal_list_ids (type, &n_ids);
    if (n_ids > 0) {
      g_string_append (out, "### Signals\n\n");
      for (i = 0; i < n_ids; i++) {
        GSignalQuery q;
        g_signal_query (ids[i], &q);
        g_string_append_printf (out, "- `%s`%s\n", q.signal_name,
            (q.signal_flags & G_SIGNAL_ACTION) ? " (action)" : "");
      }
      g_string_append (out, "\n");
    }
    g_free (ids);
  }

  gst_object_unref (el);
}

static gint
compare_gtype_name (gconstpointer a, gconstpointer b)
{
  return strcmp (g_type_name (GPOINTER_TO_SIZE (*(gpointer *) a)),
      g_type_name (GPOINTER_TO_SIZE (*(gpointer *) b)));
}

static void
append_enums (GString * out, GPtrArray * enums)
{
  guint i, j;

  if (enums->len == 0)
    return;
  g_ptr_array_sort (enums, compare_gtype_name);
  g_string_append (out, "## Enumerations\n\n");
  for (i = 0; i < enums->len; i++) {
    GType t = GPOINTER_TO_SIZE (enums->pdata[i]);

    g_string_append_printf (out, "<a id=\"%s\"></a>\n### %s\n\n",
        g_type_name (t), g_type_name (t));
    g_string_append (out, "| Value | Nick | Description |\n|---|---|---|\n");
    if (G_TYPE_IS_ENUM (t)) {
      GEnumClass *k = g_type_class_ref (t);
      for (j = 0; j < k->n_values; j++) {
        gchar *d = cell (k->values[j].value_name);
        g_string_append_printf (out, "| %d | `%s` | %s |\n",
            k->values[j].value, k->values[j].value_nick, d);
        g_free (d);
      }
      g_type_class_unref (k);
    } else {
      GFlagsClass *k = g_type_class_ref (t);
      for (j = 0; j < k->n_values; j++) {
        gchar *d = cell (k->values[j].value_name);
        g_string_append_printf (out, "| 0x%08x | `%s` | %s |\n",
            k->values[j].value, k->values[j].value_nick, d);
        g_free (d);
      }
      g_type_class_unref (k);
    }
    g_string_append (out, "\n");
  }
}

static gchar *
generate (GstPlugin * plugin)
{
  GString *out = g_string_new (NULL);
  GList *features, *l;
  GPtrArray *enums = g_ptr_array_new ();
  const gchar *pname = gst_plugin_get_name (plugin);

  features = gst_registry_get_feature_list_by_plugin (gst_registry_get (),
      pname);
  features = g_list_sort (features, compare_feature);

  g_string_append_printf (out, "# Elements of the `%s` plugin\n\n", pname);
  g_string_append (out, "<!-- Generated by tools/gen-elements-doc from the "
      "GStreamer registry. Do not edit: run `" REGENERATE_HINT "`. -->\n\n");
  g_string_append_printf (out, "%s. License: %s. Source module: `%s`.\n\n",
      gst_plugin_get_description (plugin), gst_plugin_get_license (plugin),
      gst_plugin_get_source (plugin));
  g_string_append (out,
      "Defaults are those of a new element. \"Changeable in\" "
      "is the latest state in which a property may still be set (from the "
      "GST_PARAM_MUTABLE_* flags; \"unspecified\" when the element sets none).\n\n");

  g_string_append (out, "| Element | Klass | Description |\n|---|---|---|\n");
  for (l = features; l; l = l->next) {
    GstElementFactory *f;
    gchar *d;
    if (!GST_IS_ELEMENT_FACTORY (l->data))
      continue;
    f = l->data;
    d = cell (gst_element_factory_get_metadata (f,
            GST_ELEMENT_METADATA_DESCRIPTION));
    g_string_append_printf (out, "| [%s](#%s) | %s | %s |\n",
        GST_OBJECT_NAME (f), GST_OBJECT_NAME (f),
        gst_element_factory_get_metadata (f, GST_ELEMENT_METADATA_KLASS), d);
    g_free (d);
  }
  g_string_append (out, "\n");

  for (l = features; l; l = l->next) {
    GstPluginFeature *loaded;
    if (!GST_IS_ELEMENT_FACTORY (l->data))
      continue;
    loaded = gst_plugin_feature_load (l->data);
    if (loaded == NULL) {
      g_printerr ("cannot load feature %s\n", GST_OBJECT_NAME (l->data));
      exit (2);
    }
    append_element (out, GST_ELEMENT_FACTORY (loaded), enums);
    gst_object_unref (loaded);
  }
  append_enums (out, enums);

  gst_plugin_feature_list_free (features);
  g_ptr_array_free (enums, TRUE);
  return g_string_free (out, FALSE);
}

/* ---- main ---------------------------------------------------------------------- */

static gint
check (const gchar * generated, const gchar * committed_path,
    const gchar * output_path)
{
  gchar *committed = NULL;
  gchar **a, **b;
  guint i;
  gint ret = 0;
  GError *err = NULL;

  if (!g_file_get_contents (committed_path, &committed, NULL, &err)) {
    g_printerr ("%s: %s\n", committed_path, err->message);
    g_clear_error (&err);
    return 1;
  }
  if (strcmp (generated, committed) == 0) {
    g_print ("%s is up to date\n", committed_path);
    g_free (committed);
    return 0;
  }
  a = g_strsplit (committed, "\n", -1);
  b = g_strsplit (generated, "\n", -1);
  for (i = 0; a[i] && b[i] && strcmp (a[i], b[i]) == 0; i++);
  g_printerr ("%s is stale: it differs from the registry at line %u\n"
      "  committed: %s\n  generated: %s\n", committed_path, i + 1,
      a[i] ? a[i] : "(end of file)", b[i] ? b[i] : "(end of file)");
  if (output_path)
    g_printerr ("Compare: diff -u %s %s\n", committed_path, output_path);
  g_printerr ("Regenerate with: " REGENERATE_HINT "\n");
  g_strfreev (a);
  g_strfreev (b);
  g_free (committed);
  ret = 1;
  return ret;
}

int
main (int argc, char **argv)
{
  gchar *plugin_path = NULL, *output = NULL, *check_path = NULL;
  GOptionEntry entries[] = {
    {"plugin", 'p', 0, G_OPTION_ARG_FILENAME, &plugin_path,
        "Plugin file to document", "FILE"},
    {"output", 'o', 0, G_OPTION_ARG_FILENAME, &output,
        "Write the Markdown here (default: stdout)", "FILE"},
    {"check", 'c', 0, G_OPTION_ARG_FILENAME, &check_path,
        "Fail when FILE differs from the generated text", "FILE"},
    {NULL}
  };
  GOptionContext *ctx = g_option_context_new ("- document a plugin's elements");
  GError *err = NULL;
  GstPlugin *plugin;
  gchar *text;
  gint ret = 0;

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_add_group (ctx, gst_init_get_option_group ());
  if (!g_option_context_parse (ctx, &argc, &argv, &err)) {
    g_printerr ("%s\n", err->message);
    return 2;
  }
  g_option_context_free (ctx);
  if (plugin_path == NULL) {
    g_printerr ("--plugin FILE is required\n");
    return 2;
  }
  gst_init (NULL, NULL);

  plugin = gst_plugin_load_file (plugin_path, &err);
  if (plugin == NULL) {
    g_printerr ("cannot load %s: %s\n", plugin_path, err->message);
    return 2;
  }
  text = generate (plugin);
  gst_object_unref (plugin);

  if (output) {
    if (!g_file_set_contents (output, text, -1, &err)) {
      g_printerr ("%s: %s\n", output, err->message);
      return 2;
    }
  } else if (check_path == NULL) {
    fputs (text, stdout);
  }
  if (check_path)
    ret = check (text, check_path, output);

  g_free (text);
  g_free (plugin_path);
  g_free (output);
  g_free (check_path);
  return ret;
}
