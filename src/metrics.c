/* A small thread-safe Prometheus registry: series in a hash table, rendered grouped by name. */
#include "metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUCKETS 12
#define TABLE 256
#define MAX_HOOKS 8

static const double bucket_bounds[BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                              0.05,   0.1,   0.25,   0.5,   1.0,  5.0};

struct series {
    char *name;                          /* metric name */
    char *labels;                        /* rendered label set, "" for none */
    double value;                        /* counter/gauge value, histogram sum */
    unsigned long long count;            /* histogram count */
    unsigned long long buckets[BUCKETS]; /* cumulative at render time, per-bucket here */
    struct series *next;                 /* hash chain */
};

struct family {
    char *name;          /* metric name */
    int type;            /* METRICS_* */
    char *help;          /* HELP text */
    struct family *next; /* declaration order list */
};

struct hook {
    metrics_collect_fn fn;
    void *arg;
};

struct metrics {
    pthread_mutex_t lock;
    struct series *table[TABLE];
    struct family *families, *families_tail;
    struct hook hooks[MAX_HOOKS];
    pthread_mutex_t hooks_lock; /* hooks run outside `lock`, they call metrics_set */
};

static unsigned
hash(const char *name, const char *labels)
{
    unsigned h = 2166136261u;
    for (const char *p = name; *p; p++) {
        h = (h ^ (unsigned char)*p) * 16777619u;
    }
    for (const char *p = labels; *p; p++) {
        h = (h ^ (unsigned char)*p) * 16777619u;
    }
    return h % TABLE;
}

struct metrics *
metrics_new(void)
{
    struct metrics *m = xcalloc(1, sizeof(*m));
    pthread_mutex_init(&m->lock, NULL);
    pthread_mutex_init(&m->hooks_lock, NULL);
    return m;
}

void
metrics_free(struct metrics *m)
{
    if (m == NULL) {
        return;
    }
    for (size_t i = 0; i < TABLE; i++) {
        for (struct series *s = m->table[i], *n; s; s = n) {
            n = s->next;
            free(s->name);
            free(s->labels);
            free(s);
        }
    }
    for (struct family *f = m->families, *n; f; f = n) {
        n = f->next;
        free(f->name);
        free(f->help);
        free(f);
    }
    pthread_mutex_destroy(&m->lock);
    pthread_mutex_destroy(&m->hooks_lock);
    free(m);
}

static struct family *
find_family(struct metrics *m, const char *name)
{
    for (struct family *f = m->families; f; f = f->next) {
        if (strcmp(f->name, name) == 0) {
            return f;
        }
    }
    return NULL;
}

void
metrics_describe(struct metrics *m, const char *name, int type, const char *help)
{
    pthread_mutex_lock(&m->lock);
    if (find_family(m, name) == NULL) {
        struct family *f = xcalloc(1, sizeof(*f));
        f->name = xstrdup(name);
        f->type = type;
        f->help = xstrdup(help);
        if (m->families_tail) {
            m->families_tail->next = f;
        } else {
            m->families = f;
        }
        m->families_tail = f;
    }
    pthread_mutex_unlock(&m->lock);
}

/* Finds or creates a series; the caller holds the lock. */
static struct series *
get_series(struct metrics *m, const char *name, const char *labels)
{
    unsigned h = hash(name, labels);
    for (struct series *s = m->table[h]; s; s = s->next) {
        if (strcmp(s->name, name) == 0 && strcmp(s->labels, labels) == 0) {
            return s;
        }
    }
    struct series *s = xcalloc(1, sizeof(*s));
    s->name = xstrdup(name);
    s->labels = xstrdup(labels);
    s->next = m->table[h];
    m->table[h] = s;
    return s;
}

void
metrics_add(struct metrics *m, const char *name, const char *labels, double v)
{
    pthread_mutex_lock(&m->lock);
    get_series(m, name, labels)->value += v;
    pthread_mutex_unlock(&m->lock);
}

void
metrics_set(struct metrics *m, const char *name, const char *labels, double v)
{
    pthread_mutex_lock(&m->lock);
    get_series(m, name, labels)->value = v;
    pthread_mutex_unlock(&m->lock);
}

void
metrics_observe(struct metrics *m, const char *name, const char *labels, double seconds)
{
    pthread_mutex_lock(&m->lock);
    struct series *s = get_series(m, name, labels);
    s->value += seconds;
    s->count++;
    for (int i = 0; i < BUCKETS; i++) {
        if (seconds <= bucket_bounds[i]) {
            s->buckets[i]++;
            break;
        }
    }
    pthread_mutex_unlock(&m->lock);
}

void
metrics_clear(struct metrics *m, const char *name)
{
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < TABLE; i++) {
        struct series **pp = &m->table[i];
        while (*pp) {
            struct series *s = *pp;
            if (strcmp(s->name, name) == 0) {
                *pp = s->next;
                free(s->name);
                free(s->labels);
                free(s);
            } else {
                pp = &s->next;
            }
        }
    }
    pthread_mutex_unlock(&m->lock);
}

void
metrics_on_collect(struct metrics *m, metrics_collect_fn fn, void *arg)
{
    pthread_mutex_lock(&m->hooks_lock);
    for (int i = 0; i < MAX_HOOKS; i++) {
        if (m->hooks[i].fn == NULL) {
            m->hooks[i].fn = fn;
            m->hooks[i].arg = arg;
            break;
        }
    }
    pthread_mutex_unlock(&m->hooks_lock);
}

void
metrics_off_collect(struct metrics *m, metrics_collect_fn fn, void *arg)
{
    pthread_mutex_lock(&m->hooks_lock);
    for (int i = 0; i < MAX_HOOKS; i++) {
        if (m->hooks[i].fn == fn && m->hooks[i].arg == arg) {
            m->hooks[i].fn = NULL;
        }
    }
    pthread_mutex_unlock(&m->hooks_lock);
}

static void
render_value(struct sbuf *b, const char *name, const char *suffix, const char *labels,
             const char *extra, double v)
{
    bool any = labels[0] || extra[0];
    sbuf_appendf(b, "%s%s%s%s%s%s%s %.17g\n", name, suffix, any ? "{" : "", labels,
                 labels[0] && extra[0] ? "," : "", extra, any ? "}" : "", v);
}

static void
render_series(struct sbuf *b, const struct series *s, int type)
{
    if (type != METRICS_HISTOGRAM) {
        render_value(b, s->name, "", s->labels, "", s->value);
        return;
    }
    unsigned long long cum = 0;
    char le[32];
    for (int i = 0; i < BUCKETS; i++) {
        cum += s->buckets[i];
        snprintf(le, sizeof(le), "le=\"%g\"", bucket_bounds[i]);
        render_value(b, s->name, "_bucket", s->labels, le, (double)cum);
    }
    render_value(b, s->name, "_bucket", s->labels, "le=\"+Inf\"", (double)s->count);
    render_value(b, s->name, "_sum", s->labels, "", s->value);
    render_value(b, s->name, "_count", s->labels, "", (double)s->count);
}

char *
metrics_render(struct metrics *m)
{
    pthread_mutex_lock(&m->hooks_lock);
    for (int i = 0; i < MAX_HOOKS; i++) {
        if (m->hooks[i].fn) {
            m->hooks[i].fn(m, m->hooks[i].arg);
        }
    }
    pthread_mutex_unlock(&m->hooks_lock);

    static const char *types[] = {"counter", "gauge", "histogram"};
    struct sbuf b = {0};
    pthread_mutex_lock(&m->lock);
    for (struct family *f = m->families; f; f = f->next) {
        sbuf_appendf(&b, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, types[f->type]);
        for (size_t i = 0; i < TABLE; i++) {
            for (struct series *s = m->table[i]; s; s = s->next) {
                if (strcmp(s->name, f->name) == 0) {
                    render_series(&b, s, f->type);
                }
            }
        }
    }
    pthread_mutex_unlock(&m->lock);
    return sbuf_steal(&b);
}

void
metrics_label_escape(const char *value, char *out, size_t size)
{
    size_t o = 0;
    for (const char *p = value; *p && o + 3 < size; p++) {
        if (*p == '\\' || *p == '"') {
            out[o++] = '\\';
            out[o++] = *p;
        } else if (*p == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}
