/* systemd's notify protocol: one datagram per message to $NOTIFY_SOCKET. No-op when unset. */
#ifndef CHANCED_NOTIFY_H
#define CHANCED_NOTIFY_H

#include <stdint.h>

/* Sends msg (e.g. "READY=1", "STATUS=serving") if NOTIFY_SOCKET is set; returns 0 or -1. */
int notify_send(const char *msg);
/* The watchdog interval from WATCHDOG_USEC (if meant for this pid), in ms; 0 if none. */
int64_t notify_watchdog_ms(void);

#endif
