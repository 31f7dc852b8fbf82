/*
 * Prometheus metrics: a process-wide registry of counters, gauges and histograms, each series
 * named by metric name + label set. Thread-safe (roles on several threads, HTTP workers).
 * Rendering follows the text exposition format 0.0.4.
 *
 * Labels are passed pre-rendered, e.g. "cmd=\"chance.claim\",outcome=\"ok\"" (or "" for none);
 * use metrics_label_escape for values that come from outside.
 */
#ifndef CHANCED_METRICS_H
#define CHANCED_METRICS_H

#include <stddef.h>

#include "util.h"

struct metrics;

enum metrics_type {
    METRICS_COUNTER,   /* only goes up */
    METRICS_GAUGE,     /* set to a value */
    METRICS_HISTOGRAM, /* observations in seconds, default latency buckets */
};

/* Called just before rendering, so owners can refresh gauges. Runs on the rendering thread. */
typedef void (*metrics_collect_fn)(struct metrics *m, void *arg);

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);

/* Declares a metric's type and help text (once; later calls are ignored). */
void metrics_describe(struct metrics *m, const char *name, int type, const char *help);
void metrics_add(struct metrics *m, const char *name, const char *labels, double v);
void metrics_set(struct metrics *m, const char *name, const char *labels, double v);
void metrics_observe(struct metrics *m, const char *name, const char *labels, double seconds);
/* Drops every series of a gauge (before re-setting them, e.g. per-category gauges). */
void metrics_clear(struct metrics *m, const char *name);
/* Registers a collect hook (at most a few; borrowed arg must outlive the registration). */
void metrics_on_collect(struct metrics *m, metrics_collect_fn fn, void *arg);
void metrics_off_collect(struct metrics *m, metrics_collect_fn fn, void *arg);

/* Renders every series; returns a new string (free with free()). */
char *metrics_render(struct metrics *m);
/* Escapes a label value (backslash, quote, newline) into out (size bytes). */
void metrics_label_escape(const char *value, char *out, size_t size);

#endif
