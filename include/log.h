/*
 * Levelled diagnostics of the daemon itself (not the audit trail, which is the logger role).
 * One line per call: time, level, role, a stable event name and key=value fields. JSON lines on
 * stdout by default, a human format when stdout is a TTY. The role and request id are per thread.
 */
#ifndef CHANCED_LOG_H
#define CHANCED_LOG_H

#include <stdbool.h>

#include "util.h"

enum log_level {
    LOG_ERROR, /* something failed that an operator should look at */
    LOG_WARN,  /* degraded but coping: a dependency down, a bad peer */
    LOG_INFO,  /* lifecycle: start, listen, stop */
    LOG_DEBUG, /* per request detail; frame bodies, truncated */
};

/* The only mutable global: the current threshold (read and written atomically: SIGHUP changes
 * it while other threads log). Lines above it cost one comparison. Use log_set_level to set it. */
extern int log_level_current;

/* Sets the threshold (a value of enum log_level; others are ignored). Thread-safe. */
void log_set_level(int level);

/* Chooses the output format: "json", "text" or "auto" (text on a TTY). Returns -1 if unknown. */
int log_set_format(const char *format) MUSTCHECK;
/* Parses "error|warn|info|debug"; -1 if unknown. */
int log_parse_level(const char *name) MUSTCHECK;
/* Sets the role name printed on this thread's lines (borrowed; must outlive the thread). */
void log_set_role(const char *role);
/* Sets this thread's current request id (copied; NULL clears). */
void log_set_request_id(const char *rid);
const char *log_request_id(void);
/* Reopens the log file given to log_open_file, if any (SIGHUP). */
void log_reopen(void);
/* Sends output to a file instead of stdout (appending); -1 if it cannot be opened. */
int log_open_file(const char *path) MUSTCHECK;

/* Writes one line: event is a stable snake_case name; fmt renders "key=value key2=value2". */
void log_write(int level, const char *event, const char *fmt, ...) PRINTF_LIKE(3, 4);

#define log_at(lvl, ...)                                                                           \
    do {                                                                                           \
        if ((lvl) <= __atomic_load_n(&log_level_current, __ATOMIC_RELAXED)) {                      \
            log_write((lvl), __VA_ARGS__);                                                         \
        }                                                                                          \
    } while (0)
#define log_error(...) log_at(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_at(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_at(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_at(LOG_DEBUG, __VA_ARGS__)

#endif
