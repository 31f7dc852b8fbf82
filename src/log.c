/* Diagnostics: one line per event, JSON or human, serialised across threads by stdio's lock. */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int log_level_current = LOG_INFO;

static int log_json = -1; /* -1 until decided: auto */
static FILE *log_out;     /* NULL means stdout */
static char *log_path;    /* file to reopen on SIGHUP, or NULL */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static __thread const char *thread_role = "main";
static __thread char thread_rid[64];

static const char *level_names[] = {"error", "warn", "info", "debug"};

void
log_set_level(int level)
{
    if (level >= LOG_ERROR && level <= LOG_DEBUG) {
        __atomic_store_n(&log_level_current, level, __ATOMIC_RELAXED);
    }
}

int
log_set_format(const char *format)
{
    if (strcmp(format, "json") == 0) {
        log_json = 1;
    } else if (strcmp(format, "text") == 0) {
        log_json = 0;
    } else if (strcmp(format, "auto") == 0) {
        log_json = -1;
    } else {
        return -1;
    }
    return 0;
}

int
log_parse_level(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(level_names); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            return (int)i;
        }
    }
    return -1;
}

void
log_set_role(const char *role)
{
    thread_role = role;
}

void
log_set_request_id(const char *rid)
{
    if (rid == NULL) {
        thread_rid[0] = '\0';
        return;
    }
    snprintf(thread_rid, sizeof(thread_rid), "%s", rid);
}

const char *
log_request_id(void)
{
    return thread_rid[0] ? thread_rid : NULL;
}

int
log_open_file(const char *path)
{
    FILE *f = fopen(path, "a");
    if (f == NULL) {
        return -1;
    }
    setvbuf(f, NULL, _IOLBF, 0);
    pthread_mutex_lock(&log_lock);
    if (log_out != NULL) {
        fclose(log_out);
    }
    log_out = f;
    free(log_path);
    log_path = xstrdup(path);
    pthread_mutex_unlock(&log_lock);
    return 0;
}

void
log_reopen(void)
{
    if (log_path == NULL) {
        return;
    }
    char *path = xstrdup(log_path);
    if (log_open_file(path) != 0) {
        log_warn("log_reopen_failed", "path=%s", path);
    }
    free(path);
}

static void
json_escape(FILE *f, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            fprintf(f, "\\%c", *p);
        } else if (*p < 0x20) {
            fprintf(f, "\\u%04x", *p);
        } else {
            fputc(*p, f);
        }
    }
}

void
log_write(int level, const char *event, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    char ts[40];
    time_format_iso(time_wall_ms(), ts, sizeof(ts));
    pthread_mutex_lock(&log_lock);
    FILE *f = log_out ? log_out : stdout;
    if (log_json < 0) {
        log_json = isatty(fileno(f)) ? 0 : 1;
    }
    if (log_json) {
        fprintf(f, "{\"ts\":\"%s\",\"level\":\"%s\",\"role\":\"%s\",\"event\":\"", ts,
                level_names[level], thread_role);
        json_escape(f, event);
        fputc('"', f);
        if (thread_rid[0]) {
            fputs(",\"rid\":\"", f);
            json_escape(f, thread_rid);
            fputc('"', f);
        }
        if (msg[0]) {
            fputs(",\"fields\":\"", f);
            json_escape(f, msg);
            fputc('"', f);
        }
        fputs("}\n", f);
    } else {
        fprintf(f, "%s %-5s %-7s %s%s%s%s%s\n", ts, level_names[level], thread_role, event,
                thread_rid[0] ? " rid=" : "", thread_rid, msg[0] ? " " : "", msg);
    }
    fflush(f);
    pthread_mutex_unlock(&log_lock);
}
