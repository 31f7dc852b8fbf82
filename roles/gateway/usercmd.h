/* `chanced admin create-user`: creates the first admin (or any user) from the command line. */
#ifndef CHANCED_GATEWAY_USERCMD_H
#define CHANCED_GATEWAY_USERCMD_H

struct gateway_conf;

/* argv[0] is "admin". Returns an exit code: 0, 1 failure, 64 usage, 69 database unavailable. */
int usercmd_run(const struct gateway_conf *conf, int argc, char **argv);

#endif
