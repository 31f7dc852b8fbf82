/*
 * TLS contexts (OpenSSL) for every encrypted link of the daemon: the NestJS TCP links between
 * roles (mutual TLS), Redis (rediss://) and the other stores. TLS 1.2 or later, peers verified
 * against a CA; a client also checks the server's name (DNS name or IP address) against its
 * certificate.
 *
 * Certificates, keys and CAs are given as file paths; a key may also be given as the PEM text
 * itself (what the `_file` and systemd-credential forms of a secret key deliver).
 */
#ifndef CHANCED_TLS_H
#define CHANCED_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

#include "util.h"

struct tls_files {
    const char *ca;   /* CA file peers must chain to; "" or NULL: the system store (clients) */
    const char *cert; /* our certificate chain file; "" or NULL: none */
    const char *key;  /* its private key: a file path or PEM text; required with cert */
};

/*
 * A server context: presents cert/key; with a CA, every client must present a certificate
 * signed by it (no certificate, no handshake). NULL with err (naming the file) on failure.
 * Free with SSL_CTX_free.
 */
SSL_CTX *tls_server_ctx(const struct tls_files *f, char *err, size_t errlen);
/* A client context: verifies servers against the CA (or the system store), presents
 * cert/key when given. NULL with err on failure. */
SSL_CTX *tls_client_ctx(const struct tls_files *f, char *err, size_t errlen);
/*
 * Loads our certificate chain and its key (a path or PEM text, of any key type) into ctx,
 * checking that they match; nothing when neither is set. -1 with err (naming the file) on
 * failure. For contexts made elsewhere (librabbitmq's).
 */
int tls_ctx_use_identity(SSL_CTX *ctx, const struct tls_files *f, char *err, size_t errlen);
/* A new client SSL for host: SNI (for names) and name/IP verification. NULL on failure. */
SSL *tls_client_ssl(SSL_CTX *ctx, const char *host);
/* True if s is an IPv4 or IPv6 literal. */
bool tls_is_ip(const char *s);
/* Writes a short description of the last OpenSSL error (and clears the queue) into err. */
void tls_last_error(char *err, size_t errlen);
/* The verified peer certificate's subject common name into out ("" if none). */
void tls_peer_cn(SSL *ssl, char *out, size_t size);

#endif
