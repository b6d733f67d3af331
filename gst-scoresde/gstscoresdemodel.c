/* gst-scoresde: GStreamer helper library of the score-SDE plugins
 * Copyright (C) 2025 The gst-scoresde authors
 * SPDX-License-Identifier: MIT
 *
 * The model cache. Entries are keyed by "<canonical path>\n<file identity>\n
 * <device:id:precision>" and hold one loaded sde_model each; the identity (device, inode,
 * mtime, size) makes a file replaced on disk a new entry, loaded fresh, while users of the
 * old one keep theirs. Handles are the entries themselves, refcounted under the
 * cache mutex, so acquire/release from any thread (streaming threads, state changes)
 * is safe. A model is loaded under the mutex: two elements starting together load it
 * once, the second waits for the first.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include "gstscoresdemodel.h"

#ifndef GST_SCORESDE_MODELSDIR
#define GST_SCORESDE_MODELSDIR "/usr/local/share/gst-scoresde/models"
#endif
#ifndef GST_SCORESDE_SOURCE_MODELSDIR
#define GST_SCORESDE_SOURCE_MODELSDIR "models"
#endif

GST_DEBUG_CATEGORY_STATIC (scoresde_model_debug);
#define GST_CAT_DEFAULT scoresde_model_debug

typedef struct
{
  GstScoreSdeModel handle;      /* first: handles are entries */
  gchar *key;
  gchar *path;
  gchar *id;
  sde_model *model;
} CacheEntry;

static GMutex cache_lock;
static GHashTable *cache = NULL;        /* key -> CacheEntry */

static void
debug_init (void)
{
  static gsize done = 0;
  if (g_once_init_enter (&done)) {
    GST_DEBUG_CATEGORY_INIT (scoresde_model_debug, "scoresdemodel", 0,
        "scoresde model cache");
    g_once_init_leave (&done, 1);
  }
}

static gchar *
canonicalize (const gchar * path)
{
  char *real = realpath (path, NULL);
  gchar *ret;

  if (real == NULL)
    return NULL;
  ret = g_strdup (real);
  free (real);
  return ret;
}

gchar *
gst_scoresde_model_resolve_path (const gchar * path, const gchar * default_file,
    GError ** error)
{
  gchar *canon;

  debug_init ();

  if (path != NULL && path[0] != '\0') {
    canon = canonicalize (path);
    if (canon == NULL) {
      g_set_error (error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_NOT_FOUND,
          "Model file '%s' not found: %s", path, g_strerror (errno));
      return NULL;
    }
    if (!g_file_test (canon, G_FILE_TEST_IS_REGULAR)) {
      g_set_error (error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_NOT_FOUND,
          "Model file '%s' is not a regular file", path);
      g_free (canon);
      return NULL;
    }
    return canon;
  } else {
    const gchar *env = g_getenv (GST_SCORESDE_MODEL_ENV);
    gchar *installed, *source;

    if (env != NULL && env[0] != '\0') {
      canon = canonicalize (env);
      if (canon == NULL || !g_file_test (canon, G_FILE_TEST_IS_REGULAR)) {
        g_set_error (error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_NOT_FOUND,
            "Default model '%s' (from $" GST_SCORESDE_MODEL_ENV ") not found",
            env);
        g_free (canon);
        return NULL;
      }
      return canon;
    }

    if (default_file == NULL)
      default_file = GST_SCORESDE_DEFAULT_MODEL_FILE;
    installed = g_build_filename (GST_SCORESDE_MODELSDIR, default_file, NULL);
    canon = canonicalize (installed);
    if (canon == NULL) {
      source = g_build_filename (GST_SCORESDE_SOURCE_MODELSDIR,
          default_file, NULL);
      canon = canonicalize (source);
      if (canon == NULL)
        g_set_error (error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_NOT_FOUND,
            "No default model: set the model property or $"
            GST_SCORESDE_MODEL_ENV " (neither %s nor %s exists)", installed,
            source);
      g_free (source);
    }
    g_free (installed);
    return canon;
  }
}

static void
entry_free (CacheEntry * e)
{
  GST_DEBUG ("unloading model %s (%s)", e->path, e->id);
  if (e->model)
    sde_model_free (e->model);
  g_free (e->key);
  g_free (e->path);
  g_free (e->id);
  g_free (e);
}

static CacheEntry *
entry_load (const gchar * path, const gchar * key,
    const sde_load_options * opt, GError ** error)
{
  sde_model *m = NULL;
  gint64 t0 = g_get_monotonic_time ();
  int status = sde_model_load_ex (path, opt, &m);
  sde_device_info info;
  CacheEntry *e;

  if (status != SDE_OK) {
    const gchar *msg = sde_errmsg ();
    switch (status) {
      case SDE_EIO:
        g_set_error (error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_NOT_FOUND,
            "Could not read model '%s': %s", path, msg);
        break;
      case SDE_ENOMEM:
        g_set_error (error, GST_RESOURCE_ERROR,
            GST_RESOURCE_ERROR_NO_SPACE_LEFT,
            "Out of memory loading model '%s': %s", path, msg);
        break;
      case SDE_ENODEV:
        g_set_error (error, GST_LIBRARY_ERROR, GST_LIBRARY_ERROR_INIT,
            "Cannot run model '%s' on the GPU: %s (use device=cpu or auto)",
            path, msg);
        break;
      default:
        g_set_error (error, GST_LIBRARY_ERROR, GST_LIBRARY_ERROR_INIT,
            "Could not load model '%s': %s", path, msg);
        break;
    }
    return NULL;
  }

  e = g_new0 (CacheEntry, 1);
  e->model = m;
  e->key = g_strdup (key);
  e->path = g_strdup (path);
  if (m->id[0] != '\0')
    e->id = g_strdup (m->id);
  else
    e->id = g_compute_checksum_for_string (G_CHECKSUM_MD5, path, -1);

  e->handle.model = m;
  if (m->has_sde)
    e->handle.sde = m->sde;
  else
    sde_init (&e->handle.sde, SDE_VE);
  e->handle.path = e->path;
  e->handle.id = e->id;
  sde_model_device (m, &info);
  e->handle.device = (GstScoreSdeDevice) info.device;
  e->handle.cuda_device_id = info.device_id;
  e->handle.precision = (GstScoreSdePrecision) info.precision;
  e->handle.refcount = 1;

  GST_INFO ("loaded model %s: %s %dx%dx%d, sde %s, id %s, on %s %d (%s) in "
      "%.1f ms", path, m->ops->kind, m->channels, m->height, m->width,
      sde_kind_name (e->handle.sde.kind), e->id, sde_device_name (info.device),
      info.device_id, sde_precision_name (info.precision),
      (g_get_monotonic_time () - t0) / 1000.0);
  return e;
}

GstScoreSdeModel *
gst_scoresde_model_cache_acquire (GstElement * element, const gchar * path,
    const GstScoreSdeDeviceSettings * device, GError ** error)
{
  return gst_scoresde_model_cache_acquire_full (element, path,
      GST_SCORESDE_DEFAULT_MODEL_FILE, device, error);
}

GstScoreSdeModel *
gst_scoresde_model_cache_acquire_full (GstElement * element,
    const gchar * path, const gchar * default_file,
    const GstScoreSdeDeviceSettings * device, GError ** error)
{
  sde_load_options opt = SDE_LOAD_OPTIONS_INIT;
  gchar *canon, *key;
  struct stat st;
  CacheEntry *e;

  debug_init ();

  /* AUTO is resolved here, not by the engine, so that its CPU fallback shares the
   * cache entry of device=cpu and is logged against the element */
  opt.device = (sde_device_kind) device->device;
  opt.device_id = device->cuda_device_id;
  opt.precision = (sde_precision) device->precision;
  if (opt.device == SDE_DEVICE_AUTO) {
    const int n_gpus = sde_cuda_device_count ();

    if (n_gpus > opt.device_id) {
      opt.device = SDE_DEVICE_CUDA;
    } else {
      opt.device = SDE_DEVICE_CPU;
      GST_CAT_WARNING_OBJECT (scoresde_model_debug, element,
          "device=auto: no CUDA device %d usable (%d found, %s), running on "
          "the CPU", opt.device_id, n_gpus, n_gpus > 0 ?
          "ordinal out of range" :
          "no GPU, driver or CUDA support in this build");
    }
  }
  if (opt.device == SDE_DEVICE_CPU) {
    opt.device_id = 0;
    opt.precision = SDE_PRECISION_FP32;
  }

  canon = gst_scoresde_model_resolve_path (path, default_file, error);
  if (canon == NULL)
    return NULL;
  if (stat (canon, &st) != 0)
    memset (&st, 0, sizeof st);         /* the load reports the file's problem */
  key = g_strdup_printf ("%s\n%" G_GUINT64_FORMAT ":%" G_GUINT64_FORMAT ":%"
      G_GINT64_FORMAT ".%09ld:%" G_GINT64_FORMAT "\n%d:%d:%d", canon,
      (guint64) st.st_dev, (guint64) st.st_ino, (gint64) st.st_mtim.tv_sec,
      (long) st.st_mtim.tv_nsec, (gint64) st.st_size, (gint) opt.device,
      opt.device_id, (gint) opt.precision);

  g_mutex_lock (&cache_lock);
  if (cache == NULL)
    cache = g_hash_table_new (g_str_hash, g_str_equal);
  e = g_hash_table_lookup (cache, key);
  if (e != NULL) {
    e->handle.refcount++;
    GST_DEBUG ("model %s shared, %d users", canon, e->handle.refcount);
  } else {
    e = entry_load (canon, key, &opt, error);
    if (e != NULL)
      g_hash_table_insert (cache, e->key, e);
  }
  g_mutex_unlock (&cache_lock);

  g_free (key);
  g_free (canon);
  return e ? &e->handle : NULL;
}

GstScoreSdeModel *
gst_scoresde_model_ref (GstScoreSdeModel * model)
{
  g_return_val_if_fail (model != NULL, NULL);

  g_mutex_lock (&cache_lock);
  g_assert (model->refcount > 0);
  model->refcount++;
  g_mutex_unlock (&cache_lock);
  return model;
}

void
gst_scoresde_model_cache_release (GstScoreSdeModel * model)
{
  CacheEntry *e = (CacheEntry *) model;
  gboolean last;

  if (model == NULL)
    return;

  g_mutex_lock (&cache_lock);
  g_assert (model->refcount > 0);
  last = --model->refcount == 0;
  if (last) {
    g_hash_table_remove (cache, e->key);
    if (g_hash_table_size (cache) == 0) {
      g_hash_table_unref (cache);
      cache = NULL;
    }
  }
  g_mutex_unlock (&cache_lock);

  if (last)
    entry_free (e);
}

guint
gst_scoresde_model_cache_size (void)
{
  guint n;

  g_mutex_lock (&cache_lock);
  n = cache ? g_hash_table_size (cache) : 0;
  g_mutex_unlock (&cache_lock);
  return n;
}

gboolean
gst_scoresde_model_check_video (const GstScoreSdeModel * model, GError ** error)
{
  const sde_model *m = model->model;

  if (m->channels != 1 && m->channels != 3 && m->channels != 4) {
    g_set_error (error, GST_LIBRARY_ERROR, GST_LIBRARY_ERROR_INIT,
        "Model '%s' has %d channels of %dx%d; video needs 1, 3 or 4 channels",
        model->path, m->channels, m->width, m->height);
    return FALSE;
  }
  return TRUE;
}

G_DEFINE_BOXED_TYPE (GstScoreSdeModel, gst_scoresde_model,
    gst_scoresde_model_ref, gst_scoresde_model_cache_release);
