/*
 * Crash points for the fault-injection tests (test/proof): CHANCED_FAILPOINT=NAME or NAME@N makes
 * the process _exit(137), as a SIGKILL would leave it, when it reaches failpoint(NAME) for the
 * Nth time (default the first). Always compiled in: unarmed, a call is one atomic load.
 */
#ifndef CHANCED_FAILPOINT_H
#define CHANCED_FAILPOINT_H

void failpoint(const char *name);

#endif
