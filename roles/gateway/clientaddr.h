/*
 * Client addresses: IP literals from sockets and from X-Forwarded-For, in one canonical text form
 * (inet_ntop's; an IPv4-mapped IPv6 address becomes the IPv4 address), and the bucket key that
 * rate limits and connection caps count by: the IPv4 address, or the IPv6 /64 (one subscriber
 * usually holds a whole /64, so counting single IPv6 addresses would not limit anybody).
 * Pure functions: no I/O, no allocation.
 */
#ifndef CHANCED_GATEWAY_CLIENTADDR_H
#define CHANCED_GATEWAY_CLIENTADDR_H

#include <stddef.h>
#include <sys/socket.h>

/* Room for any canonical address or bucket key, with its NUL ("ffff:...:ffff/64"). */
#define CLIENTADDR_MAX 64

/* Formats a socket address (AF_INET or AF_INET6); 0, or -1 for another family. */
int clientaddr_from_sockaddr(const struct sockaddr *sa, char *out, size_t size);
/* Canonical form of the IP literal s[0..n) (surrounding blanks ignored, "[v6]" accepted, no
 * port); 0, or -1 if it is not one IPv4 or IPv6 address. */
int clientaddr_parse(const char *s, size_t n, char *out, size_t size);
/*
 * The client address a trusted proxy recorded: the right-most entry across all X-Forwarded-For
 * lines (given in the order received). Entries to its left are whatever the client sent, so
 * they are never used: if the right-most entry is not a valid address, there is no answer.
 * 0 with out set, or -1.
 */
int clientaddr_forwarded(const char *const *lines, size_t nlines, char *out, size_t size);
/* The bucket key of a canonical address: IPv4 as is, IPv6 as its /64 ("2001:db8:1:2::/64");
 * 0, or -1 if addr is not an address. */
int clientaddr_bucket(const char *addr, char *out, size_t size);

#endif
