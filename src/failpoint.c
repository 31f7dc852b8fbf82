/* Crash points for the fault-injection tests: see failpoint.h. */
#include "failpoint.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char armed[128]; /* the name, "" when unarmed */
static long at = 1;     /* the hit that crashes */
static long hits;       /* hits so far (atomic) */
static int state;       /* 0: not read yet, 1: unarmed, 2: armed (atomic) */

static void
arm(void)
{
    const char *v = getenv("CHANCED_FAILPOINT");
    int s = 1;
    if (v && *v) {
        snprintf(armed, sizeof(armed), "%s", v);
        char *n = strchr(armed, '@');
        if (n) {
            *n = '\0';
            at = strtol(n + 1, NULL, 10);
            at = at > 0 ? at : 1;
        }
        s = 2;
    }
    __atomic_store_n(&state, s, __ATOMIC_RELEASE);
}

void
failpoint(const char *name)
{
    int s = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
    if (s == 0) {
        pthread_once(&once, arm);
        s = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
    }
    if (s != 2 || strcmp(armed, name) != 0) {
        return;
    }
    if (__atomic_add_fetch(&hits, 1, __ATOMIC_ACQ_REL) == at) {
        log_warn("failpoint_hit", "name=%s hit=%ld action=exit", name, at);
        _exit(137); /* no atexit handlers, no flushing: as close to a SIGKILL as a process gets */
    }
}
