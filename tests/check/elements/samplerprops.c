/* Tests of the sampler property group every model-running element installs
 * (gst_scoresde_install_sampler_properties): names, types, defaults, round trips and
 * refused values.
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 */
#include "common.c"

typedef struct
{
  const gchar *factory;
  const gchar *sampler_type;
  const gchar *samplers;        /* the nicks it takes, in enum order */
  const gchar *default_sampler;
  gboolean seed, pc, ode;       /* which optional properties it has */
} ElementCase;

static const ElementCase cases[] = {
  {"scoresdesrc", "GstScoreSdeSampler",
      "pc ode ddim dpmpp-2m dpmpp-3m dpmpp-2m-sde heun", "dpmpp-2m", TRUE, TRUE,
      TRUE},
  {"scoresdeencode", "GstScoreSdeOdeSampler",
      "ode ddim dpmpp-2m dpmpp-3m heun", "dpmpp-2m", TRUE, FALSE, TRUE},
  {"scoresdedecode", "GstScoreSdeOdeSampler",
      "ode ddim dpmpp-2m dpmpp-3m heun", "dpmpp-2m", FALSE, FALSE, TRUE},
  {"scoresdeinpaint", "GstScoreSdeControlSampler",
      "pc ddim dpmpp-2m dpmpp-3m dpmpp-2m-sde heun", "dpmpp-2m-sde", TRUE, TRUE,
      FALSE},
  {"scoresdecolorize", "GstScoreSdeControlSampler",
      "pc ddim dpmpp-2m dpmpp-3m dpmpp-2m-sde heun", "dpmpp-2m", TRUE, TRUE,
      FALSE},
};

static const gchar *const all_samplers[] = {
  "pc", "ode", "ddim", "dpmpp-2m", "dpmpp-3m", "dpmpp-2m-sde", "heun"
};

static const gchar *const pc_props[] = {
  "predictor", "corrector", "snr", "corrector-steps"
};

static const gchar *const ode_props[] = { "ode-method", "rtol", "atol" };

static gboolean
takes (const ElementCase * c, const gchar * nick)
{
  gchar **nicks = g_strsplit (c->samplers, " ", -1);
  gboolean found = g_strv_contains ((const gchar * const *) nicks, nick);

  g_strfreev (nicks);
  return found;
}

/* The value of `prop` as a string (enums as their nick), g_free. */
static gchar *
prop_string (GObject * obj, const gchar * prop)
{
  GParamSpec *pspec = g_object_class_find_property (G_OBJECT_GET_CLASS (obj),
      prop);
  GValue v = G_VALUE_INIT;
  gchar *str;

  fail_unless (pspec != NULL, "no property %s", prop);
  g_value_init (&v, pspec->value_type);
  g_object_get_property (obj, prop, &v);
  if (G_VALUE_HOLDS_ENUM (&v)) {
    GEnumClass *klass = g_type_class_peek (pspec->value_type);
    str = g_strdup (g_enum_get_value (klass, g_value_get_enum (&v))->value_nick);
  } else if (G_VALUE_HOLDS_DOUBLE (&v)) {
    str = g_strdup_printf ("%g", g_value_get_double (&v));
  } else {
    str = gst_value_serialize (&v);
  }
  g_value_unset (&v);
  return str;
}

static void
check_has (GObject * obj, const gchar * prop, gboolean want, const gchar * who)
{
  gboolean has = g_object_class_find_property (G_OBJECT_GET_CLASS (obj),
      prop) != NULL;

  fail_unless (has == want, "%s %s property %s", who,
      want ? "lacks the" : "has a", prop);
}

GST_START_TEST (test_sampler_properties_and_defaults)
{
  guint i, k;

  for (i = 0; i < G_N_ELEMENTS (cases); i++) {
    const ElementCase *c = &cases[i];
    GstElement *e = gst_element_factory_make (c->factory, NULL);
    GObject *obj = G_OBJECT (e);
    GParamSpec *pspec;
    GEnumClass *klass;
    GString *nicks = g_string_new (NULL);
    gchar *str;

    fail_unless (e != NULL, "no element %s", c->factory);
    pspec = g_object_class_find_property (G_OBJECT_GET_CLASS (obj), "sampler");
    fail_unless (pspec != NULL);
    fail_unless_equals_string (g_type_name (pspec->value_type),
        c->sampler_type);
    klass = g_type_class_ref (pspec->value_type);
    for (k = 0; k < klass->n_values; k++)
      g_string_append_printf (nicks, "%s%s", k ? " " : "",
          klass->values[k].value_nick);
    fail_unless_equals_string (nicks->str, c->samplers);
    /* the same value for the same nick in every subset */
    for (k = 0; k < klass->n_values; k++)
      fail_unless_equals_int (klass->values[k].value,
          g_enum_get_value_by_nick (g_type_class_peek
              (GST_TYPE_SCORESDE_SAMPLER),
              klass->values[k].value_nick)->value);
    g_type_class_unref (klass);
    g_string_free (nicks, TRUE);

    /* the fast path by default */
    str = prop_string (obj, "sampler");
    fail_unless_equals_string (str, c->default_sampler);
    g_free (str);
    str = prop_string (obj, "schedule");
    fail_unless_equals_string (str, "karras");
    g_free (str);
    str = prop_string (obj, "steps");
    fail_unless_equals_string (str, "15");
    g_free (str);

    check_has (obj, "seed", c->seed, c->factory);
    for (k = 0; k < G_N_ELEMENTS (pc_props); k++)
      check_has (obj, pc_props[k], c->pc, c->factory);
    for (k = 0; k < G_N_ELEMENTS (ode_props); k++)
      check_has (obj, ode_props[k], c->ode, c->factory);
    gst_object_unref (e);
  }
}

GST_END_TEST;

/* Every sampler property set from a string (as gst-launch does) reads back. */
GST_START_TEST (test_sampler_properties_round_trip)
{
  static const gchar *const values[][2] = {
    {"seed", "18446744073709551615"},
    {"schedule", "logsnr"},
    {"schedule", "time"},
    {"steps", "1"},
    {"steps", "0"},
    {"steps", "100000"},
    {"predictor", "ancestral"},
    {"corrector", "ald"},
    {"snr", "0.075"},
    {"corrector-steps", "3"},
    {"ode-method", "heun"},
    {"rtol", "0.001"},
    {"atol", "1e-06"},
  };
  guint i, k;

  for (i = 0; i < G_N_ELEMENTS (cases); i++) {
    const ElementCase *c = &cases[i];
    GstElement *e = gst_element_factory_make (c->factory, NULL);
    GObject *obj = G_OBJECT (e);

    for (k = 0; k < G_N_ELEMENTS (all_samplers); k++) {
      gchar *str;

      if (!takes (c, all_samplers[k]))
        continue;
      gst_util_set_object_arg (obj, "sampler", all_samplers[k]);
      str = prop_string (obj, "sampler");
      fail_unless_equals_string (str, all_samplers[k]);
      g_free (str);
    }
    for (k = 0; k < G_N_ELEMENTS (values); k++) {
      gchar *str;

      if (g_object_class_find_property (G_OBJECT_GET_CLASS (obj),
              values[k][0]) == NULL)
        continue;
      gst_util_set_object_arg (obj, values[k][0], values[k][1]);
      str = prop_string (obj, values[k][0]);
      fail_unless (g_str_equal (str, values[k][1]), "%s %s: set %s, got %s",
          c->factory, values[k][0], values[k][1], str);
      g_free (str);
    }
    gst_object_unref (e);
  }
}

GST_END_TEST;

/* A sampler the element cannot run, an unknown name or a value out of range is
 * refused and leaves the property as it was. */
GST_START_TEST (test_sampler_properties_refuse_bad_values)
{
  static const gchar *const bad_ints[][2] = {
    {"steps", "-1"}, {"steps", "1000001"}, {"corrector-steps", "-1"},
  };
  static const gchar *const bad_doubles[][2] = {
    {"snr", "-0.1"}, {"snr", "11"}, {"rtol", "0"}, {"atol", "2"},
  };
  guint i, k;

  for (i = 0; i < G_N_ELEMENTS (cases); i++) {
    const ElementCase *c = &cases[i];
    GObjectClass *oclass;
    GstElement *e;

    for (k = 0; k < G_N_ELEMENTS (all_samplers) + 1; k++) {
      const gchar *nick = k < G_N_ELEMENTS (all_samplers) ?
          all_samplers[k] : "dpmpp-4m";
      gchar *desc;
      GError *err = NULL;

      if (takes (c, nick))
        continue;
      desc = g_strdup_printf ("%s sampler=%s", c->factory, nick);
      e = gst_parse_launch (desc, &err);
      fail_unless (g_error_matches (err, GST_PARSE_ERROR,
              GST_PARSE_ERROR_COULD_NOT_SET_PROPERTY), "%s was accepted", desc);
      g_clear_error (&err);
      if (e != NULL) {
        gchar *str = prop_string (G_OBJECT (e), "sampler");
        fail_unless_equals_string (str, c->default_sampler);
        g_free (str);
        gst_object_unref (e);
      }
      g_free (desc);
    }

    e = gst_element_factory_make (c->factory, NULL);
    oclass = G_OBJECT_GET_CLASS (e);
    for (k = 0; k < G_N_ELEMENTS (bad_ints); k++) {
      GParamSpec *pspec = g_object_class_find_property (oclass, bad_ints[k][0]);
      gchar *before, *after;

      if (pspec == NULL)
        continue;
      before = prop_string (G_OBJECT (e), bad_ints[k][0]);
      ASSERT_WARNING (g_object_set (e, bad_ints[k][0],
              atoi (bad_ints[k][1]), NULL));
      after = prop_string (G_OBJECT (e), bad_ints[k][0]);
      fail_unless_equals_string (after, before);
      g_free (before);
      g_free (after);
    }
    for (k = 0; k < G_N_ELEMENTS (bad_doubles); k++) {
      GParamSpec *pspec = g_object_class_find_property (oclass,
          bad_doubles[k][0]);
      gchar *before, *after;

      if (pspec == NULL)
        continue;
      before = prop_string (G_OBJECT (e), bad_doubles[k][0]);
      ASSERT_WARNING (g_object_set (e, bad_doubles[k][0],
              g_ascii_strtod (bad_doubles[k][1], NULL), NULL));
      after = prop_string (G_OBJECT (e), bad_doubles[k][0]);
      fail_unless_equals_string (after, before);
      g_free (before);
      g_free (after);
    }
    gst_object_unref (e);
  }
}

GST_END_TEST;

static Suite *
samplerprops_suite (void)
{
  Suite *s = suite_create ("samplerprops");
  TCase *tc = tcase_create ("general");

  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_sampler_properties_and_defaults);
  tcase_add_test (tc, test_sampler_properties_round_trip);
  tcase_add_test (tc, test_sampler_properties_refuse_bad_values);
  return s;
}

GST_CHECK_MAIN (samplerprops);
